"""The emulator's recordings listing: paging, filters, order, plain-text errors, shared limit."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import requests

from siro_data.emulator import Emulator, Recording
from siro_data.emulator.samples import ORGANIZATION_ID, SAMPLE_DATES_END

from .helpers import TOKEN, TOKEN_HEADER, sign

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


def test_listing_follows_the_cursor_newest_first(emu: Emulator, recs) -> None:
    first = list_recordings(emu, limit=5)
    assert first.status_code == 200 and first.headers["Content-Type"] == "application/json"
    assert len(first.json()["data"]) == 5 and isinstance(first.json()["cursor"], str)
    items = listed(emu, limit=5)
    assert emu.stats.listing_requests == 1 + 3  # pages of 5, 5 and 2
    assert [item["id"] for item in items] == sorted(
        recs, key=lambda rec_id: recs[rec_id].date_created, reverse=True
    )
    for item in items:
        rec = recs[item["id"]]
        assert {name: type(value) for name, value in item.items()} == LIST_FIELDS
        assert item["dateCreated"] == created(rec)
        assert item["durationInMilliseconds"] == rec.duration_ms_api
        assert item["title"] == rec.title and item["userId"] == rec.user_id
        assert item["result"] == rec.result
    assert listed(emu) == items  # one page of 100 by default
    assert list_recordings(emu).json()["cursor"] is None


def test_listing_date_filters_are_exclusive(emu: Emulator, recs) -> None:
    newest_first = sorted(recs.values(), key=lambda rec: rec.date_created, reverse=True)
    pivot = newest_first[3]
    newer = [rec.id for rec in newest_first[:3]]
    older = [rec.id for rec in newest_first[4:]]
    ids = lambda **params: [item["id"] for item in listed(emu, **params)]  # noqa: E731
    assert ids(**{"dateCreated:gt": created(pivot)}) == newer
    assert ids(**{"dateCreated:lt": created(pivot)}) == older
    one_ms = pivot.date_created - timedelta(milliseconds=1)
    assert ids(**{"dateCreated:gt": one_ms.isoformat()}) == [*newer, pivot.id]
    window = {"dateCreated:gt": created(newest_first[5]), "dateCreated:lt": created(pivot)}
    assert ids(**window) == [rec.id for rec in newest_first[4:5]]
    assert ids(**{"dateCreated:gt": "2030-01-01T00:00:00.000Z"}) == []
    naive = pivot.date_created.replace(tzinfo=None).isoformat()  # read as UTC
    assert ids(**{"dateCreated:lt": naive}) == older


def test_listing_filters_and_order(emu: Emulator, recs) -> None:
    def ids(**params) -> list[str]:
        return [item["id"] for item in listed(emu, **params)]

    north = {rec.id for rec in recs.values() if rec.team_id == "team_north"}
    assert north and set(ids(teamId="team_north")) == north
    two = {rec.id for rec in recs.values() if rec.team_id in ("team_north", "team_south")}
    assert set(ids(teamId="team_north,team_south")) == two and two != north
    assert ids(teamId="team_nowhere") == []
    closed = {rec.id for rec in recs.values() if rec.result == "closed"}
    assert closed and set(ids(result="closed")) == closed
    follow_ups = {rec.id for rec in recs.values() if rec.conversation_type == "Follow-up"}
    assert follow_ups and set(ids(conversationType="Follow-up")) == follow_ups
    assert ids(organizationId=ORGANIZATION_ID, crmLinkStatus="unlinked") == ids()
    assert ids(orderDirection="asc", limit=5) == ids()[::-1]
    by_team = ids(orderBy="teamId", orderDirection="asc", limit=4)
    assert [recs[i].team_id for i in by_team] == sorted(recs[i].team_id for i in recs)


def test_listing_cursor_neither_repeats_nor_skips_when_recordings_arrive(
    emu: Emulator, recs
) -> None:
    page = list_recordings(emu, limit=4).json()
    template = next(iter(recs.values()))
    emu.add_recording(dataclasses.replace(template, id="brand-new", date_created=SAMPLE_DATES_END))
    rest = listed(emu, limit=4, cursor=page["cursor"])
    seen = [item["id"] for item in page["data"] + rest]
    assert sorted(seen) == sorted(recs) and "brand-new" not in seen
    assert listed(emu, limit=4)[0]["id"] == "brand-new"


def test_listing_errors_are_plain_text(emu: Emulator) -> None:
    for token in (None, "wrong"):
        response = list_recordings(emu, token=token)
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
        response = list_recordings(emu, **params)
        assert (response.status_code, response.text[: len(message)]) == (status, message), params
        assert response.headers["Content-Type"].startswith("text/plain")
    descending = list_recordings(emu, limit=2).json()["cursor"]
    mismatch = list_recordings(emu, limit=2, orderDirection="asc", cursor=descending)
    assert mismatch.status_code == 400 and "another orderBy" in mismatch.text
    post = requests.post(f"{emu.api_url}/v1/core/recordings", headers={TOKEN_HEADER: TOKEN})
    assert post.status_code == 405 and post.headers["Allow"] == "GET"
    assert emu.stats.listing_requests == 2 + len(bad) + 3


def test_listing_shares_the_rate_limit_with_signing(emu: Emulator, rid: str) -> None:
    emu.faults.rate_limit = 2
    emu.faults.rate_window = 30.0  # long: a slow machine cannot let requests leave it
    assert list_recordings(emu).status_code == 200
    assert sign(emu, rid).status_code == 200
    limited = list_recordings(emu)
    assert (limited.status_code, limited.text) == (429, "Too Many Requests")
    assert "Retry-After" not in limited.headers
    emu.faults.retry_after = "3"
    assert list_recordings(emu).headers["Retry-After"] == "3"
    assert sign(emu, rid).status_code == 429
    assert emu.stats.rate_limited == 3
    assert emu.stats.listing_requests == 3 and emu.stats.api_requests == 5
    emu.faults.rate_window = 0.05
    time.sleep(0.06)  # the window slides: the accepted requests have left it
    assert list_recordings(emu).status_code == 200
