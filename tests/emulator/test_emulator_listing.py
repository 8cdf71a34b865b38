"""The emulator's recordings listing: paging, filters, order, plain-text errors, shared limit."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import requests
from support import TOKEN

from siro_data.emulator import Emulator, Recording
from siro_data.emulator.samples import ORGANIZATION_ID, SAMPLE_DATES_END
from siro_data.sessions import TOKEN_HEADER

from .helpers import sign

LIST_FIELDS = {
    "id": str,
    "dateCreated": str,
    "title": str,
    "userId": str,
    "repFirstName": str,
    "repLastName": str,
    "durationInMilliseconds": int,
    "result": str,
    "isPrivate": bool,
    "discoverable": bool,
    "isVideo": bool,
    "trigger": str,
}


def list_recordings(emu: Emulator, token: str | None = TOKEN, **params) -> requests.Response:
    headers = {} if token is None else {TOKEN_HEADER: token}
    return requests.get(f"{emu.api_url}/v1/core/recordings", params, headers=headers, timeout=5)


def listed(emu: Emulator, **params) -> list[dict]:
    """Every item of a listing, following the cursor."""
    items, cursor = [], params.pop("cursor", None)
    for _ in range(100):
        response = list_recordings(emu, **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "cursor"}
        items += body["data"]
        cursor = body["cursor"]
        if cursor is None:
            return items
    raise AssertionError("the cursor never ran out")


def created(rec: Recording) -> str:
    return rec.date_created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rec.date_created:%f}"[:3] + "Z"


def test_listing_follows_the_cursor_newest_first(emulator: Emulator, recordings) -> None:
    first = list_recordings(emulator, limit=5)
    assert first.status_code == 200 and first.headers["Content-Type"] == "application/json"
    assert len(first.json()["data"]) == 5 and isinstance(first.json()["cursor"], str)
    items = listed(emulator, limit=5)
    assert emulator.stats.listing_requests == 1 + 3  # pages of 5, 5 and 2
    assert [item["id"] for item in items] == sorted(
        recordings, key=lambda rec_id: recordings[rec_id].date_created, reverse=True
    )
    for item in items:
        rec = recordings[item["id"]]
        assert {name: type(value) for name, value in item.items()} == LIST_FIELDS
        assert item["dateCreated"] == created(rec)
        assert item["durationInMilliseconds"] == rec.duration_ms_api
        assert item["title"] == rec.title and item["userId"] == rec.user_id
        assert item["result"] == rec.result
    assert listed(emulator) == items  # one page of 100 by default
    assert list_recordings(emulator).json()["cursor"] is None


def test_listing_date_filters_are_exclusive(emulator: Emulator, recordings) -> None:
    newest_first = sorted(recordings.values(), key=lambda rec: rec.date_created, reverse=True)
    pivot = newest_first[3]
    newer = [rec.id for rec in newest_first[:3]]
    older = [rec.id for rec in newest_first[4:]]
    ids = lambda **params: [item["id"] for item in listed(emulator, **params)]  # noqa: E731
    assert ids(**{"dateCreated:gt": created(pivot)}) == newer
    assert ids(**{"dateCreated:lt": created(pivot)}) == older
    one_ms = pivot.date_created - timedelta(milliseconds=1)
    assert ids(**{"dateCreated:gt": one_ms.isoformat()}) == [*newer, pivot.id]
    window = {"dateCreated:gt": created(newest_first[5]), "dateCreated:lt": created(pivot)}
    assert ids(**window) == [rec.id for rec in newest_first[4:5]]
    assert ids(**{"dateCreated:gt": "2030-01-01T00:00:00.000Z"}) == []
    naive = pivot.date_created.replace(tzinfo=None).isoformat()  # read as UTC
    assert ids(**{"dateCreated:lt": naive}) == older


def test_listing_filters_and_order(emulator: Emulator, recordings) -> None:
    def ids(**params) -> list[str]:
        return [item["id"] for item in listed(emulator, **params)]

    north = {rec.id for rec in recordings.values() if rec.team_id == "team_north"}
    assert north and set(ids(teamId="team_north")) == north
    two = {rec.id for rec in recordings.values() if rec.team_id in ("team_north", "team_south")}
    assert set(ids(teamId="team_north,team_south")) == two and two != north
    assert ids(teamId="team_nowhere") == []
    closed = {rec.id for rec in recordings.values() if rec.result == "closed"}
    assert closed and set(ids(result="closed")) == closed
    follow_ups = {rec.id for rec in recordings.values() if rec.conversation_type == "Follow-up"}
    assert follow_ups and set(ids(conversationType="Follow-up")) == follow_ups
    assert ids(organizationId=ORGANIZATION_ID, crmLinkStatus="unlinked") == ids()
    assert ids(orderDirection="asc", limit=5) == ids()[::-1]
    by_team = ids(orderBy="teamId", orderDirection="asc", limit=4)
    assert [recordings[i].team_id for i in by_team] == sorted(
        recordings[i].team_id for i in recordings
    )


def test_listing_cursor_neither_repeats_nor_skips_when_recordings_arrive(
    emulator: Emulator, recordings
) -> None:
    page = list_recordings(emulator, limit=4).json()
    template = next(iter(recordings.values()))
    emulator.add_recording(
        dataclasses.replace(template, id="brand-new", date_created=SAMPLE_DATES_END)
    )
    rest = listed(emulator, limit=4, cursor=page["cursor"])
    seen = [item["id"] for item in page["data"] + rest]
    assert sorted(seen) == sorted(recordings) and "brand-new" not in seen
    assert listed(emulator, limit=4)[0]["id"] == "brand-new"


def test_listing_errors_are_plain_text(emulator: Emulator) -> None:
    for token in (None, "wrong"):
        response = list_recordings(emulator, token=token)
        assert response.status_code == 401 and response.text.startswith("Unauthorized")
        assert response.headers["Content-Type"].startswith("text/plain")
    bad = [
        ({"limit": "0"}, 400, "Invalid limit"),
        ({"limit": "101"}, 400, "Invalid limit"),
        ({"limit": "ten"}, 400, "Invalid limit"),
        ({"dateCreated:gt": "yesterday"}, 400, "Invalid dateCreated:gt"),
        ({"dateCreated[lt]": "2025-01-01"}, 400, "Unknown query parameter"),
        ({"cursor": "not-a-cursor"}, 400, "Invalid cursor"),
        ({"orderBy": "title"}, 400, "Invalid orderBy"),
        ({"orderDirection": "up"}, 400, "Invalid orderDirection"),
        ({"showFollowups": "yes"}, 400, "Invalid showFollowups"),
        ({"organizationId": "org_other"}, 403, "Forbidden"),
    ]
    for params, status, message in bad:
        response = list_recordings(emulator, **params)
        assert (response.status_code, response.text[: len(message)]) == (status, message), params
        assert response.headers["Content-Type"].startswith("text/plain")
    descending = list_recordings(emulator, limit=2).json()["cursor"]
    mismatch = list_recordings(emulator, limit=2, orderDirection="asc", cursor=descending)
    assert mismatch.status_code == 400 and "another orderBy" in mismatch.text
    post = requests.post(f"{emulator.api_url}/v1/core/recordings", headers={TOKEN_HEADER: TOKEN})
    assert post.status_code == 405 and post.headers["Allow"] == "GET"
    assert emulator.stats.listing_requests == 2 + len(bad) + 3


def test_listing_shares_the_rate_limit_with_signing(emulator: Emulator, rid: str) -> None:
    emulator.faults.rate_limit = 2
    emulator.faults.rate_window = 30.0  # long: a slow machine cannot let requests leave it
    assert list_recordings(emulator).status_code == 200
    assert sign(emulator, rid).status_code == 200
    limited = list_recordings(emulator)
    assert (limited.status_code, limited.text) == (429, "Too Many Requests")
    assert "Retry-After" not in limited.headers
    emulator.faults.retry_after = "3"
    assert list_recordings(emulator).headers["Retry-After"] == "3"
    assert sign(emulator, rid).status_code == 429
    assert emulator.stats.rate_limited == 3
    assert emulator.stats.listing_requests == 3 and emulator.stats.api_requests == 5
    emulator.faults.rate_window = 0.05
    time.sleep(0.06)  # the window slides: the accepted requests have left it
    assert list_recordings(emulator).status_code == 200
