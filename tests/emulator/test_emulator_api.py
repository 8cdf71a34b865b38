"""The emulator's signedUrl route over real sockets: authentication, errors, API faults."""

from __future__ import annotations

import time

import pytest
import requests

from siro_data.emulator import Emulator

from .helpers import TOKEN, TOKEN_HEADER, endpoint, sign


def test_missing_or_wrong_token_is_401(emu: Emulator, rid: str) -> None:
    for token in (None, "wrong", ""):
        response = sign(emu, rid, token=token)
        assert response.status_code == 401
        assert isinstance(response.json()["error"], str)


def test_tokens_can_be_rotated_at_run_time(emu: Emulator, rid: str) -> None:
    emu.tokens.add("fresh")
    emu.tokens.discard(TOKEN)
    assert sign(emu, rid).status_code == 401
    assert sign(emu, rid, token="fresh").status_code == 200


def test_unknown_id_unknown_path_wrong_method_and_empty_id(emu: Emulator) -> None:
    response = sign(emu, "no-such-recording")
    assert (response.status_code, response.json()) == (404, {"error": "Recording not found"})
    response = requests.post(f"{emu.api_url}/v1/core/nothing", timeout=5)
    assert response.status_code == 404 and "error" in response.json()
    response = requests.get(endpoint(emu, "x"), headers={TOKEN_HEADER: TOKEN}, timeout=5)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    response = requests.post(
        f"{emu.api_url}/v1/core/recordings//signedUrl", headers={TOKEN_HEADER: TOKEN}, timeout=5
    )
    assert response.status_code == 422 and response.json()["name"] == "ZodError"


def test_request_body_is_ignored_and_connection_reused(emu: Emulator, rid: str) -> None:
    with requests.Session() as session:
        for body in (b"", b'{"ignored": true}', b"x" * 10_000):
            response = session.post(
                endpoint(emu, rid), data=body, headers={TOKEN_HEADER: TOKEN}, timeout=5
            )
            assert response.status_code == 200
    assert emu.stats.connections_opened["api"] == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 502, 503, 504])
def test_api_status_fault_answers_the_documented_error_body(
    emu: Emulator, rid: str, status: int
) -> None:
    emu.faults.api_status[rid] = status
    response = sign(emu, rid)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert list(response.json()) == ["error"] and isinstance(response.json()["error"], str)


def test_api_status_422_is_a_zod_error(emu: Emulator, rid: str) -> None:
    emu.faults.api_status[rid] = 422
    response = sign(emu, rid)
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


def test_error_payload_in_a_200(emu: Emulator, rid: str) -> None:
    emu.faults.api_error_payload.add(rid)
    response = sign(emu, rid)
    assert response.status_code == 200
    assert response.json() == {
        "data": {"error": True, "errorMessage": "Recording audio is not available yet"}
    }


def test_malformed_200s(emu: Emulator, rid: str) -> None:
    emu.faults.api_malformed[rid] = "html"
    response = sign(emu, rid)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")
    emu.faults.api_malformed[rid] = "not_json"
    response = sign(emu, rid)
    assert response.headers["Content-Type"] == "application/json"
    with pytest.raises(requests.JSONDecodeError):
        response.json()
    emu.faults.api_malformed[rid] = "no_url"
    assert sign(emu, rid).json() == {"data": {"error": False}}


def test_transient_queue_then_success(emu: Emulator, rid: str) -> None:
    emu.faults.transient[rid] = [503, 502]
    assert [sign(emu, rid).status_code for _ in range(3)] == [503, 502, 200]
    assert rid not in emu.faults.transient
    assert emu.stats.api_calls[rid] == 3


def test_rate_limit_429_with_and_without_retry_after(emu: Emulator, rid: str) -> None:
    emu.faults.rate_limit = 3
    emu.faults.rate_window = 0.5
    assert [sign(emu, rid).status_code for _ in range(4)] == [200, 200, 200, 429]
    limited = sign(emu, rid)
    assert limited.json() == {"error": "Too Many Requests"}
    assert "Retry-After" not in limited.headers
    emu.faults.retry_after = "7"
    assert sign(emu, rid).headers["Retry-After"] == "7"
    assert emu.stats.rate_limited == 3
    emu.tokens.add("other")  # the limit is per token
    assert sign(emu, rid, token="other").status_code == 200
    time.sleep(0.55)  # the window slides: the accepted requests have left it
    assert sign(emu, rid).status_code == 200


def test_redirect_307_would_carry_the_token_to_another_host(emu: Emulator, rid: str) -> None:
    target = f"{emu.storage_url}/elsewhere"
    emu.faults.redirect[rid] = target
    response = sign(emu, rid, allow_redirects=False)
    assert response.status_code == 307 and response.headers["Location"] == target
    # requests follows a 307 with the custom header: the storage records the leak.
    followed = sign(emu, rid)
    assert followed.status_code == 405
    assert emu.stats.storage_headers[-1][TOKEN_HEADER] == TOKEN


def test_api_latency_and_request_times(emu: Emulator, rid: str) -> None:
    emu.faults.api_latency = 0.2
    started = time.monotonic()
    sign(emu, rid)
    assert time.monotonic() - started >= 0.2
    emu.faults.api_latency = 0.0
    sign(emu, rid)
    times = emu.stats.api_request_times
    assert len(times) == 2 and started <= times[0] <= times[1]
