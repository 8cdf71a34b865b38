"""The emulator's signedUrl route over real sockets: authentication, errors, API faults."""

from __future__ import annotations

import time

import pytest
import requests
from support import TOKEN

from siro_data.emulator import Emulator
from siro_data.sessions import TOKEN_HEADER

from .helpers import endpoint, sign


def test_missing_or_wrong_token_is_401(emulator: Emulator, rid: str) -> None:
    for token in (None, "wrong", ""):
        response = sign(emulator, rid, token=token)
        assert response.status_code == 401
        assert isinstance(response.json()["error"], str)


def test_tokens_can_be_rotated_at_run_time(emulator: Emulator, rid: str) -> None:
    emulator.tokens.add("fresh")
    emulator.tokens.discard(TOKEN)
    assert sign(emulator, rid).status_code == 401
    assert sign(emulator, rid, token="fresh").status_code == 200


def test_unknown_id_unknown_path_wrong_method_and_empty_id(emulator: Emulator) -> None:
    response = sign(emulator, "no-such-recording")
    assert (response.status_code, response.json()) == (404, {"error": "Recording not found"})
    response = requests.post(f"{emulator.api_url}/v1/core/nothing", timeout=5)
    assert response.status_code == 404 and "error" in response.json()
    response = requests.get(endpoint(emulator, "x"), headers={TOKEN_HEADER: TOKEN}, timeout=5)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    response = requests.post(
        f"{emulator.api_url}/v1/core/recordings//signedUrl",
        headers={TOKEN_HEADER: TOKEN},
        timeout=5,
    )
    assert response.status_code == 422 and response.json()["name"] == "ZodError"


def test_request_body_is_ignored_and_connection_reused(emulator: Emulator, rid: str) -> None:
    with requests.Session() as session:
        for body in (b"", b'{"ignored": true}', b"x" * 10_000):
            response = session.post(
                endpoint(emulator, rid), data=body, headers={TOKEN_HEADER: TOKEN}, timeout=5
            )
            assert response.status_code == 200
    assert emulator.stats.connections_opened["api"] == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 502, 503, 504])
def test_api_status_fault_answers_the_documented_error_body(
    emulator: Emulator, rid: str, status: int
) -> None:
    emulator.faults.api_status[rid] = status
    response = sign(emulator, rid)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert list(response.json()) == ["error"] and isinstance(response.json()["error"], str)


def test_api_status_422_is_a_zod_error(emulator: Emulator, rid: str) -> None:
    emulator.faults.api_status[rid] = 422
    response = sign(emulator, rid)
    assert response.status_code == 422
    assert response.json() == {
        "name": "ZodError",
        "issues": [
            {
                "code": "invalid_type",
                "expected": "string",
                "received": "undefined",
                "path": ["id"],
                "message": "Required",
            }
        ],
    }


def test_error_payload_in_a_200(emulator: Emulator, rid: str) -> None:
    emulator.faults.api_error_payload.add(rid)
    response = sign(emulator, rid)
    assert response.status_code == 200
    assert response.json() == {
        "data": {"error": True, "errorMessage": "Recording audio is not available yet"}
    }


def test_malformed_200s(emulator: Emulator, rid: str) -> None:
    emulator.faults.api_malformed[rid] = "html"
    response = sign(emulator, rid)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")
    emulator.faults.api_malformed[rid] = "not_json"
    response = sign(emulator, rid)
    assert response.headers["Content-Type"] == "application/json"
    with pytest.raises(requests.JSONDecodeError):
        response.json()
    emulator.faults.api_malformed[rid] = "no_url"
    assert sign(emulator, rid).json() == {"data": {"error": False}}


def test_transient_queue_then_success(emulator: Emulator, rid: str) -> None:
    emulator.faults.transient[rid] = [503, 502]
    assert [sign(emulator, rid).status_code for _ in range(3)] == [503, 502, 200]
    assert rid not in emulator.faults.transient
    assert emulator.stats.api_calls[rid] == 3


def test_rate_limit_429_with_and_without_retry_after(emulator: Emulator, rid: str) -> None:
    emulator.faults.rate_limit = 3
    emulator.faults.rate_window = 0.5
    assert [sign(emulator, rid).status_code for _ in range(4)] == [200, 200, 200, 429]
    limited = sign(emulator, rid)
    assert limited.json() == {"error": "Too Many Requests"}
    assert "Retry-After" not in limited.headers
    emulator.faults.retry_after = "7"
    assert sign(emulator, rid).headers["Retry-After"] == "7"
    assert emulator.stats.rate_limited == 3
    emulator.tokens.add("other")  # the limit is per token
    assert sign(emulator, rid, token="other").status_code == 200
    time.sleep(0.55)  # the window slides: the accepted requests have left it
    assert sign(emulator, rid).status_code == 200


def test_redirect_307_would_carry_the_token_to_another_host(emulator: Emulator, rid: str) -> None:
    target = f"{emulator.storage_url}/elsewhere"
    emulator.faults.redirect[rid] = target
    response = sign(emulator, rid, allow_redirects=False)
    assert response.status_code == 307 and response.headers["Location"] == target
    # requests follows a 307 with the custom header: the storage records the leak.
    followed = sign(emulator, rid)
    assert followed.status_code == 405
    assert emulator.stats.storage_headers[-1][TOKEN_HEADER] == TOKEN


def test_api_latency_and_request_times(emulator: Emulator, rid: str) -> None:
    emulator.faults.api_latency = 0.2
    started = time.monotonic()
    sign(emulator, rid)
    assert time.monotonic() - started >= 0.2
    emulator.faults.api_latency = 0.0
    sign(emulator, rid)
    times = emulator.stats.api_request_times
    assert len(times) == 2 and started <= times[0] <= times[1]
