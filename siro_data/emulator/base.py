"""The HTTP plumbing both emulator servers share, and what their handlers may ask of the emulator.

`Server` counts connections and can cut them all at shutdown; `Handler` writes answers, keeps
kept-alive streams in step and never logs a signed URL's query. `Backend` is the emulator as
the handlers see it: its state and public methods, nothing private (``Emulator`` fulfils it).
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import re
import socket
import sys
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import unquote

from .faults import Faults
from .samples import Recording
from .stats import Stats

logger = logging.getLogger(__name__)

HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>{title}</title></head>"
    "<body><h1>{title}</h1><p>The request could not be served. Please try again later.</p>"
    "</body></html>"
)
"""An error page as a proxy or CDN would send it; ``{title}`` is filled in."""
_QUERY = re.compile(r"\?[^\s\"]*")


class Backend(Protocol):
    """What a handler may use of the emulator that serves it (``Emulator`` fulfils it)."""

    recordings: dict[str, Recording]
    tokens: set[str]
    organization_token: str
    oauth_app: tuple[str, str, str]
    faults: Faults
    stats: Stats
    last_modified: str

    def now(self) -> float: ...
    def wait(self, seconds: float) -> bool: ...
    def spend_token(self, token: str) -> bool: ...
    def mint_token(self) -> str: ...
    def admit(self, token: str) -> bool: ...
    def next_transient(self, queues: dict[str, list[int]], rec_id: str) -> int | None: ...
    def take_once(
        self, switch: dict[str, int], times: dict[str, int] | None, rec_id: str
    ) -> int | None: ...
    def sign_url(self, recording: Recording) -> tuple[str, int]: ...
    def signature_ok(self, rec_id: str, extension: str, params: dict[str, str]) -> bool: ...
    def link_due(self, n: int) -> float: ...


class Server(ThreadingHTTPServer):
    """A threading server that counts connections and can cut them all at shutdown."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[Handler], emulator: Backend, kind: str
    ) -> None:
        self.emulator = emulator
        self.kind = kind
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.emulator.stats.count_connection(self.kind)
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


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive answers, shared by the API and the storage handlers."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK add ~40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server: Server

    @property
    def emu(self) -> Backend:
        """The emulator this handler's server belongs to."""
        return self.server.emulator

    def log_message(self, format: str, *args: Any) -> None:
        # Query strings carry signatures: logs of a test run must not hold usable URLs.
        message = _QUERY.sub("?<redacted>", format % args)
        logger.debug("%s %s - %s", self.server.kind, self.address_string(), message)

    def date_time_string(self, timestamp: float | None = None) -> str:
        # http.server dates its answers by the real clock; they carry the emulator's, so that
        # a skewed clock (`Faults.clock_offset`) shows in ``Date`` as it does in signed URLs.
        return email.utils.formatdate(
            self.emu.now() if timestamp is None else timestamp, usegmt=True
        )

    def request_headers(self) -> dict[str, str]:
        """The request's headers, names lower-cased, as `Stats` keeps them."""
        return {name.lower(): value for name, value in self.headers.items()}

    def drain_body(self) -> None:
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

    def answer(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer `status` with a whole `body` (headers only for HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def hard_close(self) -> None:
        """Close so that the client sees the body end early (an incomplete read)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def phrase(status: int) -> str:
    """The reason phrase of `status`, also for codes http.HTTPStatus does not know."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"Error {status}"


def unquote_raw(segment: str) -> str:
    """Percent-decode a raw path segment (http.server reads raw non-ASCII bytes as latin-1)."""
    if not segment.isascii():
        segment = segment.encode("latin-1", "replace").decode("utf-8", "replace")
    return unquote(segment)
