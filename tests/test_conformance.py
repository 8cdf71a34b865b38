"""The emulator answers as Siro's published OpenAPI document says, checked by schemathesis.

What the other tests prove against the emulator holds for Siro only as far as the emulator
is faithful. ``specs/signed-url-openapi.yaml`` is a verbatim copy of the endpoint's documented
spec; schemathesis generates requests from it (ids of every shape, undeclared methods, a
missing token) and checks each answer's status code, content type and body schema, with the
emulator's token and with bad ones. Every answer the spec documents is also provoked on
purpose (a known recording, each error status, ``data.error``) and checked the same way.

Not in the spec, hence not checked here: 429 (Siro's rate limit, known from its API notes),
502/503/504 from a gateway, the 307 redirect switch and the malformed 200s (``html``,
``not_json``): those faults imitate what a proxy or a broken deploy may answer, on purpose.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from support import TOKEN

from siro_data.emulator import Emulator, Recording, sample_recordings
from siro_data.sessions import TOKEN_HEADER

SPEC = Path(__file__).parent / "specs" / "signed-url-openapi.yaml"
PATH = "/v1/core/recordings/{id}/signedUrl"
BAD_TOKENS = {
    "wrong": "tok-WRONG-0000000000",
    "empty": "",
    "other": "tok-OTHER-9d8e7f6a5b",
    "near": TOKEN[:-1],
}
#: Enough to cover every scenario schemathesis has for one operation, in a few seconds.
EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

schema = schemathesis.openapi.from_path(SPEC)
operation = schema[PATH]["POST"]


@pytest.fixture
def recordings() -> dict[str, Recording]:
    return sample_recordings(n=3)


@schema.parametrize()
@EXAMPLES
def test_generated_requests_with_the_token_get_documented_answers(case, emulator):
    case.call_and_validate(base_url=emulator.api_url, headers={TOKEN_HEADER: TOKEN}, timeout=5)


@schema.parametrize()
@EXAMPLES
@pytest.mark.parametrize("bad", sorted(BAD_TOKENS))
def test_generated_requests_with_a_bad_token_get_documented_answers(case, emulator, bad):
    response = case.call_and_validate(
        base_url=emulator.api_url, headers={TOKEN_HEADER: BAD_TOKENS[bad]}, timeout=5
    )
    if response.request.method == "POST":
        assert response.status_code == 401


def call(emu: Emulator, rec_id: str, token: str = TOKEN):
    """One request for ``rec_id``, validated against the spec; the response.

    Every check runs but ``not_a_server_error``: a 500 provoked on purpose is documented.
    """
    case = operation.Case(path_parameters={"id": rec_id})
    return case.call_and_validate(
        base_url=emu.api_url,
        headers={TOKEN_HEADER: token},
        excluded_checks=[not_a_server_error],
        timeout=5,
    )


@pytest.mark.parametrize("unit", ["ms", "s"])
def test_known_recordings_get_a_documented_signed_url(emulator, unit):
    emulator.faults.expiration_unit = unit
    for rec_id in emulator.recordings:
        response = call(emulator, rec_id)
        assert response.status_code == 200
        data = response.json()["data"]
        assert data["error"] is False
        assert data["url"].startswith(emulator.storage_url)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 500])
def test_each_documented_error_status_has_its_documented_body(emulator, status):
    rec_id = next(iter(emulator.recordings))
    emulator.faults.api_status[rec_id] = status
    assert call(emulator, rec_id).status_code == status
    emulator.faults.api_status.clear()
    emulator.faults.transient[rec_id] = [status]
    assert call(emulator, rec_id).status_code == status
    assert call(emulator, rec_id).status_code == 200


@pytest.mark.parametrize("token", sorted(BAD_TOKENS))
def test_known_recordings_with_a_bad_token_get_a_documented_401(emulator, token):
    rec_id = next(iter(emulator.recordings))
    assert call(emulator, rec_id, BAD_TOKENS[token]).status_code == 401


def test_a_missing_token_gets_a_documented_401(emulator):
    rec_id = next(iter(emulator.recordings))
    case = operation.Case(path_parameters={"id": rec_id})
    response = case.call_and_validate(base_url=emulator.api_url, timeout=5)
    assert response.status_code == 401


def test_an_empty_id_gets_the_documented_zod_error(emulator):
    # schemathesis would drop the empty segment from the URL: sent as is with requests.
    url = f"{emulator.api_url}/v1/core/recordings//signedUrl"
    response = requests.post(url, headers={TOKEN_HEADER: TOKEN}, timeout=5)
    operation.Case(path_parameters={"id": ""}).validate_response(response)
    assert response.status_code == 422
    assert response.json()["name"] == "ZodError"


def test_error_payloads_and_a_200_without_url_are_documented(emulator):
    first, second = list(emulator.recordings)[:2]
    emulator.faults.api_error_payload.add(first)
    emulator.faults.api_malformed[second] = "no_url"  # the spec requires only data.error
    payload = call(emulator, first).json()["data"]
    assert payload["error"] is True and payload["errorMessage"]
    assert call(emulator, second).json()["data"] == {"error": False}


@pytest.mark.parametrize("kind", ["html", "not_json"])
def test_the_check_is_not_blind_a_malformed_200_breaks_the_spec(emulator, kind):
    """The deliberately broken answers fail validation: the checks above do look at bodies."""
    rec_id = next(iter(emulator.recordings))
    emulator.faults.api_malformed[rec_id] = kind
    with pytest.raises(FailureGroup):
        call(emulator, rec_id)
