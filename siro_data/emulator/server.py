"""A local stand-in for Siro's signed-URL API and for the cloud storage behind it.

Two real HTTP/1.1 servers on 127.0.0.1 (two origins, as in production: the token must never
reach the storage host), built on the standard library only so the tests exercise the
client's real network code: connection reuse, timeouts, cut bodies, Range resumption.
Every fault a client must survive can be switched on while the servers run (`Faults`),
and what the clients did is counted (`Stats`).
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode

from .listing import LIST_PATH, ListingError, list_page
from .samples import Recording, sample_recordings

logger = logging.getLogger(__name__)

API_PREFIX = "/v1/core/recordings/"
API_SUFFIX = "/signedUrl"
BUCKET = "siro-recordings"
OBJECT_NAME = "audio"
CHUNK_SIZE = 64 * 1024
CLIENT_EMAIL = "siro-emulator@siro-emulator.iam.gserviceaccount.com"
GOOG_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

ZOD_ERROR: dict[str, Any] = {
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
"""The 422 body Siro documents (a failed request validation)."""

_API_MESSAGES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: user does not have access to this recording",
    404: "Recording not found",
    429: "Too Many Requests",
    500: "Internal Server Error",
}
_HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>{title}</title></head>"
    "<body><h1>{title}</h1><p>The request could not be served. Please try again later.</p>"
    "</body></html>"
)
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")
_QUERY = re.compile(r"\?[^\s\"]*")


@dataclass
class Faults:
    """Fault switches; each default means "no fault". Mutable while the servers run.

    One-shot faults are consumed as they fire: a `transient` queue is popped one status
    per call (the key is removed once empty), and `cut_after` / `stall_after` entries are
    removed once used (after `cut_times[id]` cuts for `cut_after`), so tests can read
    what is left.
    """

    api_latency: float = 0.0
    """Seconds slept before every API answer."""
    storage_ttfb: float = 0.0
    """Seconds slept before the storage sends its headers."""
    bandwidth: float | None = None
    """Bytes per second per storage response (paced between chunks)."""
    total_bandwidth: float | None = None
    """Bytes per second of all storage responses together: a downlink they share."""
    api_status: dict[str, int] = field(default_factory=dict)
    """id -> status answered with its documented body, on every call."""
    api_error_payload: set[str] = field(default_factory=set)
    """ids answered 200 ``{"data": {"error": true, "errorMessage": ...}}``."""
    api_malformed: dict[str, str] = field(default_factory=dict)
    """id -> "html" | "not_json" | "no_url": a 200 the client cannot use."""
    transient: dict[str, list[int]] = field(default_factory=dict)
    """id -> statuses the API answers first, one per call, before behaving normally."""
    storage_transient: dict[str, list[int]] = field(default_factory=dict)
    """id -> statuses the storage answers first, one per request."""
    rate_limit: int | None = None
    """Accepted API requests per token per `rate_window` seconds; beyond it, 429."""
    rate_window: float = 60.0
    retry_after: str | None = None
    """Retry-After header value sent with a 429 (None: no header, as Siro documents)."""
    expiration_unit: Literal["ms", "s"] = "ms"
    """Unit of the API's ``expiration``: epoch milliseconds or seconds."""
    url_ttl: float = 900.0
    """Lifetime of signed URLs in seconds; 0 or less signs URLs that are already expired."""
    expired_status: Literal[400, 403] = 400
    """400: GCS ``ExpiredToken``; 403: S3-style ``AccessDenied`` "Request has expired"."""
    expired_says_why: bool = True
    """False: an expired URL gets a bare 403 ``AccessDenied`` that does not mention expiry."""
    cut_after: dict[str, int] = field(default_factory=dict)
    """id -> close the connection after this many body bytes (full Content-Length sent)."""
    cut_times: dict[str, int] = field(default_factory=dict)
    """id -> how many responses `cut_after` cuts (default 1)."""
    stall_after: dict[str, int] = field(default_factory=dict)
    """id -> send this many body bytes, then stall `stall_seconds` (once)."""
    stall_seconds: float = 30.0
    ignore_range: bool | set[str] = False
    """True, or a set of ids: answer 200 with the whole body even when Range is asked."""
    content_length_delta: dict[str, int] = field(default_factory=dict)
    """id -> advertise Content-Length = true length + delta, then close the connection.

    Negative: the body is sent only up to the advertised length (a silently short file).
    Positive: the whole body is sent and the connection is cut (an incomplete read).
    """
    storage_html: set[str] = field(default_factory=set)
    """ids for which the storage answers 200 text/html (a misbehaving CDN)."""
    redirect: dict[str, str] = field(default_factory=dict)
    """id -> absolute URL the API answers a `redirect_status` to."""
    redirect_status: Literal[301, 302, 307, 308] = 307
    token_uses: dict[str, int] = field(default_factory=dict)
    """token -> signedUrl requests it is still accepted for; then it has expired (401).

    Decremented as requests are accepted: a token that expires mid-run, at a chosen call.
    """


@dataclass
class Stats:
    """What the servers saw; read freely, counters are updated under a lock."""

    api_requests: int = 0
    api_calls: collections.Counter[str] = field(default_factory=collections.Counter)
    rate_limited: int = 0
    """Number of 429 answers."""
    listing_requests: int = 0
    """Requests to the recordings listing (``GET /v1/core/recordings``), also in api_requests."""
    api_headers: list[dict[str, str]] = field(default_factory=list)
    api_request_times: list[float] = field(default_factory=list)
    """time.monotonic() at each API request's arrival."""
    storage_requests: collections.Counter[str] = field(default_factory=collections.Counter)
    storage_headers: list[dict[str, str]] = field(default_factory=list)
    bytes_served: collections.Counter[str] = field(default_factory=collections.Counter)
    """id -> body bytes written to the socket."""
    connections_opened: collections.Counter[str] = field(default_factory=collections.Counter)
    """"api" / "storage" -> TCP connections accepted."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def total_bytes_served(self) -> int:
        """Body bytes written by the storage, all recordings together."""
        return sum(self.bytes_served.values())

    def reset(self) -> None:
        """Zero every counter (fault state and rate-limit windows are kept)."""
        fresh = Stats()
        with self._lock:
            for f in fields(self):
                if f.name != "_lock":
                    setattr(self, f.name, getattr(fresh, f.name))

    def _api(self, rec_id: str | None, headers: dict[str, str]) -> None:
        with self._lock:
            self.api_requests += 1
            self.api_request_times.append(time.monotonic())
            self.api_headers.append(headers)
            if rec_id is not None:
                self.api_calls[rec_id] += 1

    def _storage(self, rec_id: str | None, headers: dict[str, str]) -> None:
        with self._lock:
            self.storage_headers.append(headers)
            if rec_id is not None:
                self.storage_requests[rec_id] += 1

    def _served(self, rec_id: str, n: int) -> None:
        with self._lock:
            self.bytes_served[rec_id] += n

    def _listing(self) -> None:
        with self._lock:
            self.listing_requests += 1

    def _rate_limited(self) -> None:
        with self._lock:
            self.rate_limited += 1

    def _connection(self, kind: str) -> None:
        with self._lock:
            self.connections_opened[kind] += 1


class _Server(ThreadingHTTPServer):
    """A threading server that counts connections and can cut them all at shutdown."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], emulator: Emulator, kind: str
    ) -> None:
        self.emulator = emulator
        self.kind = kind
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.emulator.stats._connection(self.kind)
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive or stalled connections."""
        with self._open_lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-answer is routine here; anything else is a bug.
        if isinstance(sys.exc_info()[1], OSError):
            logger.debug("%s: connection error with %s", self.kind, client_address, exc_info=True)
        else:
            logger.exception("%s: error handling a request from %s", self.kind, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK add ~40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server: _Server

    @property
    def emu(self) -> Emulator:
        return self.server.emulator

    def log_message(self, format: str, *args: Any) -> None:
        # Query strings carry signatures: logs of a test run must not hold usable URLs.
        message = _QUERY.sub("?<redacted>", format % args)
        logger.debug("%s %s - %s", self.server.kind, self.address_string(), message)

    def _headers(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def _drain_body(self) -> None:
        """Read and drop any request body, so the keep-alive stream stays in step."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return
        if length > 0:
            self.rfile.read(length)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _hard_close(self) -> None:
        """Close so that the client sees the body end early (an incomplete read)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class _ApiHandler(_Handler):
    """``POST /v1/core/recordings/{id}/signedUrl`` as Siro documents it."""

    def do_POST(self) -> None:
        self._route()

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_POST

    def __getattr__(self, name: str) -> Any:
        # Any other method (OPTIONS, TRACE, QUERY, ...) is routed too, to a JSON 405 with
        # ``Allow``: never http.server's HTML 501 page.
        if name.startswith("do_"):
            return self._route
        raise AttributeError(name)

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _error(self, status: int) -> None:
        """Answer `status` with the body Siro documents for it."""
        if status == 422:
            self._json(422, ZOD_ERROR)
            return
        headers = {}
        if status == 429:
            self.emu.stats._rate_limited()
            if self.emu.faults.retry_after is not None:
                headers["Retry-After"] = self.emu.faults.retry_after
        self._json(status, {"error": _API_MESSAGES.get(status) or _phrase(status)}, headers)

    def _route(self) -> None:
        self._drain_body()
        rec_id = _parse_api_path(self.path.partition("?")[0])
        emu, faults = self.emu, self.emu.faults
        emu.stats._api(rec_id, self._headers())
        if faults.api_latency > 0:
            emu._stopping.wait(faults.api_latency)
        if self.path.partition("?")[0] == LIST_PATH:
            self._list()
            return
        if rec_id is None:
            self._json(404, {"error": "Not Found"})
            return
        if self.command != "POST":
            self._json(405, {"error": "Method Not Allowed"}, {"Allow": "POST"})
            return
        token = self.headers.get("x-siro-auth-token")
        if token is None:
            self._json(401, {"error": "Unauthorized: missing x-siro-auth-token header"})
            return
        if token not in emu.tokens or not emu._spend(token):
            self._json(401, {"error": "Unauthorized: invalid or expired access token"})
            return
        if not emu._admit(token):
            self._error(429)
            return
        if rec_id == "":
            self._json(422, ZOD_ERROR)
            return
        status = emu._pop_transient(faults.transient, rec_id)
        if status is not None:
            self._error(status)
            return
        if rec_id in faults.redirect:
            status, location = faults.redirect_status, faults.redirect[rec_id]
            self._json(status, {"error": _phrase(status)}, {"Location": location})
            return
        if rec_id in faults.api_status:
            self._error(faults.api_status[rec_id])
            return
        if rec_id in faults.api_error_payload:
            message = "Recording audio is not available yet"
            self._json(200, {"data": {"error": True, "errorMessage": message}})
            return
        if rec_id in faults.api_malformed:
            self._malformed(faults.api_malformed[rec_id])
            return
        recording = emu.recordings.get(rec_id)
        if recording is None:
            self._error(404)
            return
        url, expiration = emu._sign(recording)
        self._json(200, {"data": {"error": False, "url": url, "expiration": expiration}})

    def _list(self) -> None:
        """``GET /v1/core/recordings``: the same token check and rate limit, plain-text errors."""
        emu = self.emu
        emu.stats._listing()
        if self.command != "GET":
            self._text(405, "Method Not Allowed", {"Allow": "GET"})
            return
        token = self.headers.get("x-siro-auth-token")
        if token is None or token not in emu.tokens:
            self._text(401, "Unauthorized: invalid or missing access token")
            return
        if not emu._admit(token):
            emu.stats._rate_limited()
            retry_after = emu.faults.retry_after
            headers = {} if retry_after is None else {"Retry-After": retry_after}
            self._text(429, "Too Many Requests", headers)
            return
        try:
            page = list_page(list(emu.recordings.values()), self.path.partition("?")[2])
        except ListingError as exc:
            self._text(exc.status, exc.message)
            return
        self._json(200, page)

    def _text(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, message.encode(), "text/plain; charset=utf-8", headers)

    def _malformed(self, kind: str) -> None:
        if kind == "html":
            page = _HTML_PAGE.format(title="Just a moment...").encode()
            self._send(200, page, "text/html; charset=utf-8")
        elif kind == "not_json":
            self._send(200, b'{"data": {"error": false, "url": "https://stor', "application/json")
        elif kind == "no_url":
            self._json(200, {"data": {"error": False}})
        else:
            logger.error("unknown api_malformed kind %r", kind)
            self._json(500, {"error": f"emulator: unknown api_malformed kind {kind!r}"})


class _StorageHandler(_Handler):
    """GCS-like object reads: V4 signature and expiry checks, Range, chunked pacing."""

    def do_GET(self) -> None:
        self._route()

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self._drain_body()
        parsed = _parse_object_path(self.path.partition("?")[0])
        self.emu.stats._storage(parsed[0] if parsed else None, self._headers())
        self._xml_error(405, "MethodNotAllowed", "The specified method is not allowed.")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _xml_error(
        self,
        status: int,
        code: str,
        message: str,
        details: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        body += f"<Message>{message}</Message>"
        if details is not None:
            body += f"<Details>{details}</Details>"
        body += "</Error>"
        self._send(status, body.encode(), "application/xml", headers)

    def _route(self) -> None:
        self._drain_body()
        raw_path, _, raw_query = self.path.partition("?")
        parsed = _parse_object_path(raw_path)
        emu, faults = self.emu, self.emu.faults
        emu.stats._storage(parsed[0] if parsed else None, self._headers())
        if faults.storage_ttfb > 0:
            emu._stopping.wait(faults.storage_ttfb)
        if parsed is None:
            self._xml_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        rec_id, extension = parsed
        status = emu._pop_transient(faults.storage_transient, rec_id)
        if status is not None:
            self._xml_error(status, _phrase(status).replace(" ", ""), _phrase(status) + ".")
            return
        if rec_id in faults.storage_html:
            page = _HTML_PAGE.format(title="502 Bad Gateway").encode()
            self._send(200, page, "text/html; charset=utf-8")
            return
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if not emu._signature_ok(rec_id, extension, params):
            self._xml_error(
                403,
                "SignatureDoesNotMatch",
                "Access denied.",
                "The request signature we calculated does not match the signature you "
                "provided. Check your Google secret key and signing method.",
            )
            return
        expires_at = _expires_at(params)
        if time.time() >= expires_at:
            self._expired(expires_at)
            return
        recording = emu.recordings.get(rec_id)
        if recording is None or recording.extension != extension:
            self._xml_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        self._send_object(recording)

    def _expired(self, expires_at: float) -> None:
        if not self.emu.faults.expired_says_why:
            self._xml_error(403, "AccessDenied", "Access denied.")
            return
        if self.emu.faults.expired_status == 403:
            self._xml_error(403, "AccessDenied", "Request has expired")
            return
        when = datetime.fromtimestamp(expires_at, timezone.utc).isoformat()
        self._xml_error(
            400,
            "ExpiredToken",
            "Invalid argument.",
            f"The provided token has expired. Request signature expired at: {when}",
        )

    def _send_object(self, recording: Recording) -> None:
        emu, faults = self.emu, self.emu.faults
        total = recording.size
        start, end, status = 0, total - 1, 200
        range_header = self.headers.get("Range")
        if range_header and not _ignores_range(faults.ignore_range, recording.id):
            asked = _parse_range(range_header, total)
            if asked is not None and asked[0] >= total:
                self._xml_error(
                    416,
                    "InvalidRange",
                    "The requested range cannot be satisfied.",
                    headers={"Content-Range": f"bytes */{total}"},
                )
                return
            if asked is not None:
                (start, end), status = asked, 206
        # bytes, or a body generated on the fly (too big to hold): an object with len() whose
        # slices are such objects too, and bytes-like once no longer than a chunk.
        data = recording.data
        body = (memoryview(data) if isinstance(data, bytes | bytearray) else data)[start : end + 1]
        delta = faults.content_length_delta.get(recording.id, 0)
        advertised = max(0, len(body) + delta)
        self.send_response(status)
        self.send_header("Content-Type", recording.content_type)
        self.send_header("Content-Length", str(advertised))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{recording.sha256[:32]}"')
        self.send_header("Last-Modified", emu.last_modified)
        # What GCS adds about the whole object, whatever the range: a client can check
        # the size and bytes it assembled against them.
        self.send_header("x-goog-stored-content-length", str(total))
        self.send_header("x-goog-hash", f"md5={recording.md5_base64}")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        if delta:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        cut = emu._take_once(faults.cut_after, faults.cut_times, recording.id)
        stall = emu._take_once(faults.stall_after, None, recording.id)
        limit = min(len(body), advertised) if cut is None else min(len(body), advertised, cut)
        if self._write_body(recording.id, body[:limit], stall) and limit < advertised:
            self._hard_close()

    def _write_body(self, rec_id: str, body: memoryview, stall: int | None) -> bool:
        """Write `body` in paced chunks; False if the client or a shutdown ended it early."""
        emu = self.emu
        bandwidth = emu.faults.bandwidth
        # At low bandwidth, smaller chunks keep the pacing smooth (about 20 per second).
        chunk = CHUNK_SIZE if not bandwidth else max(1024, min(CHUNK_SIZE, int(bandwidth / 20)))
        sent, started = 0, time.monotonic()
        while sent < len(body):
            if stall is not None and sent >= stall:
                logger.debug("stalling %r after %d bytes", rec_id, sent)
                stall = None
                if emu._stopping.wait(emu.faults.stall_seconds):
                    self._hard_close()
                    return False
            n = min(chunk, len(body) - sent)
            if stall is not None:
                n = min(n, stall - sent)
            delay = emu._link_due(n) - time.monotonic()  # the shared downlink carries them
            if delay > 0 and emu._stopping.wait(delay):
                self._hard_close()
                return False
            # Counted before writing, so that a client holding the bytes sees them counted.
            emu.stats._served(rec_id, n)
            try:
                self.wfile.write(body[sent : sent + n])
            except OSError:  # the client hung up
                emu.stats._served(rec_id, -n)
                self.close_connection = True
                return False
            sent += n
            if bandwidth:
                delay = started + sent / bandwidth - time.monotonic()
                if delay > 0 and emu._stopping.wait(delay):
                    self._hard_close()
                    return False
        return True


class Emulator:
    """Siro's signed-URL API and a GCS-like storage, served on two ephemeral local ports.

    Parameters
    ----------
    recordings : Mapping[str, Recording] or Iterable[Recording], optional
        What the emulator serves; `sample_recordings()` by default. Copied: add
        recordings later with `add_recording` or by setting ``emu.recordings[id]``.
    token : str
        The accepted ``x-siro-auth-token``. ``emu.tokens`` (a set) may be changed at
        run time to rotate or revoke tokens.
    faults : Faults, optional
        Initial fault switches; ``emu.faults`` can be changed while running.
    host : str
        Interface to bind.
    api_port, storage_port : int
        Ports to bind; 0 picks free ones.

    Examples
    --------
    >>> import requests
    >>> with Emulator(token="t") as emu:
    ...     answer = requests.post(f"{emu.api_url}/v1/core/recordings/unknown/signedUrl",
    ...                            headers={"x-siro-auth-token": "t"})
    >>> answer.status_code, answer.json()
    (404, {'error': 'Recording not found'})
    """

    def __init__(
        self,
        recordings: Mapping[str, Recording] | Iterable[Recording] | None = None,
        token: str = "test-token",
        *,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        api_port: int = 0,
        storage_port: int = 0,
    ) -> None:
        if recordings is None:
            recordings = sample_recordings()
        if isinstance(recordings, Mapping):
            self.recordings: dict[str, Recording] = dict(recordings)
        else:
            self.recordings = {rec.id: rec for rec in recordings}
        self.token = token
        self.tokens: set[str] = {token}
        self.faults = faults if faults is not None else Faults()
        self.stats = Stats()
        self.last_modified = email.utils.formatdate(time.time(), usegmt=True)
        self._host = host
        self._ports = (api_port, storage_port)
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()  # one-shot fault state and rate-limit windows
        self._windows: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._stopping = threading.Event()
        self._link_lock = threading.Lock()
        self._link_free = 0.0  # time.monotonic() at which the shared downlink is idle
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    @property
    def api_url(self) -> str:
        """Base URL of the API, without a trailing slash."""
        return self._url(0)

    @property
    def storage_url(self) -> str:
        """Base URL of the storage, without a trailing slash."""
        return self._url(1)

    def _url(self, index: int) -> str:
        if len(self._servers) < 2:
            raise RuntimeError("the emulator is not running; call start() first")
        host, port = self._servers[index].server_address[:2]
        return f"http://{host}:{port}"

    def add_recording(self, recording: Recording) -> None:
        """Serve `recording` too (replacing one with the same id)."""
        self.recordings[recording.id] = recording

    def start(self) -> Emulator:
        """Bind both servers and serve them on daemon threads; returns self."""
        if self._servers:
            return self
        self._stopping.clear()
        try:
            for kind, handler, port in (
                ("api", _ApiHandler, self._ports[0]),
                ("storage", _StorageHandler, self._ports[1]),
            ):
                server = _Server((self._host, port), handler, self, kind)
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.02},  # stop() waits up to this
                    name=f"siro-emulator-{kind}",
                    daemon=True,
                )
                self._servers.append(server)
                self._threads.append(thread)
                thread.start()
        except BaseException:
            self.stop()
            raise
        logger.info("emulator: API at %s, storage at %s", self.api_url, self.storage_url)
        return self

    def stop(self) -> None:
        """Stop both servers and close every connection, stalled ones included."""
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.close_open_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=2)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _link_due(self, n: int) -> float:
        """When `n` more bytes will have crossed the shared downlink (0 without a limit)."""
        total = self.faults.total_bandwidth
        if not total:
            return 0.0
        with self._link_lock:
            self._link_free = max(time.monotonic(), self._link_free) + n / total
            return self._link_free

    def _spend(self, token: str) -> bool:
        """One use of `token` against `faults.token_uses`; False once none is left."""
        with self._lock:
            uses = self.faults.token_uses
            if token not in uses:
                return True
            if uses[token] <= 0:
                return False
            uses[token] -= 1
            return True

    def _admit(self, token: str) -> bool:
        """Sliding-window rate limit per token over accepted requests."""
        now = time.monotonic()
        with self._lock:
            window = self._windows[token]
            while window and window[0] <= now - self.faults.rate_window:
                window.popleft()
            limit = self.faults.rate_limit
            if limit is not None and len(window) >= limit:
                return False
            window.append(now)
            return True

    def _pop_transient(self, queues: dict[str, list[int]], rec_id: str) -> int | None:
        with self._lock:
            queue = queues.get(rec_id)
            if not queue:
                return None
            status = queue.pop(0)
            if not queue:
                del queues[rec_id]
            return status

    def _take_once(
        self, switch: dict[str, int], times: dict[str, int] | None, rec_id: str
    ) -> int | None:
        """The switch's value for `rec_id`, removing it once used `times[rec_id]` times."""
        with self._lock:
            if rec_id not in switch:
                return None
            value = switch[rec_id]
            remaining = times.get(rec_id, 1) if times is not None else 1
            if remaining > 1 and times is not None:
                times[rec_id] = remaining - 1
            else:
                del switch[rec_id]
                if times is not None:
                    times.pop(rec_id, None)
            return value

    def _sign(self, recording: Recording) -> tuple[str, int]:
        """A V4-style signed URL for `recording` and its expiration in the API's unit."""
        now = time.time()
        date = math.floor(now)
        ttl = self.faults.url_ttl
        # Whole seconds as in GCS: the URL lives at least `ttl`, at most a second more.
        expires = math.ceil(ttl + now - date) if ttl > 0 else math.floor(ttl)
        goog_date = datetime.fromtimestamp(date, timezone.utc)
        params = {
            "X-Goog-Algorithm": "GOOG4-HMAC-SHA256",
            "X-Goog-Credential": (f"{CLIENT_EMAIL}/{goog_date:%Y%m%d}/auto/storage/goog4_request"),
            "X-Goog-Date": goog_date.strftime(GOOG_DATE_FORMAT),
            "X-Goog-Expires": str(expires),
            "X-Goog-SignedHeaders": "host",
        }
        path = _object_path(recording.id, recording.extension)
        signature = self._signature(path, params)
        url = f"{self.storage_url}{path}?{_canonical_query(params)}&X-Goog-Signature={signature}"
        expiration = date + expires
        return url, expiration * 1000 if self.faults.expiration_unit == "ms" else expiration

    def _signature(self, path: str, params: Mapping[str, str]) -> str:
        message = f"GET\n{path}\n{_canonical_query(params)}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def _signature_ok(self, rec_id: str, extension: str, params: dict[str, str]) -> bool:
        signature = params.pop("X-Goog-Signature", "")
        if not signature or not {"X-Goog-Date", "X-Goog-Expires"} <= params.keys():
            return False
        expected = self._signature(_object_path(rec_id, extension), params)
        return hmac.compare_digest(signature, expected)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"Error {status}"


def _unquote_raw(segment: str) -> str:
    """Percent-decode a raw path segment (http.server reads raw non-ASCII bytes as latin-1)."""
    if not segment.isascii():
        segment = segment.encode("latin-1", "replace").decode("utf-8", "replace")
    return unquote(segment)


def _parse_api_path(raw_path: str) -> str | None:
    """The decoded id of ``/v1/core/recordings/{id}/signedUrl``, or None for another path."""
    if not (
        raw_path.startswith(API_PREFIX)
        and raw_path.endswith(API_SUFFIX)
        and len(raw_path) >= len(API_PREFIX) + len(API_SUFFIX)
    ):
        return None
    segment = raw_path[len(API_PREFIX) : len(raw_path) - len(API_SUFFIX)]
    return None if "/" in segment else _unquote_raw(segment)


def _object_path(rec_id: str, extension: str) -> str:
    segment = quote(rec_id, safe="")
    if segment in (".", ".."):  # a literal dot segment would be removed by URL normalisation
        segment = segment.replace(".", "%2E")
    return f"/{BUCKET}/{segment}/{OBJECT_NAME}.{extension}"


def _parse_object_path(raw_path: str) -> tuple[str, str] | None:
    """(id, extension) of ``/siro-recordings/{id}/audio.{ext}``, or None."""
    prefix = f"/{BUCKET}/"
    if not raw_path.startswith(prefix):
        return None
    segment, slash, name = raw_path[len(prefix) :].partition("/")
    stem, dot, extension = name.partition(".")
    if not (segment and slash and dot and stem == OBJECT_NAME and extension) or "/" in name:
        return None
    return _unquote_raw(segment), extension


def _canonical_query(params: Mapping[str, str]) -> str:
    return urlencode(sorted(params.items()), quote_via=quote, safe="")


def _expires_at(params: Mapping[str, str]) -> float:
    """Epoch seconds at which a (validly signed) URL expires."""
    date = datetime.strptime(params["X-Goog-Date"], GOOG_DATE_FORMAT)
    return date.replace(tzinfo=timezone.utc).timestamp() + int(params["X-Goog-Expires"])


def _ignores_range(setting: bool | set[str], rec_id: str) -> bool:
    return setting is True or (not isinstance(setting, bool) and rec_id in setting)


def _parse_range(header: str, total: int) -> tuple[int, int] | None:
    """(start, end) of a single byte range, end clamped; None if it is to be ignored.

    A start at or past `total` is returned as is: the caller answers 416.
    """
    match = _RANGE.fullmatch(header)
    if match is None or not (match[1] or match[2]):
        return None
    if not match[1]:  # suffix range: the last N bytes
        suffix = int(match[2])
        return (max(0, total - suffix), total - 1) if suffix else (total, total - 1)
    start = int(match[1])
    if match[2] and int(match[2]) < start:
        return None
    end = min(int(match[2]), total - 1) if match[2] else total - 1
    return start, end
