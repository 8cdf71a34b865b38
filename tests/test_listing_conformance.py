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
from hypothesis import HealthCheck, settings
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance
from support import TOKEN

from siro_data.emulator import Emulator, api
from siro_data.sessions import TOKEN_HEADER

SPEC = Path(__file__).parent / "specs" / "recordings-read-openapi.json"
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

schema = schemathesis.openapi.from_path(SPEC).include(path="/v1/core/recordings", method="GET")
operation = schema["/v1/core/recordings"]["GET"]


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
def test_generated_queries_get_documented_answers(case, emulator, seen):
    case.headers = {**(case.headers or {}), TOKEN_HEADER: TOKEN}  # its own may be any string
    response = case.call_and_validate(
        base_url=emulator.api_url,
        excluded_checks=[positive_data_acceptance, ignored_auth],
        timeout=5,
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


def test_every_page_is_documented(emulator):
    cursor, ids = None, []
    while True:
        response = call(emulator, limit="4", **({"cursor": cursor} if cursor else {}))
        body = response.json()
        ids += [item["id"] for item in body["data"]]
        cursor = body["cursor"]
        if cursor is None:
            break
    assert sorted(ids) == sorted(emulator.recordings)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"limit": "1000"}, 400),
        ({"dateCreated:gt": "not a date"}, 400),
        ({"cursor": "???"}, 400),
        ({"organizationId": "org_someone_else"}, 403),
    ],
)
def test_documented_errors_are_plain_text(emulator, query, status):
    response = call(emulator, **query)
    assert response.status_code == status
    assert response.headers["content-type"][0].startswith("text/plain")


@pytest.mark.parametrize("token", [None, "", "tok-WRONG-0000000000"])
def test_bad_tokens_get_a_documented_401(emulator, token):
    assert call(emulator, token=token).status_code == 401


def test_the_check_is_not_blind(emulator, monkeypatch):
    """A page without its required ``cursor`` fails validation: the checks do read bodies."""
    monkeypatch.setattr(api, "list_page", lambda recordings, query: {"data": []})
    with pytest.raises(FailureGroup):
        call(emulator)
