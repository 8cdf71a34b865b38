"""Siro's API as the emulator serves it: ``POST /v1/core/recordings/{id}/signedUrl`` and the
``GET /v1/core/recordings`` listing, behind one token check and one per-token rate limit.

The two routes answer errors in different shapes, as Siro documents them: the signedUrl
route in JSON (``{"error": ...}``, a ZodError for a 422), the listing in plain text.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import oauth
from .base import HTML_PAGE, Handler, phrase, unquote_raw
from .listing import LIST_PATH, ListingError, list_page

logger = logging.getLogger(__name__)

API_PREFIX = "/v1/core/recordings/"
API_SUFFIX = "/signedUrl"
TOKEN_HEADER = "x-siro-auth-token"

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


@dataclass(frozen=True)
class _Route:
    """What differs between the two routes in the checks they share."""

    method: str
    """The one method the route answers; any other gets a 405 with ``Allow``."""
    plain_text: bool
    """Errors as ``text/plain`` (the listing) rather than JSON ``{"error": ...}``."""
    no_token: str
    """The 401's message when the token header is missing."""
    bad_token: str
    """The 401's message when the token is not (or no longer) accepted."""
    spends_token: bool
    """Whether an accepted token uses up one of its `Faults.token_uses`."""


_SIGNED_URL = _Route(
    "POST",
    plain_text=False,
    no_token="Unauthorized: missing x-siro-auth-token header",
    bad_token="Unauthorized: invalid or expired access token",
    spends_token=True,
)
_LISTING = _Route(
    "GET",
    plain_text=True,
    no_token="Unauthorized: invalid or missing access token",
    bad_token="Unauthorized: invalid or missing access token",
    spends_token=False,
)


class RateLimiter:
    """Siro's per-token rate limit: a sliding window over the requests it accepted.

    One per emulator, asked by both routes: listing and signing spend the same budget.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )

    def admit(self, token: str, limit: int | None, window: float) -> bool:
        """Whether `token` may make one more request now (None: no limit); if so, count it."""
        now = time.monotonic()
        with self._lock:
            accepted = self._windows[token]
            while accepted and accepted[0] <= now - window:
                accepted.popleft()
            if limit is not None and len(accepted) >= limit:
                return False
            accepted.append(now)
            return True


class ApiHandler(Handler):
    """Both API routes: counted, delayed by `Faults.api_latency`, then checked and answered."""

    def do_POST(self) -> None:
        self._route()

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_POST

    def __getattr__(self, name: str) -> Any:
        # Any other method (OPTIONS, TRACE, QUERY, ...) is routed too, to a JSON 405 with
        # ``Allow``: never http.server's HTML 501 page.
        if name.startswith("do_"):
            return self._route
        raise AttributeError(name)

    def _route(self) -> None:
        path = self.path.partition("?")[0]
        if oauth.serves(path):  # the organisation API: its own token, its own body
            self.emu.stats.count_mint()
            oauth.answer(self, path)
            return
        self.drain_body()
        rec_id = _parse_api_path(path)
        emu = self.emu
        emu.stats.count_api(rec_id, self.request_headers())
        if emu.faults.api_latency > 0:
            emu.wait(emu.faults.api_latency)
        if path == LIST_PATH:
            emu.stats.count_listing()
            if self._admitted(_LISTING):
                self._list()
        elif rec_id is None:
            self._json(404, {"error": "Not Found"})
        elif self._admitted(_SIGNED_URL):
            self._sign(rec_id)

    def _admitted(self, route: _Route) -> bool:
        """The checks both routes make, in order: method, token, rate limit; False if refused."""
        emu = self.emu
        token = self.headers.get(TOKEN_HEADER)
        if self.command != route.method:
            self._fail(route, 405, "Method Not Allowed", {"Allow": route.method})
        elif token is None:
            self._fail(route, 401, route.no_token)
        elif token not in emu.tokens or (route.spends_token and not emu.spend_token(token)):
            self._fail(route, 401, route.bad_token)
        elif not emu.admit(token):
            self._too_many(route)
        else:
            return True
        return False

    def _too_many(self, route: _Route) -> None:
        """The one 429 of both routes: counted, with Retry-After when the switch sets one."""
        self.emu.stats.count_rate_limited()
        retry_after = self.emu.faults.retry_after
        headers = {} if retry_after is None else {"Retry-After": retry_after}
        self._fail(route, 429, _API_MESSAGES[429], headers)

    def _fail(
        self, route: _Route, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer an error in the route's shape: plain text, or JSON ``{"error": message}``."""
        if route.plain_text:
            self.answer(status, message.encode(), "text/plain; charset=utf-8", headers)
        else:
            self._json(status, {"error": message}, headers)

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        self.answer(status, json.dumps(payload).encode(), "application/json", headers)

    def _error(self, status: int) -> None:
        """Answer `status` on the signedUrl route with the body Siro documents for it."""
        if status == 422:
            self._json(422, ZOD_ERROR)
        elif status == 429:
            self._too_many(_SIGNED_URL)
        elif status == 503 and self.emu.faults.retry_after is not None:  # "come back later"
            message = _API_MESSAGES.get(status) or phrase(status)
            self._fail(_SIGNED_URL, status, message, {"Retry-After": self.emu.faults.retry_after})
        else:
            self._fail(_SIGNED_URL, status, _API_MESSAGES.get(status) or phrase(status))

    def _sign(self, rec_id: str) -> None:
        """The signedUrl route once the request is admitted: fault switches, then a URL."""
        emu, faults = self.emu, self.emu.faults
        if rec_id == "":
            self._json(422, ZOD_ERROR)
            return
        status = emu.next_transient(faults.transient, rec_id)
        if status is not None:
            self._error(status)
            return
        if rec_id in faults.redirect:
            status, location = faults.redirect_status, faults.redirect[rec_id]
            self._json(status, {"error": phrase(status)}, {"Location": location})
            return
        if rec_id in faults.api_status:
            self._error(faults.api_status[rec_id])
            return
        not_ready = rec_id in faults.api_error_payload
        if not_ready or faults.not_ready_until.get(rec_id, 0.0) > emu.now():
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
        url, expiration = emu.sign_url(recording)
        self._json(200, {"data": {"error": False, "url": url, "expiration": expiration}})

    def _list(self) -> None:
        """The listing route once the request is admitted: one page, or a plain-text 400/403."""
        try:
            page = list_page(list(self.emu.recordings.values()), self.path.partition("?")[2])
        except ListingError as exc:
            self._fail(_LISTING, exc.status, exc.message)
            return
        self._json(200, page)

    def _malformed(self, kind: str) -> None:
        if kind == "html":
            page = HTML_PAGE.format(title="Just a moment...").encode()
            self.answer(200, page, "text/html; charset=utf-8")
        elif kind == "not_json":
            self.answer(200, b'{"data": {"error": false, "url": "https://stor', "application/json")
        elif kind == "no_url":
            self._json(200, {"data": {"error": False}})
        else:
            logger.error("unknown api_malformed kind %r", kind)
            self._json(500, {"error": f"emulator: unknown api_malformed kind {kind!r}"})


def _parse_api_path(raw_path: str) -> str | None:
    """The decoded id of ``/v1/core/recordings/{id}/signedUrl``, or None for another path."""
    if not (
        raw_path.startswith(API_PREFIX)
        and raw_path.endswith(API_SUFFIX)
        and len(raw_path) >= len(API_PREFIX) + len(API_SUFFIX)
    ):
        return None
    segment = raw_path[len(API_PREFIX) : len(raw_path) - len(API_SUFFIX)]
    return None if "/" in segment else unquote_raw(segment)
