"""The API's clock and this machine's: how far apart they are, and when a signed URL expires.

An analyst's laptop or VM may be minutes or hours off (a VM or WSL after a sleep, no time
sync). Its clock must not decide that a URL has expired: storage does, by refusing it. What
this machine can know of the API's clock it measures here, from the ``Date`` header of the
API's answers or, when there is none, from the moment a GCS V4 signed URL says it was signed
(``X-Goog-Date``). That URL also states its own lifetime (``X-Goog-Expires``): an independent
reading of the API's ``expiration``, whose unit Siro does not document.

Nothing here logs or returns a URL's query: it holds the signature.
"""

from __future__ import annotations

import email.utils
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit

import pandas as pd

log = logging.getLogger(__name__)

#: An ``expiration`` above this is epoch milliseconds, not seconds (1e11 s is year 5138).
MILLISECONDS_THRESHOLD = 1e11
#: The API's clock and ours further apart than this earn one warning per client.
SKEW_WARNING_SECONDS = 60.0
#: The API's ``expiration`` and the URL's own expiry agree when this close.
AGREEMENT_SECONDS = 60.0
_GOOG_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
#: The units an epoch number may be in, per second.
_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def parse_expiration(value: object) -> pd.Timestamp | None:
    """Siro's ``expiration`` (no unit documented) as a UTC timestamp.

    Epoch seconds or milliseconds are told apart by size; :func:`cross_checked`
    corrects that guess when the signed URL states its own lifetime.

    Examples
    --------
    >>> parse_expiration(1767225600)
    Timestamp('2026-01-01 00:00:00+0000', tz='UTC')
    >>> parse_expiration(1767225600000)
    Timestamp('2026-01-01 00:00:00+0000', tz='UTC')
    >>> parse_expiration("2026-01-01T00:00:00Z")
    Timestamp('2026-01-01 00:00:00+0000', tz='UTC')
    >>> parse_expiration(None) is None
    True
    """
    if isinstance(value, str):  # the spec says number; a string is read too, not lost
        try:
            value = float(value)
        except ValueError:
            try:
                stamp = pd.Timestamp(value)
            except ValueError:
                return None
            if pd.isna(stamp):
                return None
            return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    number = _number(value)
    if number is None:
        return None
    return _epoch(number, "ms" if number > MILLISECONDS_THRESHOLD else "s")


@dataclass(frozen=True)
class Lifetime:
    """What a GCS V4 signed URL says of itself: when it was signed and when it expires (UTC).

    Both by the clock of whoever signed it: the API's side, not this machine's.
    """

    signed_at: pd.Timestamp
    expires: pd.Timestamp

    @classmethod
    def of(cls, url: str) -> Lifetime | None:
        """The lifetime ``X-Goog-Date`` and ``X-Goog-Expires`` state; None if they do not.

        Examples
        --------
        >>> Lifetime.of("https://s/o?X-Goog-Date=20250601T120000Z&X-Goog-Expires=900&X-Goog-Signature=ab")
        Lifetime(signed_at=Timestamp('2025-06-01 12:00:00+0000', tz='UTC'), expires=Timestamp('2025-06-01 12:15:00+0000', tz='UTC'))
        >>> Lifetime.of("https://s/o?X-Goog-Date=soon&X-Goog-Expires=900") is None
        True
        """  # noqa: E501
        query = dict(parse_qsl(urlsplit(url).query))
        expires = query.get("X-Goog-Expires", "")
        try:
            date = datetime.strptime(query.get("X-Goog-Date", ""), _GOOG_DATE_FORMAT)
        except ValueError:
            return None
        if not expires.isdigit():
            return None
        signed_at = pd.Timestamp(date.replace(tzinfo=timezone.utc))
        return cls(signed_at, signed_at + pd.Timedelta(seconds=int(expires)))


def cross_checked(value: object, stated: Lifetime | None) -> pd.Timestamp | None:
    """The API's ``expiration`` as an instant, its unit checked against the URL's own lifetime.

    The size of the number says seconds or milliseconds; the URL, when it states its
    lifetime, says independently when it expires. When the two disagree and reading the
    number in another unit (s, ms, µs, ns) makes them agree, the number was misread: that
    reading is returned, logged at debug. Otherwise the API's instant stands as read: it is
    what the manifest records.

    Examples
    --------
    >>> stated = Lifetime.of("https://s/o?X-Goog-Date=20260101T000000Z&X-Goog-Expires=0")
    >>> cross_checked(1767225600 * 10**6, stated)  # microseconds, taken for milliseconds by size
    Timestamp('2026-01-01 00:00:00+0000', tz='UTC')
    """
    parsed = parse_expiration(value)
    number = _number(value) if not isinstance(value, str) else _number(_float(value))
    if stated is None or number is None:
        return parsed
    target = stated.expires.timestamp()
    if parsed is not None and abs(parsed.timestamp() - target) <= AGREEMENT_SECONDS:
        return parsed
    for unit, per_second in _UNITS.items():
        if abs(number / per_second - target) <= AGREEMENT_SECONDS:
            log.debug(
                "expiration %r read as epoch %s: the signed URL's own lifetime says so", value, unit
            )
            return _epoch(number, unit)
    log.debug("expiration %r differs from the signed URL's own lifetime; the API's is kept", value)
    return parsed


def skew_from_date(header: str | None, received: float) -> float | None:
    """The API's clock minus ours, in whole seconds, from the ``Date`` of an answer.

    Parameters
    ----------
    header : str or None
        The answer's ``Date`` header (an HTTP date: whole seconds, rounded down).
    received : float
        Our epoch seconds when the answer came.

    Examples
    --------
    >>> skew_from_date("Sun, 01 Jun 2025 12:00:00 GMT", 1748779200.4)
    0.0
    >>> skew_from_date("Sun, 01 Jun 2025 12:00:00 GMT", 1748775600.0)
    3600.0
    >>> skew_from_date("not a date", 0.0) is None
    True
    """
    if not header:
        return None
    try:
        sent = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=timezone.utc)
    return _whole_seconds(sent.timestamp(), received)


def skew_from_url(stated: Lifetime | None, received: float) -> float | None:
    """The API's clock minus ours, in whole seconds, from when the URL says it was signed."""
    if stated is None:
        return None
    return _whole_seconds(stated.signed_at.timestamp(), received)


def describe_skew(skew: float) -> str:
    """The warning a skew earns, in words: by how much, and which way.

    Examples
    --------
    >>> describe_skew(3600)
    "this machine's clock is 1 h 00 min behind the API's; signed URLs are judged by storage, not by this clock"
    >>> describe_skew(-95)[:45]
    "this machine's clock is 1 min 35 s ahead of t"
    """  # noqa: E501
    way = "behind" if skew > 0 else "ahead of"
    return (
        f"this machine's clock is {_amount(skew)} {way} the API's; "
        "signed URLs are judged by storage, not by this clock"
    )


class ApiClock:
    """What one client has seen of the API's clock: the latest skew, and a single warning.

    Shared by the client's threads; every answer may update the skew, only the first
    skew over :data:`SKEW_WARNING_SECONDS` is logged as a warning.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._skew: float | None = None
        self._warned = False

    @property
    def skew(self) -> float | None:
        """The API's clock minus ours in seconds (positive: ours is behind); None until measured."""
        return self._skew

    def observe(self, skew: float | None) -> None:
        """Keep a measured skew (None: nothing was measured); warn once if it is large."""
        if skew is None:
            return
        with self._lock:
            self._skew = skew
            if self._warned or abs(skew) <= SKEW_WARNING_SECONDS:
                return
            self._warned = True
        log.warning("%s", describe_skew(skew))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _epoch(number: float, unit: str) -> pd.Timestamp | None:
    """``number`` epoch ``unit``s as a UTC timestamp; None when pandas cannot hold it."""
    try:
        return pd.Timestamp(number, unit=unit, tz="UTC")
    except (OverflowError, ValueError):  # OutOfBoundsDatetime is a ValueError
        return None


def _whole_seconds(theirs: float, received: float) -> float:
    """Their whole-second stamp (rounded down when made) against our clock: the middle of its
    second, so that two clocks that agree differ by 0.
    """
    return float(round(theirs + 0.5 - received))


def _amount(seconds: float) -> str:
    """``1 h 00 min``, ``1 min 35 s``, ``42 s``."""
    total = round(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
