"""The library's exceptions: each failure's stable short name, one base class."""

from __future__ import annotations

from siro_data import AuthError, SiroAPIError
from siro_data.exceptions import DownloadError, ExpiredURLError, NotAudioError, SiroDataError


def test_error_kinds() -> None:
    """Each failure has its stable short name."""
    expected = {
        None: "connection",
        400: "bad_request",
        403: "forbidden",
        404: "not_found",
        422: "invalid",
        429: "rate_limited",
        500: "server_error",
        503: "server_error",
        200: "api_error",
        418: "api_error",
    }
    assert {status: SiroAPIError(status, "m").kind for status in expected} == expected
    assert str(SiroAPIError(None, "no answer")) == "no answer"
    assert AuthError(401, "x").kind == "unauthorized"
    assert DownloadError("x").kind == "download"
    assert ExpiredURLError("x", 400).kind == "expired_url"
    assert NotAudioError("x").kind == "not_audio"
    assert isinstance(AuthError(401, "x"), SiroAPIError)
    assert all(issubclass(c, SiroDataError) for c in (SiroAPIError, DownloadError, NotAudioError))
