"""The Siro API client: one recording id → one signed URL; the recordings listing, page by page.

Holds the machinery a long run needs: the token (or a provider that mints a
fresh one after a 401), pacing under the rate limit, retries of transient
failures, a Session per thread, and error messages that carry the server's
own words but never a secret.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import pandas as pd
import requests
from urllib3.util.retry import Retry

from .clock import ApiClock, Lifetime, cross_checked, skew_from_date, skew_from_url
from .exceptions import AuthError, SiroAPIError
from .ratelimit import RateLimiter
from .sessions import (
    DEFAULT_TIMEOUT,
    TOKEN_HEADER,
    ThreadSessions,
    describe_error,
    redact,
    retry_policy,
)
from .tokens import Token, TokenSource, resolve_token

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.siro.ai"
API_URL_ENV = "SIRO_API_URL"
RECORDINGS_PATH = "/v1/core/recordings"


@dataclass(frozen=True)
class SignedURL:
    """A short-lived URL to a recording's audio. Its repr hides the signature.

    Attributes
    ----------
    url : str
        The signed URL itself: a secret until it expires.
    expiration : pandas.Timestamp or None
        When it expires (UTC), if the API said: an instant by the API's clock.
    clock_skew : float
        The API's clock minus this machine's, in seconds, as measured when it was signed
        (positive: this machine's clock is behind). Whether the URL has expired is judged
        on the API's clock, never on this machine's alone.
    """

    url: str = field(repr=False)
    expiration: pd.Timestamp | None = None
    clock_skew: float = 0.0

    def expires_within(self, seconds: float) -> bool:
        """Whether the URL is expired, or will be in ``seconds``, by the API's clock.

        The API's "now" is this machine's clock plus ``clock_skew``. Storage alone says
        for sure that a URL has expired: this is for a URL held a while that storage
        refused without saying why, never a reason not to try a fresh one.
        """
        if self.expiration is None:
            return False
        api_now = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=self.clock_skew)
        return self.expiration <= api_now + pd.Timedelta(seconds=seconds)

    def __repr__(self) -> str:
        parts = urlsplit(self.url)
        where = f"{parts.scheme}://{parts.netloc}{parts.path}?<redacted>"
        return f"SignedURL({where}, expiration={self.expiration})"


def resolve_api_url(api_url: str | None) -> str:
    """The API URL given, else ``$SIRO_API_URL``, else Siro's public API."""
    url = (api_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"api_url must be an http(s) URL, got {url!r}")
    return url


def signed_url_path(recording_id: str) -> str:
    """The endpoint's path, with the id percent-encoded as one path segment.

    A dot-only id is encoded too, so that no client normalises it away as ``.``/``..``.

    Examples
    --------
    >>> signed_url_path("a/b c")
    '/v1/core/recordings/a%2Fb%20c/signedUrl'
    >>> signed_url_path("..")
    '/v1/core/recordings/%2E%2E/signedUrl'
    """
    segment = quote(recording_id, safe="")
    if set(recording_id) <= {"."}:
        segment = segment.replace(".", "%2E")
    return f"/v1/core/recordings/{segment}/signedUrl"


class SiroClient:
    """Asks Siro for signed URLs and recordings, paced, retried and safe to share between threads.

    Parameters
    ----------
    token : str or callable, optional
        The OAuth access token, or a zero-argument function returning the
        current one (called again once after a 401: Siro's tokens last 16
        hours), such as :class:`siro_data.TokenMinter`. Default:
        ``$SIRO_AUTH_TOKEN``, else a minter from the environment
        (:func:`siro_data.tokens.resolve_token`).
    api_url : str, optional
        Default: ``$SIRO_API_URL``, else ``https://api.siro.ai``.
    requests_per_minute : int
        Siro allows 1000 per token per minute; the client paces itself under it.
    rate_limiter : object with ``acquire()``, optional
        Replaces the built-in pacing (e.g. one limiter shared by several clients).
    timeout : (float, float)
        Connect and read timeouts in seconds.
    retries : urllib3.util.Retry, optional
        Retry policy of the API requests; default :func:`siro_data.sessions.retry_policy`.

    Examples
    --------
    >>> from siro_data.emulator import Emulator
    >>> with Emulator() as emu, SiroClient(emu.token, emu.api_url) as client:
    ...     signed = client.sign(next(iter(emu.recordings)))
    >>> signed.url.startswith("http")
    True
    """

    def __init__(
        self,
        token: TokenSource | None = None,
        api_url: str | None = None,
        *,
        requests_per_minute: int = 1000,
        rate_limiter: RateLimiter | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retries: Retry | None = None,
    ) -> None:
        self.api_url = resolve_api_url(api_url)
        self._token = Token(resolve_token(token))
        self.rate_limiter = rate_limiter or RateLimiter(requests_per_minute, 60.0)
        self.timeout = timeout
        self._sessions = ThreadSessions(retries or retry_policy())
        self._clock = ApiClock()

    @property
    def clock_skew(self) -> float | None:
        """The API's clock minus this machine's, in whole seconds; None until an answer came.

        Measured on every answer from its ``Date`` header (else from when a signed URL says
        it was signed). Positive: this machine's clock is behind. Past a minute, the client
        logs one warning saying by how much. Signed URLs are judged on the API's clock, and
        a fresh one is always tried: storage, not this clock, says whether it has expired.
        """
        return self._clock.skew

    def sign(self, recording_id: str) -> SignedURL:
        """A fresh signed URL for one recording.

        Raises
        ------
        AuthError
            The token was rejected (and a provider, if any, could not renew it).
        SiroAPIError
            Any other refusal, with the status and the server's own message.
        """
        response, token = self._call("POST", signed_url_path(recording_id))
        log.debug("signedUrl %r → %s", recording_id, response.status_code)
        return self._parse(response, token)

    def list_pages(self, params: Mapping[str, str] | None = None) -> Iterator[list[dict[str, Any]]]:
        """The pages of ``GET /v1/core/recordings``, following its ``cursor`` to the end.

        Each page costs one paced request; a 401 renews the token as :meth:`sign` does, so
        a listing may outlive its token.

        Parameters
        ----------
        params : mapping of str to str, optional
            Siro's query parameters, under their own names (``limit``, ``dateCreated:gt``,
            ``teamId``, ...); a ``cursor`` among them starts from that page.
            :func:`siro_data.list_recordings` builds them from Python values.

        Yields
        ------
        list of dict
            The items of one page, as Siro sent them (possibly none).

        Raises
        ------
        AuthError
            The token was rejected (and a provider, if any, could not renew it).
        SiroAPIError
            Any other refusal, with the status and the server's own message; also an
            answer that is not the documented JSON, or a cursor that comes back again.

        Examples
        --------
        >>> from siro_data.emulator import Emulator
        >>> with Emulator(token="tok-example") as emu, SiroClient("tok-example", emu.api_url) as c:
        ...     sizes = [len(page) for page in c.list_pages({"limit": "5"})]
        >>> sizes
        [5, 5, 2]
        """
        query = dict(params or {})
        seen: set[str] = set()
        while True:
            response, token = self._call("GET", RECORDINGS_PATH, query)
            log.debug("recordings page → %s", response.status_code)
            if response.status_code != 200:
                raise SiroAPIError(response.status_code, self._message(response, token))
            items, cursor = self._parse_page(response)
            yield items
            if not cursor:
                return
            if cursor in seen:  # a server that loops would otherwise never end the listing
                raise SiroAPIError(200, "recordings listing sent a cursor it had sent before")
            seen.add(cursor)
            query["cursor"] = cursor

    def _call(
        self, method: str, path: str, params: Mapping[str, str] | None = None
    ) -> tuple[requests.Response, str]:
        """One paced request with the token, renewed once after a 401; the answer and token."""
        token = self._token.value
        response = self._request(method, path, params, token)
        if response.status_code == 401:
            token = self._token.refresh(token)  # raises when it cannot be renewed
            response = self._request(method, path, params, token)
            if response.status_code == 401:
                self._token.give_up()
                message = self._message(response, token)
                raise AuthError(401, f"the renewed token was rejected too: {message}")
        self._token.accepted(token)
        return response, token

    def _request(
        self, method: str, path: str, params: Mapping[str, str] | None, token: str
    ) -> requests.Response:
        self.rate_limiter.acquire()
        if self._token.hopeless:  # rejected while this thread waited for its slot
            raise AuthError(401, "token rejected")
        try:
            response = self._sessions.get().request(
                method,
                self.api_url + path,
                params=params,
                headers={TOKEN_HEADER: token},
                timeout=self.timeout,
                allow_redirects=False,  # a POST turned GET, or a token sent elsewhere: refuse
            )
        except requests.RequestException as exc:
            message = f"no answer from the API: {describe_error(exc, token)}"
            raise SiroAPIError(None, message) from None
        self._clock.observe(skew_from_date(response.headers.get("Date"), time.time()))
        if response.is_redirect:
            where = urlsplit(response.headers.get("Location", ""))
            origin = f"{where.scheme}://{where.netloc}" if where.netloc else "the same host"
            message = f"the API redirected to {origin}{where.path} (not followed; check api_url)"
            raise SiroAPIError(response.status_code, redact(message, token))
        return response

    def _parse(self, response: requests.Response, token: str) -> SignedURL:
        status = response.status_code
        if status != 200:
            raise SiroAPIError(status, self._message(response, token))
        try:
            data = response.json()["data"]
        except (ValueError, KeyError, TypeError):
            kind = response.headers.get("Content-Type", "no content type")
            raise SiroAPIError(200, f"signedUrl answer is not the expected JSON ({kind})") from None
        if not isinstance(data, dict):
            raise SiroAPIError(200, "signedUrl answer has no data object")
        if data.get("error"):
            message = redact(str(data.get("errorMessage") or "no message"), token)
            raise SiroAPIError(200, f"signedUrl error: {message}")
        url = data.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise SiroAPIError(200, "signedUrl answer has no usable url")
        stated = Lifetime.of(url)
        if "Date" not in response.headers:  # when the URL was signed tells the API's clock
            self._clock.observe(skew_from_url(stated, time.time()))
        expiration = cross_checked(data.get("expiration"), stated)
        return SignedURL(url, expiration, self._clock.skew or 0.0)

    @staticmethod
    def _parse_page(response: requests.Response) -> tuple[list[dict[str, Any]], str | None]:
        """A listing page's items and next cursor."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            kind = response.headers.get("Content-Type", "no content type")
            raise SiroAPIError(200, f"recordings answer is not the expected JSON ({kind})")
        items = body["data"]
        if not all(isinstance(item, dict) for item in items):
            raise SiroAPIError(200, "recordings answer has items that are not objects")
        cursor = body.get("cursor")
        if isinstance(cursor, int) and not isinstance(cursor, bool):
            cursor = str(cursor)  # the spec says string; a number is read too, not lost
        if cursor is not None and not isinstance(cursor, str):
            kind = type(cursor).__name__
            raise SiroAPIError(200, f"recordings answer has a cursor that is not a string ({kind})")
        return items, cursor

    @staticmethod
    def _message(response: requests.Response, token: str) -> str:
        """The server's own words: ``error``, a ZodError's issues, or its plain text."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("issues"), list):
            issues = [
                f"{'.'.join(map(str, issue.get('path', []))) or 'request'}: {issue.get('message')}"
                for issue in body["issues"]
                if isinstance(issue, dict)
            ]
            message = f"{body.get('name', 'validation error')}: {'; '.join(issues)}"
        elif isinstance(body, dict) and body.get("error"):
            message = str(body["error"])
        elif response.headers.get("Content-Type", "").startswith("text/plain") and response.text:
            message = response.text.strip()[:200] or response.reason or "no message"
        else:
            message = response.reason or response.text[:200].strip() or "no message"
        return redact(message, token)

    def close(self) -> None:
        """Close the connections of every thread."""
        self._sessions.close()

    def __enter__(self) -> SiroClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SiroClient(api_url={self.api_url!r}, token=<redacted>)"


def opened(
    client: SiroClient | None,
    token: TokenSource | None = None,
    api_url: str | None = None,
    *,
    requests_per_minute: int = 1000,
    rate_limiter: RateLimiter | None = None,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
) -> AbstractContextManager[SiroClient]:
    """``client`` to use in a ``with`` (the caller's: left open), or one made from the
    settings and closed on exit.

    Examples
    --------
    >>> from siro_data.emulator import Emulator
    >>> with Emulator(token="tok-example") as emu, opened(None, "tok-example", emu.api_url) as c:
    ...     pages = list(c.list_pages({"limit": "100"}))
    >>> len(pages)
    1
    """
    if client is not None:
        return nullcontext(client)
    return SiroClient(
        token,
        api_url,
        requests_per_minute=requests_per_minute,
        rate_limiter=rate_limiter,
        timeout=timeout,
    )


def sign(
    recording_id: str, token: TokenSource | None = None, api_url: str | None = None
) -> SignedURL:
    """One signed URL for one recording, with a client made for the call.

    For many recordings use :class:`SiroClient` (connections are reused) or
    :func:`siro_data.fetch_all`.

    Parameters
    ----------
    recording_id : str
        The recording's id.
    token : str or callable, optional
        Siro OAuth access token, or a function returning the current one.
        Default: ``$SIRO_AUTH_TOKEN``.
    api_url : str, optional
        Default: ``$SIRO_API_URL``, else ``https://api.siro.ai``.

    Returns
    -------
    SignedURL
        The URL (a secret until it expires: its repr hides the signature) and
        its expiration.

    Raises
    ------
    ValueError
        No token, or an ``api_url`` that is not an http(s) URL.
    AuthError
        The token was rejected.
    SiroAPIError
        Any other refusal, with the status and the server's own message.

    Examples
    --------
    >>> from siro_data.emulator import Emulator
    >>> with Emulator(token="tok-example") as emu:
    ...     signed = sign(next(iter(emu.recordings)), token="tok-example", api_url=emu.api_url)
    >>> "<redacted>" in repr(signed), signed.expiration > pd.Timestamp.now(tz="UTC")
    (True, True)
    """
    with opened(None, token, api_url) as client:
        return client.sign(recording_id)
