"""SiroClient against the emulator over real sockets, plus its pure helpers.

Every end-to-end test talks HTTP to ``siro_data.emulator``; nothing in ``requests`` is mocked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
from support import FAST_RETRIES, TOKEN, TokenProvider, serve

from siro_data import AuthError, SignedURL, SiroAPIError, SiroClient, __version__
from siro_data.client import signed_url_path
from siro_data.emulator import Emulator, Recording, sample_recordings
from siro_data.sessions import TOKEN_HEADER
from siro_data.tokens import MINTER_ENV

UNAUTHORIZED = "Unauthorized: invalid or expired access token"


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recordings() -> dict[str, Recording]:
    return sample_recordings(n=2)


@pytest.fixture
def client(emulator: Emulator) -> Iterator[SiroClient]:
    with SiroClient(TOKEN, emulator.api_url, requests_per_minute=60_000, timeout=(2, 5)) as c:
        yield c


def _signature(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Goog-Signature"][0]


# --- sign: the happy path ------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["ms", "s"])
def test_sign_returns_storage_url_and_utc_expiration(
    emulator: Emulator, client: SiroClient, rid: str, unit: str
) -> None:
    """A 200 becomes a SignedURL on the storage origin, expiring (UTC) in ~url_ttl, ms or s."""
    emulator.faults.expiration_unit = unit  # type: ignore[assignment]
    emulator.faults.url_ttl = 600
    signed = client.sign(rid)
    assert isinstance(signed, SignedURL)
    assert signed.url.startswith(emulator.storage_url + "/")
    assert "X-Goog-Signature=" in signed.url
    assert isinstance(signed.expiration, pd.Timestamp)
    assert str(signed.expiration.tz) == "UTC"
    expected = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=600)
    assert abs(signed.expiration - expected) < pd.Timedelta(minutes=1)
    assert not signed.expires_within(500)
    assert signed.expires_within(700)
    assert emulator.stats.api_calls[rid] == 1


def test_reprs_hide_token_and_signature(emulator: Emulator, client: SiroClient, rid: str) -> None:
    """Neither repr(SignedURL) nor repr(SiroClient) shows the token or the URL's signature."""
    signed = client.sign(rid)
    signature = _signature(signed.url)
    assert len(signature) == 64
    for text in (repr(signed), str(signed), repr(client), repr(client._token)):
        assert TOKEN not in text
        assert signature not in text
        assert "X-Goog-Signature" not in text
    assert repr(signed).startswith(f"SignedURL({emulator.storage_url}/")
    assert repr(client) == f"SiroClient(api_url={emulator.api_url!r}, token=<redacted>)"


# --- documented errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (400, "Bad Request", "bad_request"),
        (403, "Forbidden: user does not have access to this recording", "forbidden"),
        (404, "Recording not found", "not_found"),
        (500, "Internal Server Error", "server_error"),
    ],
)
def test_documented_error_statuses(
    emulator: Emulator, rid: str, status: int, message: str, kind: str
) -> None:
    """400/403/404/500 raise SiroAPIError with the status and the server's own message."""
    emulator.faults.api_status[rid] = status
    client = SiroClient(TOKEN, emulator.api_url, requests_per_minute=60_000, retries=FAST_RETRIES)
    with client, pytest.raises(SiroAPIError) as info:
        client.sign(rid)
    exc = info.value
    assert type(exc) is SiroAPIError
    assert exc.status == status
    assert exc.message == message
    assert str(exc) == f"{status}: {message}"
    assert exc.kind == kind
    # Client errors are final; 500 is retried by the policy (5 retries: 6 calls).
    assert emulator.stats.api_calls[rid] == (6 if status == 500 else 1)


def test_unknown_id_is_404(client: SiroClient, emulator: Emulator) -> None:
    """An id the server does not know: 404 with its message, asked once."""
    with pytest.raises(SiroAPIError) as info:
        client.sign("no-such-recording")
    assert str(info.value) == "404: Recording not found"
    assert emulator.stats.api_calls["no-such-recording"] == 1


def test_422_zod_error_names_the_issue(emulator: Emulator, client: SiroClient, rid: str) -> None:
    """A 422 ZodError is summarised as ``<name>: <path>: <message>``."""
    emulator.faults.api_status[rid] = 422
    with pytest.raises(SiroAPIError) as info:
        client.sign(rid)
    assert info.value.status == 422
    assert info.value.kind == "invalid"
    assert str(info.value) == "422: ZodError: id: Required"


def test_empty_id_gets_the_servers_422(client: SiroClient, emulator: Emulator) -> None:
    """An empty id reaches the server as an empty segment, which answers its ZodError."""
    with pytest.raises(SiroAPIError) as info:
        client.sign("")
    assert str(info.value) == "422: ZodError: id: Required"
    assert emulator.stats.api_calls[""] == 1


def test_200_with_error_payload(emulator: Emulator, client: SiroClient, rid: str) -> None:
    """A 200 carrying data.error true raises with the errorMessage."""
    emulator.faults.api_error_payload.add(rid)
    with pytest.raises(SiroAPIError) as info:
        client.sign(rid)
    assert info.value.status == 200
    assert info.value.kind == "api_error"
    assert str(info.value) == "200: signedUrl error: Recording audio is not available yet"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("html", "signedUrl answer is not the expected JSON (text/html; charset=utf-8)"),
        ("not_json", "signedUrl answer is not the expected JSON (application/json)"),
        ("no_url", "signedUrl answer has no usable url"),
    ],
)
def test_malformed_200(
    emulator: Emulator, client: SiroClient, rid: str, kind: str, message: str
) -> None:
    """A 200 the client cannot use is a SiroAPIError(200) that says what was wrong."""
    emulator.faults.api_malformed[rid] = kind
    with pytest.raises(SiroAPIError) as info:
        client.sign(rid)
    assert info.value.status == 200
    assert info.value.message == message
    assert str(info.value) == f"200: {message}"
    assert emulator.stats.api_calls[rid] == 1


# --- 401 and token renewal -----------------------------------------------------------------------


def test_401_with_a_plain_token_is_auth_error(
    emulator: Emulator, client: SiroClient, rid: str
) -> None:
    """A rejected string token cannot be renewed: AuthError after exactly one request."""
    emulator.tokens.clear()
    emulator.tokens.add("another-token-5678")
    with pytest.raises(AuthError) as info:
        client.sign(rid)
    assert info.value.status == 401
    assert info.value.kind == "unauthorized"
    assert str(info.value) == "401: token rejected; pass a token provider to renew it"
    assert emulator.stats.api_calls[rid] == 1


def test_401_provider_renews_once(emulator: Emulator, rid: str) -> None:
    """After a 401 the provider is asked exactly once more and the call succeeds."""
    first, second = "tok-first-aaaaaaaa", "tok-second-bbbbbbbb"
    emulator.tokens = {first}
    provider = TokenProvider(first, second)
    with SiroClient(provider, emulator.api_url) as client:
        assert provider.calls == 1  # the initial token
        assert client.sign(rid).url.startswith(emulator.storage_url)
        assert provider.calls == 1
        emulator.tokens = {second}  # the first token expires
        assert client.sign(rid).url.startswith(emulator.storage_url)
        assert provider.calls == 2
        assert client.sign(rid).url.startswith(emulator.storage_url)
        assert provider.calls == 2
    sent = [headers[TOKEN_HEADER] for headers in emulator.stats.api_headers]
    assert sent == [first, first, second, second]


def test_401_provider_returning_the_same_token(emulator: Emulator, rid: str) -> None:
    """A provider that hands back the rejected token: AuthError, asked once more, no loop."""
    stale = "tok-stale-cccccccc"
    emulator.tokens = {"tok-valid-dddddddd"}
    provider = TokenProvider(stale)
    with SiroClient(provider, emulator.api_url) as client, pytest.raises(AuthError) as info:
        client.sign(rid)
    assert info.value.status == 401
    assert info.value.kind == "unauthorized"
    assert stale not in str(info.value)
    assert provider.calls == 2
    assert emulator.stats.api_calls[rid] in (1, 2)  # at most one request with the renewed token


def test_401_provider_returning_another_rejected_token(emulator: Emulator, rid: str) -> None:
    """A fresh token that is rejected too: AuthError with the server's message, two requests."""
    emulator.tokens = {"tok-valid-dddddddd"}
    provider = TokenProvider("tok-bad-one-eeeeeeee", "tok-bad-two-ffffffff")
    with SiroClient(provider, emulator.api_url) as client, pytest.raises(AuthError) as info:
        client.sign(rid)
    assert info.value.status == 401
    assert str(info.value).startswith("401: ")
    assert str(info.value).endswith(UNAUTHORIZED)
    assert "tok-bad" not in str(info.value)
    assert provider.calls == 2
    assert emulator.stats.api_calls[rid] == 2
    sent = [headers[TOKEN_HEADER] for headers in emulator.stats.api_headers]
    assert sent == ["tok-bad-one-eeeeeeee", "tok-bad-two-ffffffff"]


def test_provider_failures_are_auth_errors(emulator: Emulator) -> None:
    """A provider that raises or returns nothing is an AuthError naming the cause only."""

    def broken() -> str:
        raise RuntimeError(f"vault down, token {TOKEN}")

    with pytest.raises(AuthError) as info:
        SiroClient(broken, emulator.api_url)
    assert str(info.value) == "token provider failed: RuntimeError"
    with pytest.raises(AuthError) as info:
        SiroClient(lambda: "", emulator.api_url)
    assert str(info.value) == "token provider returned no token"


def test_concurrent_401s_renew_the_token_once(
    emulator: Emulator, recordings: dict[str, Recording]
) -> None:
    """8 threads rejected at the same moment share one renewal: the provider is called once."""
    old, new = "tok-old-gggggggg", "tok-new-hhhhhhhh"
    emulator.tokens = {old}
    provider = TokenProvider(old, new, delay=0.0)
    ids = [next(iter(recordings))] * 8
    with SiroClient(provider, emulator.api_url, requests_per_minute=600_000) as client:
        assert provider.calls == 1
        emulator.tokens = {new}
        provider.delay = 0.3  # the renewal is slow: the other threads pile up meanwhile
        emulator.faults.api_latency = 0.3  # all eight first requests are in flight together
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(client.sign, ids))
    assert all(r.url.startswith(emulator.storage_url) for r in results)
    assert provider.calls == 2
    sent = [headers[TOKEN_HEADER] for headers in emulator.stats.api_headers]
    assert sent.count(old) == 8  # every thread really hit the 401
    assert sent.count(new) == 8


# --- retries -------------------------------------------------------------------------------------


def test_transient_statuses_are_retried(emulator: Emulator, client: SiroClient, rid: str) -> None:
    """503 then 502 then 200 (real backoff policy): success after exactly 3 calls."""
    emulator.faults.transient[rid] = [503, 502]
    assert client.sign(rid).url.startswith(emulator.storage_url)
    assert emulator.stats.api_calls[rid] == 3
    assert rid not in emulator.faults.transient


def test_429_honours_retry_after(emulator: Emulator, client: SiroClient, rid: str) -> None:
    """A 429 with Retry-After: 1 is retried, no sooner than a second later."""
    emulator.faults.transient[rid] = [429]
    emulator.faults.retry_after = "1"
    assert client.sign(rid).url.startswith(emulator.storage_url)
    assert emulator.stats.api_calls[rid] == 2
    assert emulator.stats.rate_limited == 1
    first, second = emulator.stats.api_request_times
    assert second - first >= 0.95


def test_persistent_500_is_bounded(emulator: Emulator, rid: str) -> None:
    """A server that keeps failing: SiroAPIError 500 after 1 + 5 retries, not forever."""
    emulator.faults.transient[rid] = [500] * 20
    client = SiroClient(TOKEN, emulator.api_url, retries=FAST_RETRIES)
    with client, pytest.raises(SiroAPIError) as info:
        client.sign(rid)
    assert str(info.value) == "500: Internal Server Error"
    assert emulator.stats.api_calls[rid] == 6
    assert len(emulator.faults.transient[rid]) == 14


def test_api_slower_than_read_timeout(emulator: Emulator, rid: str) -> None:
    """A read timeout ends as SiroAPIError(None), kind "connection", with no URL in it."""
    emulator.faults.api_latency = 1.0
    with SiroClient(TOKEN, emulator.api_url, timeout=(2, 0.5), retries=FAST_RETRIES) as client:
        started = time.monotonic()
        with pytest.raises(SiroAPIError) as info:
            client.sign(rid)
        elapsed = time.monotonic() - started
    exc = info.value
    assert exc.status is None
    assert exc.kind == "connection"
    assert str(exc) == "no answer from the API: ConnectionError: Read timed out. (read timeout=0.5)"
    assert "?" not in str(exc) and "http" not in str(exc) and TOKEN not in str(exc)
    assert emulator.stats.api_calls[rid] == 6  # read errors are retried 5 times too
    assert 2.9 <= elapsed < 6


# --- pacing --------------------------------------------------------------------------------------


def test_client_paces_requests(emulator: Emulator, rid: str) -> None:
    """600 requests per minute: 11 sequential signs span at least 10 intervals of 0.101 s."""
    with SiroClient(TOKEN, emulator.api_url, requests_per_minute=600) as client:
        assert client.rate_limiter.interval == pytest.approx(0.101)
        started = time.monotonic()
        for _ in range(11):
            client.sign(rid)
        elapsed = time.monotonic() - started
    assert elapsed >= 1.0
    times = emulator.stats.api_request_times
    assert len(times) == 11
    assert times[-1] - times[0] >= 1.0 - 0.02
    # Slots are fixed in time: a request the machine delayed does not push back the next one,
    # so single gaps may shrink under load; no 0.5 s holds more than its 5 slots (+1 edge).
    assert max(sum(t <= start + 0.5 for t in times[i:]) for i, start in enumerate(times)) <= 6


# --- what goes on the wire -----------------------------------------------------------------------


def test_every_request_carries_user_agent_and_token(
    emulator: Emulator, client: SiroClient, rid: str
) -> None:
    """Retries included, each API request has our User-Agent and the token; empty body."""
    emulator.faults.transient[rid] = [503]
    client.sign(rid)
    client.sign(rid)
    with pytest.raises(SiroAPIError):
        client.sign("missing-recording")
    assert emulator.stats.api_requests == 4
    for headers in emulator.stats.api_headers:
        assert headers["user-agent"] == f"siro-data/{__version__}"
        assert headers[TOKEN_HEADER] == TOKEN
        assert headers.get("content-length", "0") == "0"


AWKWARD_IDS = ["a/b", "with space", "..", ".", "...", "ünïcødé-録音", "100%", "a%2Fb", "q?x=1#f"]


@pytest.mark.parametrize("awkward", AWKWARD_IDS)
def test_awkward_ids_reach_the_server_intact(
    emulator: Emulator, client: SiroClient, recordings: dict[str, Recording], awkward: str
) -> None:
    """Slashes, dots, spaces, %, ?, # and unicode arrive as one decoded path segment."""
    emulator.add_recording(dataclasses.replace(next(iter(recordings.values())), id=awkward))
    signed = client.sign(awkward)
    assert signed.url.startswith(emulator.storage_url)
    assert dict(emulator.stats.api_calls) == {awkward: 1}


def test_signed_url_path_examples() -> None:
    """The id is one percent-encoded segment; dot-only ids are encoded too."""
    assert signed_url_path("abc") == "/v1/core/recordings/abc/signedUrl"
    assert signed_url_path("a/b c") == "/v1/core/recordings/a%2Fb%20c/signedUrl"
    assert signed_url_path("..") == "/v1/core/recordings/%2E%2E/signedUrl"
    assert signed_url_path(".") == "/v1/core/recordings/%2E/signedUrl"
    assert signed_url_path("a.b") == "/v1/core/recordings/a.b/signedUrl"
    assert signed_url_path("100%") == "/v1/core/recordings/100%25/signedUrl"
    assert signed_url_path("é") == "/v1/core/recordings/%C3%A9/signedUrl"
    assert signed_url_path("q?x#f") == "/v1/core/recordings/q%3Fx%23f/signedUrl"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_redirect_is_reported_not_followed(
    emulator: Emulator,
    client: SiroClient,
    rid: str,
    other_origin: ThreadingHTTPServer,
    host: str,
) -> None:
    """A 307 to another port or host: nothing is sent there, the row says where it pointed."""
    port = other_origin.server_address[1]
    emulator.faults.redirect[rid] = f"http://{host}:{port}/v1/core/recordings/moved/signedUrl?k=v"
    with pytest.raises(SiroAPIError) as info:
        client.sign(rid)
    assert info.value.status == 307
    assert str(info.value) == (
        f"307: the API redirected to http://{host}:{port}/v1/core/recordings/moved/signedUrl"
        " (not followed; check api_url)"
    )
    assert emulator.stats.api_headers[0][TOKEN_HEADER] == TOKEN
    assert other_origin.seen == []  # type: ignore[attr-defined]


# --- the API's clock and ours --------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "way"), [(-3600.0, "ahead of"), (3600.0, "behind")])
def test_a_skewed_api_clock_is_measured_and_said_once(
    emulator: Emulator, rid: str, offset: float, way: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An hour between the API's clock and ours: one warning saying so, however many calls;
    the skew readable on the client and carried by each URL, which is judged on the API's clock.
    """
    caplog.set_level(logging.WARNING, logger="siro_data")
    emulator.faults.clock_offset = offset
    client = SiroClient(TOKEN, emulator.api_url, requests_per_minute=60_000)
    with client, ThreadPoolExecutor(4) as pool:
        assert client.clock_skew is None
        signed = list(pool.map(client.sign, [rid] * 8))
    assert client.clock_skew == pytest.approx(offset, abs=1)
    assert all(s.clock_skew == pytest.approx(offset, abs=1) for s in signed)
    assert not signed[0].expires_within(800)  # 900 s left on the API's clock, whatever ours says
    assert signed[0].expires_within(1000)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"this machine's clock is 1 h 00 min {way} the API's; "
        "signed URLs are judged by storage, not by this clock"
    ]


def test_a_close_clock_is_measured_without_a_warning(
    emulator: Emulator, client: SiroClient, rid: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="siro_data")
    emulator.faults.clock_offset = 30.0
    client.sign(rid)
    assert client.clock_skew == pytest.approx(30, abs=1)
    assert not caplog.records


class _UndatedHandler(BaseHTTPRequestHandler):
    """An API whose clock is an hour ahead, that sends no Date header and gives its
    expiration in epoch microseconds.
    """

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        signed_at = int(time.time()) + 3600
        goog_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(signed_at))
        url = (
            f"http://127.0.0.1:9/b/rec/audio.m4a?X-Goog-Date={goog_date}&X-Goog-Expires=900"
            "&X-Goog-Signature=0123abcd"
        )
        expiration = (signed_at + 900) * 10**6
        body = json.dumps({"data": {"error": False, "url": url, "expiration": expiration}})
        self.send_response_only(200)  # no Date, no Server
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_without_a_date_header_the_url_tells_the_apis_clock_and_expirations_unit() -> None:
    """No Date: X-Goog-Date gives the skew. An expiration in microseconds (milliseconds by its
    size: year 57,000) is read as the URL's own lifetime says.
    """
    with serve(_UndatedHandler) as server:
        api_url = f"http://127.0.0.1:{server.server_address[1]}"
        with SiroClient(TOKEN, api_url) as client:
            signed = client.sign("rec")
    assert client.clock_skew == pytest.approx(3600, abs=1)
    assert signed.clock_skew == pytest.approx(3600, abs=1)
    expected = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=4500)
    assert abs(signed.expiration - expected) < pd.Timedelta(seconds=5)


# --- construction --------------------------------------------------------------------------------


def test_no_token_is_a_clear_value_error(
    monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    """Without token= and without $SIRO_AUTH_TOKEN: ValueError naming the ways to give one."""
    for variable in ("SIRO_AUTH_TOKEN", *MINTER_ENV.values()):
        monkeypatch.delenv(variable, raising=False)
    message = (
        "no Siro token: pass token=... (a string or a function returning one), set "
        "SIRO_AUTH_TOKEN, or set SIRO_CLIENT_ID, SIRO_CLIENT_SECRET, SIRO_USER_ID, SIRO_ORG_TOKEN "
        "to mint tokens as needed"
    )
    with pytest.raises(ValueError) as info:
        SiroClient(api_url=emulator.api_url)
    assert str(info.value) == message
    with pytest.raises(ValueError) as info:
        SiroClient("", api_url=emulator.api_url)
    assert str(info.value) == message


def test_token_and_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, emulator: Emulator, rid: str
) -> None:
    """$SIRO_AUTH_TOKEN and $SIRO_API_URL are used when nothing is passed."""
    monkeypatch.setenv("SIRO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("SIRO_API_URL", emulator.api_url + "/")
    with SiroClient() as client:
        assert client.api_url == emulator.api_url
        assert client.sign(rid).url.startswith(emulator.storage_url)
    assert emulator.stats.api_headers[0][TOKEN_HEADER] == TOKEN


@pytest.mark.parametrize(
    "url", ["ftp://api.siro.ai", "api.siro.ai", "file:///etc/passwd", "http://"]
)
def test_api_url_must_be_http(url: str) -> None:
    """An api_url that is not an http(s) URL with a host is refused at construction."""
    with pytest.raises(ValueError) as info:
        SiroClient(TOKEN, url)
    assert str(info.value) == f"api_url must be an http(s) URL, got {url.rstrip('/')!r}"


# --- pure helpers --------------------------------------------------------------------------------


def test_expires_within_without_expiration() -> None:
    """A URL without a known expiration is never considered expiring."""
    assert SignedURL("http://x/a?s=1").expires_within(10**9) is False
    past = SignedURL("http://x/a?s=1", pd.Timestamp("2000-01-01", tz="UTC"))
    assert past.expires_within(0) is True
