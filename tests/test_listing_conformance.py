"""The emulator's recordings listing answers as Siro's published OpenAPI document says.

``specs/recordings-read-openapi.json`` is a verbatim copy of Siro's read operations; only
``GET /v1/core/recordings`` is emulated, so only it is checked. schemathesis generates query
strings from the spec (every parameter, valid and not) and checks each answer's status,
content type and body schema.

One check is left out: "schema-valid request rejected". The spec types every parameter as a
bare string (``limit``, the dates, ``cursor``), so ``limit=abc`` is schema-valid, yet the
documented answer to it is ``400 Bad Request - Invalid query parameters``. The generated
queries carry the emulator's token (else nearly all of them would stop at the 401), so the
"invalid authentication accepted" check is left out there too; bad and missing tokens are
checked one by one below instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from conftest import TOKEN
from hypothesis import HealthCheck, settings
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from siro_data.emulator import Emulator, api, sample_recordings

SPEC = Path(__file__).parent / "specs" / "recordings-read-openapi.json"
TOKEN_HEADER = "x-siro-auth-token"
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

schema = schemathesis.openapi.from_path(SPEC).include(path="/v1/core/recordings", method="GET")
operation = schema["/v1/core/recordings"]["GET"]


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(recordings=sample_recordings(n=6), token=TOKEN) as emulator:
        yield emulator


def call(emu: Emulator, token: str | None = TOKEN, **query: str):
    case = operation.Case(query=query)
    return case.call_and_validate(
        base_url=emu.api_url,
        headers={} if token is None else {TOKEN_HEADER: token},
        excluded_checks=[positive_data_acceptance],
        timeout=5,
    )


@schema.parametrize()
@EXAMPLES
def test_generated_queries_get_documented_answers(case, emu, seen):
    case.headers = {**(case.headers or {}), TOKEN_HEADER: TOKEN}  # its own may be any string
    response = case.call_and_validate(
        base_url=emu.api_url, excluded_checks=[positive_data_acceptance, ignored_auth], timeout=5
    )
    seen.add(response.status_code)


@pytest.fixture(scope="module")
def seen() -> Iterator[set[int]]:
    """Statuses the generated queries got: valid and invalid ones both, not only 401s.

    (405 answers the other methods schemathesis tries, with ``Allow: GET``.)
    """
    statuses: set[int] = set()
    yield statuses
    assert {200, 400} <= statuses <= {200, 400, 403, 405}, statuses


def test_every_page_is_documented(emu):
    cursor, ids = None, []
    while True:
        response = call(emu, limit="4", **({"cursor": cursor} if cursor else {}))
        body = response.json()
        ids += [item["id"] for item in body["data"]]
        cursor = body["cursor"]
        if cursor is None:
            break
    assert sorted(ids) == sorted(emu.recordings)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"limit": "1000"}, 400),
        ({"dateCreated:gt": "not a date"}, 400),
        ({"cursor": "???"}, 400),
        ({"organizationId": "org_someone_else"}, 403),
    ],
)
def test_documented_errors_are_plain_text(emu, query, status):
    response = call(emu, **query)
    assert response.status_code == status
    assert response.headers["content-type"][0].startswith("text/plain")


@pytest.mark.parametrize("token", [None, "", "tok-WRONG-0000000000"])
def test_bad_tokens_get_a_documented_401(emu, token):
    assert call(emu, token=token).status_code == 401


def test_the_check_is_not_blind(emu, monkeypatch):
    """A page without its required ``cursor`` fails validation: the checks do read bodies."""
    monkeypatch.setattr(api, "list_page", lambda recordings, query: {"data": []})
    with pytest.raises(FailureGroup):
        call(emu)
