"""HTTP machinery shared by the API client and the downloader.

One place decides the User-Agent, the timeouts, the retry policy (urllib3
``Retry``: backoff with jitter, ``Retry-After`` honoured) and how secrets are
kept out of messages and logs.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from ._version import __version__

USER_AGENT = f"siro-data/{__version__}"
TOKEN_HEADER = "x-siro-auth-token"
#: (connect, read) seconds: a stalled server never hangs a run.
DEFAULT_TIMEOUT = (10.0, 60.0)
#: Statuses worth another try: rate limiting and passing server trouble.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})

_QUERY = re.compile(r"\?[^\s'\"<>]*")
_POOL_PREFIX = re.compile(r"^\w+\([^)]*\):\s*")
#: Secrets shorter than this are not real tokens; replacing them would garble messages.
_MIN_SECRET_LENGTH = 8


def redact(text: str, *secrets: str | None) -> str:
    """Strip URL query strings (signatures) and the given secrets from ``text``.

    Examples
    --------
    >>> redact("GET https://s.example/a.m4a?X-Goog-Signature=abc failed")
    'GET https://s.example/a.m4a?<redacted> failed'
    >>> redact("bad token tok12345", "tok12345")
    'bad token <redacted>'
    """
    text = _QUERY.sub("?<redacted>", text)
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET_LENGTH:
            text = text.replace(secret, "<redacted>")
    return text


def describe_error(exc: BaseException, *secrets: str | None) -> str:
    """A network exception as short text, its root cause first, with no URL query or secret.

    Examples
    --------
    >>> import requests
    >>> describe_error(requests.ConnectionError("Connection refused"))
    'ConnectionError: Connection refused'
    """
    root = exc.args[0] if exc.args and isinstance(exc.args[0], MaxRetryError) else exc
    cause = getattr(root, "reason", None) or root
    text = _POOL_PREFIX.sub("", str(cause))
    return redact(f"{type(exc).__name__}: {text}", *secrets)


def retry_policy(attempts: int = 5, backoff: float = 0.5, retry_after_max: float = 300) -> Retry:
    """The retry policy for every request: transient failures only, bounded.

    POST is included because asking for a signed URL has no side effect.
    ``raise_on_status=False`` hands back the last answer, so that its own
    message can land in the manifest.
    """
    return Retry(
        total=attempts,
        connect=attempts,
        read=attempts,
        status=attempts,
        other=0,
        redirect=False,
        allowed_methods=frozenset({"GET", "HEAD", "POST"}),
        status_forcelist=TRANSIENT_STATUSES,
        backoff_factor=backoff,
        backoff_jitter=backoff,
        backoff_max=30,
        retry_after_max=int(retry_after_max),
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def make_session(retries: Retry | None = None, pool_size: int = 4) -> requests.Session:
    """A Session with our User-Agent, the retry policy and a connection pool."""
    session = requests.Session()
    adapter = HTTPAdapter(
        max_retries=retries or retry_policy(), pool_connections=4, pool_maxsize=pool_size
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


class ThreadSessions:
    """One Session per thread, so that workers reuse connections without sharing state.

    ``requests.Session`` is not documented as thread-safe; a Session per worker
    thread keeps one kept-alive connection per host per worker.
    """

    def __init__(self, retries: Retry | None = None) -> None:
        self._retries = retries
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        """This thread's Session, made on first use."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = make_session(self._retries)
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def __iter__(self) -> Iterator[requests.Session]:
        with self._lock:
            return iter(list(self._all))

    def close(self) -> None:
        """Close every thread's Session."""
        for session in self:
            session.close()


class _RedactQueryFilter(logging.Filter):
    """Keeps signed-URL query strings out of urllib3's DEBUG log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        record.msg = redact(str(record.msg))
        return True


# Every urllib3 logger that writes a request's URL: the pool's request lines, the retry
# counter's "Incremented Retry for (url=...)", header-parsing warnings, redirects.
for _name in ("connectionpool", "util.retry", "connection", "poolmanager"):
    logging.getLogger(f"urllib3.{_name}").addFilter(_RedactQueryFilter())
