"""list_recordings: Siro's recordings listing as a typed table, ready for ``fetch_all``.

Arguments are checked and turned into Siro's query parameters here; the requests (token,
pacing, retries, cursor) are :meth:`SiroClient.list_pages`'s.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from .client import SiroClient, opened
from .sessions import DEFAULT_TIMEOUT
from .tokens import TokenSource

log = logging.getLogger(__name__)

#: The largest page Siro serves.
MAX_PAGE_SIZE = 100

#: Column → dtype of the table ``list_recordings`` returns, in order.
LISTING_COLUMNS: dict[str, str] = {
    "recording_id": "string",
    "date_created": "datetime64[ns, UTC]",
    "title": "string",
    "user_id": "string",
    "rep_first_name": "string",
    "rep_last_name": "string",
    "duration_api": "float64",
    "result": "string",
    "is_private": "boolean",
    "is_video": "boolean",
    "discoverable": "boolean",
    "trigger": "string",
}

#: Column → the field of a listing item it comes from (``date_created`` and
#: ``duration_api`` are converted).
_FIELDS = {
    "recording_id": "id",
    "date_created": "dateCreated",
    "title": "title",
    "user_id": "userId",
    "rep_first_name": "repFirstName",
    "rep_last_name": "repLastName",
    "duration_api": "durationInMilliseconds",
    "result": "result",
    "is_private": "isPrivate",
    "is_video": "isVideo",
    "discoverable": "discoverable",
    "trigger": "trigger",
}

#: What ``since`` and ``until`` take (a ``datetime`` or ``Timestamp`` is a ``date`` too).
DateLike = str | dt.date | dt.datetime | pd.Timestamp | np.datetime64


def list_recordings(
    since: DateLike | None = None,
    until: DateLike | None = None,
    team_id: str | Iterable[str] | None = None,
    organization_id: str | None = None,
    conversation_type: str | Iterable[str] | None = None,
    result: str | None = None,
    token: TokenSource | None = None,
    api_url: str | None = None,
    *,
    page_size: int = MAX_PAGE_SIZE,
    client: SiroClient | None = None,
    requests_per_minute: int = 1000,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
) -> pd.DataFrame:
    """The recordings the token can see, one row each, following Siro's pages to the end.

    Parameters
    ----------
    since, until : datetime-like, optional
        Only recordings created strictly after ``since`` and strictly before ``until``
        (Siro's ``dateCreated:gt`` and ``dateCreated:lt``: both bounds are exclusive). A
        ``datetime``, ``date`` (its midnight), pandas ``Timestamp``, ``numpy.datetime64``
        or ISO 8601 string; a value without a time zone is taken as UTC. Siro takes and
        gives dates to the millisecond: finer bounds are sent rounded outwards (``since``
        down, ``until`` up), which loses no recording in between.
    team_id : str or iterable of str, optional
        Only these teams' recordings.
    organization_id : str, optional
        Only this organization's recordings.
    conversation_type : str or iterable of str, optional
        Only these conversation types (by name, e.g. ``"Initial visit"``).
    result : str, optional
        Only recordings with this result (``"closed"``, ``"not closed"``, ``"in progress"``).
    token : str or callable, optional
        Siro OAuth access token, or a function returning the current one (asked again
        once after a 401). Default: ``$SIRO_AUTH_TOKEN``.
    api_url : str, optional
        Default: ``$SIRO_API_URL``, else ``https://api.siro.ai``.
    page_size : int
        Recordings per request, 1 to 100 (Siro's maximum, the default).
    client : SiroClient, optional
        A client to use instead of making one (``token``, ``api_url``,
        ``requests_per_minute`` and ``timeout`` are then ignored), e.g. to share its
        pacing with a ``fetch_all`` running at the same time.
    requests_per_minute : int
        Pacing of the requests; Siro allows 1000 per token per minute.
    timeout : (float, float)
        Connect and read timeouts in seconds.

    Returns
    -------
    pandas.DataFrame
        One row per recording, in the order Siro lists them,
        with the columns and dtypes of ``LISTING_COLUMNS``, also when empty:
        ``recording_id``, ``date_created`` (UTC), ``title``, ``user_id``,
        ``rep_first_name``, ``rep_last_name``, ``duration_api`` (seconds, from Siro's
        ``durationInMilliseconds``: compare it with the ``duration`` measured by
        ``fetch_all``), ``result``, ``is_private``, ``is_video``, ``discoverable`` and
        ``trigger``. Missing values are null. Pass it to ``fetch_all`` as it is.

    Raises
    ------
    ValueError
        A bad argument (a date that is not one, ``since`` not before ``until``, a page
        size out of range, no token), before any request.
    AuthError
        The token was rejected (and a provider, if any, could not renew it).
    SiroAPIError
        Any other refusal, with the status and the server's own message.

    Examples
    --------
    >>> from siro_data.emulator import Emulator
    >>> with Emulator(token="tok-example") as emu:
    ...     mid_may = list_recordings("2025-05-10", "2025-05-20", token="tok-example",
    ...                               api_url=emu.api_url)
    >>> mid_may[["recording_id", "title", "duration_api"]].head(2)
               recording_id                                title  duration_api
    0  qJn9zoCPR5LjLyKxtITX  Kitchen remodel: Kowalski residence        39.515
    1  iGmkCxIiN7JRFJQdfb2v    Solar consultation: Lee residence        23.283
    >>> mid_may.date_created.min() > pd.Timestamp("2025-05-10", tz="UTC")
    True
    """
    params = recording_query(
        since=since,
        until=until,
        team_id=team_id,
        organization_id=organization_id,
        conversation_type=conversation_type,
        result=result,
        page_size=page_size,
    )
    items: list[Mapping[str, Any]] = []
    settings = {"requests_per_minute": requests_per_minute, "timeout": timeout}
    with opened(client, token, api_url, **settings) as api:
        for number, page in enumerate(api.list_pages(params), start=1):
            items.extend(page)
            log.info("recordings page %d: %d items, %d so far", number, len(page), len(items))
    return recordings_frame(items)


def recording_query(
    since: DateLike | None = None,
    until: DateLike | None = None,
    team_id: str | Iterable[str] | None = None,
    organization_id: str | None = None,
    conversation_type: str | Iterable[str] | None = None,
    result: str | None = None,
    page_size: int = MAX_PAGE_SIZE,
) -> dict[str, str]:
    """Siro's query parameters for a listing, checked (the arguments of ``list_recordings``).

    Raises
    ------
    ValueError
        A bad argument, named.

    Examples
    --------
    >>> recording_query("2025-01-01", "2025-02-01T12:00+01:00", team_id=["t1", "t2"])
    ... # doctest: +NORMALIZE_WHITESPACE
    {'limit': '100', 'dateCreated:gt': '2025-01-01T00:00:00.000Z',
     'dateCreated:lt': '2025-02-01T11:00:00.000Z', 'teamId': 't1,t2'}
    """
    if isinstance(page_size, bool) or not isinstance(page_size, int | np.integer):
        raise ValueError(f"page_size must be a whole number, got {type(page_size).__name__}")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be from 1 to {MAX_PAGE_SIZE}, got {page_size}")
    params = {"limit": str(int(page_size))}
    lower, upper = as_utc("since", since), as_utc("until", until)
    if lower is not None and upper is not None and lower >= upper:
        raise ValueError(
            f"since ({lower.isoformat()}) must be before until ({upper.isoformat()}): "
            "both bounds are exclusive"
        )
    if lower is not None:
        params["dateCreated:gt"] = wire_date(lower, up=False)
    if upper is not None:
        params["dateCreated:lt"] = wire_date(upper, up=True)
    for name, key, value, many in (
        ("team_id", "teamId", team_id, True),
        ("organization_id", "organizationId", organization_id, False),
        ("conversation_type", "conversationType", conversation_type, True),
        ("result", "result", result, False),
    ):
        if value is not None:
            params[key] = _names(name, value, many)
    return params


def recordings_frame(items: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Listing items (as Siro sends them) as a table with ``LISTING_COLUMNS``' dtypes.

    A recording listed twice (a page boundary moving under new recordings) is kept once.

    Examples
    --------
    >>> frame = recordings_frame([{"id": "r1", "dateCreated": "2025-05-01T10:00:00.000Z",
    ...                            "durationInMilliseconds": 61500, "isVideo": False}])
    >>> frame.at[0, "date_created"], float(frame.at[0, "duration_api"])
    (Timestamp('2025-05-01 10:00:00+0000', tz='UTC'), 61.5)
    >>> frame.at[0, "title"] is pd.NA, bool(frame.at[0, "is_video"])
    (True, False)
    >>> recordings_frame([]).dtypes["date_created"]
    datetime64[ns, UTC]
    """
    items = list(items)
    columns: dict[str, Any] = {}
    for column, dtype in LISTING_COLUMNS.items():
        raw = [item.get(_FIELDS[column]) for item in items]
        if column == "date_created":
            values = pd.to_datetime(
                pd.Series([v if isinstance(v, str) else None for v in raw], dtype="object"),
                utc=True,
                format="ISO8601",
                errors="coerce",
            )
            unreadable = int(values.isna().sum())
            if unreadable:
                log.warning("%d recordings have no readable dateCreated", unreadable)
            columns[column] = values.astype(dtype).array
        elif column == "duration_api":
            columns[column] = np.array([_seconds(v) for v in raw], dtype=dtype)
        elif dtype == "boolean":
            columns[column] = pd.array([v if isinstance(v, bool) else None for v in raw], dtype)
        else:
            columns[column] = pd.array([_text(v) for v in raw], dtype)
    frame = pd.DataFrame(columns, columns=list(LISTING_COLUMNS))
    duplicated = frame["recording_id"].notna() & frame["recording_id"].duplicated()
    if duplicated.any():
        log.info("%d recordings were listed twice; kept once", int(duplicated.sum()))
        frame = frame[~duplicated].reset_index(drop=True)
    return frame


def as_utc(name: str, value: object) -> pd.Timestamp | None:
    """``value`` as a UTC timestamp (naive means UTC); a ValueError naming ``name`` if not."""
    if value is None:
        return None
    if isinstance(value, bool | int | float | np.number):
        raise ValueError(
            f"{name} must be a date or time (datetime, date, Timestamp, datetime64 or "
            f"ISO 8601 string), got the number {value!r}"
        )
    if not isinstance(value, str | dt.date | np.datetime64):  # datetime and Timestamp are dates
        raise ValueError(f"{name} must be a date or time, got {type(value).__name__}")
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"{name} is not a date or time: {value!r} ({exc})") from None
    if pd.isna(stamp):
        raise ValueError(f"{name} is not a date or time: {value!r}")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def wire_date(stamp: pd.Timestamp, up: bool) -> str:
    """``stamp`` in Siro's ``YYYY-MM-DDTHH:mm:ss.sssZ``, rounded to a millisecond down or up."""
    nanoseconds = stamp.as_unit("ns").value
    milliseconds = -(-nanoseconds // 1_000_000) if up else nanoseconds // 1_000_000
    stamp = pd.Timestamp(milliseconds, unit="ms", tz="UTC")
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{stamp.microsecond // 1000:03d}Z"


def _names(name: str, value: object, many: bool) -> str:
    """A filter value as Siro takes it: one name, or several joined by commas."""
    values = [value] if isinstance(value, str) or not many else value
    if not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a string or strings, got {type(value).__name__}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty: pass None for no filter")
    for one in values:
        if not isinstance(one, str) or not one.strip():
            raise ValueError(f"{name} must be non-empty strings, got {one!r}")
        if many and "," in one:
            raise ValueError(f"{name} {one!r} holds a comma: pass several as a list")
    return ",".join(values)


def _text(value: object) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return value / 1000
