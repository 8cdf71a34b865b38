"""``GET /v1/core/recordings`` as Siro documents it: filters, ordering and cursor paging.

Pure functions over the emulator's recordings; the API handler (``api``) adds the token
check and the rate limit. Errors are plain text, as the spec says for this endpoint (unlike
the signed-URL endpoint's JSON).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

from .samples import ORGANIZATION_ID, Recording

LIST_PATH = "/v1/core/recordings"
MAX_LIMIT = 100
"""Largest page Siro serves (also its default)."""

_ORDER_FIELDS = {
    "dateCreated": "date_created",
    "teamId": "team_id",
    "organizationId": None,  # one organization: every key is equal
    "conversationType": "conversation_type",
    "result": "result",
}
_TRUE_FALSE = ("true", "false")
#: Documented parameters the emulator accepts and ignores: no recording has CRM links,
#: followups or evaluation scores, and the spec makes their fields optional.
_IGNORED = {"showCrmCustomer", "showEvaluationScore", "showFollowups"}
_KNOWN = {
    "limit",
    "cursor",
    "dateCreated:gt",
    "dateCreated:lt",
    "teamId",
    "organizationId",
    "conversationType",
    "result",
    "orderBy",
    "orderDirection",
    "crmLinkStatus",
    *_IGNORED,
}


class ListingError(Exception):
    """A request the endpoint refuses: its status and the plain-text message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def iso_ms(moment: datetime) -> str:
    """``moment`` in the spec's format, ``YYYY-MM-DDTHH:mm:ss.sssZ``.

    Examples
    --------
    >>> iso_ms(datetime(2025, 5, 1, 12, 0, 3, 45_678, tzinfo=timezone.utc))
    '2025-05-01T12:00:03.045Z'
    """
    moment = moment.astimezone(timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def item(recording: Recording) -> dict[str, Any]:
    """One recording as the listing shows it (the fields its schema gives)."""
    assert recording.date_created is not None
    return {
        "id": recording.id,
        "dateCreated": iso_ms(recording.date_created),
        "title": recording.title,
        "userId": recording.user_id,
        "repFirstName": recording.rep_first_name,
        "repLastName": recording.rep_last_name,
        "durationInMilliseconds": recording.duration_ms_api,
        "result": recording.result,
        "isPrivate": False,
        "discoverable": True,
        "isVideo": False,
        "trigger": "button-press",
    }


def list_page(recordings: Iterable[Recording], raw_query: str) -> dict[str, Any]:
    """The answer to one listing request: ``{"data": [...], "cursor": str | None}``.

    Recordings are ordered by ``orderBy`` (default ``dateCreated``), then creation date,
    then id, in ``orderDirection`` (default ``desc``: newest first). The cursor holds the
    last item's sort key, so a page never repeats or skips an item even when recordings
    are added between requests; it is null after the last page.

    Raises
    ------
    ListingError
        400 for an invalid parameter or cursor, 403 for another organization.

    Examples
    --------
    >>> from siro_data.emulator.samples import sample_recordings
    >>> page = list_page(sample_recordings(n=3).values(), "limit=2")
    >>> len(page["data"]), page["cursor"] is not None
    (2, True)
    >>> last = list_page(sample_recordings(n=3).values(), f"limit=2&cursor={page['cursor']}")
    >>> len(last["data"]), last["cursor"]
    (1, None)
    """
    query = _parse_query(raw_query)
    limit = _limit(query.get("limit"))
    after = _date(query, "dateCreated:gt")
    before = _date(query, "dateCreated:lt")
    organization = query.get("organizationId")
    if organization is not None and organization != ORGANIZATION_ID:
        raise ListingError(403, "Forbidden: user does not have access to this organization")
    teams = _set(query.get("teamId"))
    types = _set(query.get("conversationType"))
    result = query.get("result")
    link_status = query.get("crmLinkStatus")
    if link_status is not None and link_status != "unlinked":
        raise ListingError(400, f"Invalid crmLinkStatus: {link_status!r} (expected 'unlinked')")
    for name in _IGNORED & query.keys():
        if query[name] not in _TRUE_FALSE:
            raise ListingError(400, f"Invalid {name}: {query[name]!r} (expected true or false)")
    order_by = query.get("orderBy", "dateCreated")
    if order_by not in _ORDER_FIELDS:
        raise ListingError(400, f"Invalid orderBy: {order_by!r} (one of {sorted(_ORDER_FIELDS)})")
    direction = query.get("orderDirection", "desc")
    if direction not in ("asc", "desc"):
        raise ListingError(400, f"Invalid orderDirection: {direction!r} (asc or desc)")

    def key(recording: Recording) -> tuple[str, str, str]:
        assert recording.date_created is not None
        created = iso_ms(recording.date_created)  # fixed width: sorts as the dates do
        attribute = _ORDER_FIELDS[order_by]
        if attribute == "date_created":
            return (created, created, recording.id)
        primary = ORGANIZATION_ID if attribute is None else str(getattr(recording, attribute))
        return (primary, created, recording.id)

    def wanted(recording: Recording) -> bool:
        assert recording.date_created is not None
        created = recording.date_created
        return (
            (after is None or created > after)
            and (before is None or created < before)
            and (teams is None or recording.team_id in teams)
            and (types is None or recording.conversation_type in types)
            and (result is None or recording.result == result)
        )

    descending = direction == "desc"
    rows = sorted((key(rec), rec) for rec in recordings if wanted(rec))
    if descending:
        rows.reverse()
    if "cursor" in query:
        position = _decode_cursor(query["cursor"], order_by, direction)
        rows = [row for row in rows if (row[0] < position if descending else row[0] > position)]
    page = rows[:limit]
    cursor = _encode_cursor(page[-1][0], order_by, direction) if len(rows) > limit else None
    return {"data": [item(rec) for _, rec in page], "cursor": cursor}


def _parse_query(raw_query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=bool(raw_query))
    except ValueError:
        raise ListingError(400, "Invalid query string") from None
    query: dict[str, str] = {}
    for name, value in pairs:
        if name not in _KNOWN:
            raise ListingError(400, f"Unknown query parameter: {name!r}")
        if name in query:
            raise ListingError(400, f"Query parameter given twice: {name!r}")
        query[name] = value
    return query


def _limit(value: str | None) -> int:
    if value is None:
        return MAX_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise ListingError(400, f"Invalid limit: {value!r} (a whole number from 1 to {MAX_LIMIT})")
    return int(value)


def _date(query: dict[str, str], name: str) -> datetime | None:
    value = query.get(name)
    if value is None:
        return None
    try:
        # Python 3.10's fromisoformat does not read "Z".
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise ListingError(
            400, f"Invalid {name}: {value!r} (ISO 8601, YYYY-MM-DDTHH:mm:ss.sssZ)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _set(value: str | None) -> set[str] | None:
    """A comma-separated list as a set; None when the parameter is absent."""
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _encode_cursor(key: tuple[str, str, str], order_by: str, direction: str) -> str:
    raw = json.dumps({"key": list(key), "orderBy": order_by, "dir": direction})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, order_by: str, direction: str) -> tuple[str, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        state = json.loads(raw)
        key = tuple(str(part) for part in state["key"])
        same_order = state["orderBy"] == order_by and state["dir"] == direction
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise ListingError(400, "Invalid cursor") from None
    if len(key) != 3:
        raise ListingError(400, "Invalid cursor")
    if not same_order:
        raise ListingError(400, "Invalid cursor: it was made for another orderBy/orderDirection")
    return key  # type: ignore[return-value]
