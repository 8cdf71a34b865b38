"""list_recordings and SiroClient.list_pages against the emulator, over real sockets."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from support import FAST_RETRIES, TOKEN, TokenProvider, fetch, free_port

from siro_data import AuthError, SiroAPIError, SiroClient, list_recordings
from siro_data.emulator import Emulator, Recording, sample_recordings
from siro_data.listing import LISTING_COLUMNS, recording_query, recordings_frame

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def twelve() -> dict[str, Recording]:
    return sample_recordings(n=12)


@pytest.fixture
def recordings(twelve: dict[str, Recording]) -> dict[str, Recording]:
    """What the emulator serves here."""
    return twelve


def newest_first(recordings: dict[str, Recording]) -> list[Recording]:
    return sorted(recordings.values(), key=lambda rec: rec.date_created, reverse=True)


def listing(emu: Emulator, **kwargs) -> pd.DataFrame:
    kwargs.setdefault("requests_per_minute", 60_000)
    return list_recordings(token=TOKEN, api_url=emu.api_url, **kwargs)


def assert_schema(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(LISTING_COLUMNS)
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == LISTING_COLUMNS
    assert frame.index.equals(pd.RangeIndex(len(frame)))


# --- the table ---------------------------------------------------------------------------------


def test_every_recording_with_typed_columns(emulator: Emulator, twelve) -> None:
    frame = listing(emulator)
    assert_schema(frame)
    expected = newest_first(twelve)
    assert frame["recording_id"].tolist() == [rec.id for rec in expected]
    assert emulator.stats.listing_requests == 1
    for row, rec in zip(frame.itertuples(), expected, strict=True):
        assert row.date_created == pd.Timestamp(rec.date_created)
        assert row.duration_api == rec.duration_ms_api / 1000
        assert (row.title, row.user_id, row.result) == (rec.title, rec.user_id, rec.result)
        assert (row.rep_first_name, row.rep_last_name) == (rec.rep_first_name, rec.rep_last_name)
        assert row.trigger == "button-press"
    assert frame["is_private"].tolist() == frame["is_video"].tolist() == [False] * 12
    assert frame["discoverable"].tolist() == [True] * 12
    assert frame["date_created"].is_monotonic_decreasing
    assert frame["duration_api"].between(3, 40).all()


def test_paging_follows_the_cursor_to_the_end(emulator: Emulator, twelve) -> None:
    frame = listing(emulator, page_size=5)
    assert emulator.stats.listing_requests == 3  # 5 + 5 + 2
    assert frame["recording_id"].tolist() == [rec.id for rec in newest_first(twelve)]
    emulator.stats.reset()
    assert listing(emulator, page_size=1).equals(frame)
    assert emulator.stats.listing_requests == 12


def test_more_recordings_than_one_page_of_the_default_size(start_emulator) -> None:
    """250 recordings: three requests of at most 100, nothing lost, nothing twice."""
    template = next(iter(sample_recordings(n=1).values()))
    start = dt.datetime(2025, 1, 1, tzinfo=UTC)
    many = [
        dataclasses.replace(template, id=f"rec-{i:03d}", date_created=start + dt.timedelta(hours=i))
        for i in range(250)
    ]
    emu = start_emulator(many)
    frame = listing(emu)
    assert emu.stats.listing_requests == 3
    assert frame["recording_id"].tolist() == [f"rec-{i:03d}" for i in reversed(range(250))]
    assert_schema(frame)


def test_list_pages_yields_siros_items(emulator: Emulator, twelve) -> None:
    with SiroClient(TOKEN, emulator.api_url) as client:
        pages = list(client.list_pages({"limit": "5"}))
        assert [len(page) for page in pages] == [5, 5, 2]
        assert {item["id"] for page in pages for item in page} == set(twelve)
        assert pages[0][0]["durationInMilliseconds"] == newest_first(twelve)[0].duration_ms_api
        # A cursor given starts from that page.
        cursor = requests.get(
            f"{emulator.api_url}/v1/core/recordings",
            {"limit": "5"},
            headers={"x-siro-auth-token": TOKEN},
            timeout=5,
        ).json()["cursor"]
        assert list(client.list_pages({"limit": "5", "cursor": cursor})) == pages[1:]


# --- filters -----------------------------------------------------------------------------------


def test_date_bounds_are_exclusive_as_siro_documents(emulator: Emulator, twelve) -> None:
    order = newest_first(twelve)
    pivot, lower = order[3].date_created, order[8].date_created
    frame = listing(emulator, since=lower, until=pivot)
    assert frame["recording_id"].tolist() == [rec.id for rec in order[4:8]]
    assert listing(emulator, since=pivot)["recording_id"].tolist() == [rec.id for rec in order[:3]]
    assert listing(emulator, until=pivot)["recording_id"].tolist() == [rec.id for rec in order[4:]]
    just_before = pivot - dt.timedelta(milliseconds=1)
    assert listing(emulator, since=just_before)["recording_id"].tolist()[-1] == order[3].id
    # Sub-millisecond bounds: sent rounded outwards, then applied exactly.
    micro = dt.timedelta(microseconds=1)
    assert order[3].id in set(listing(emulator, since=pivot - micro)["recording_id"])
    assert order[3].id in set(listing(emulator, until=pivot + micro)["recording_id"])
    assert order[3].id not in set(listing(emulator, since=pivot + micro)["recording_id"])
    assert order[3].id not in set(listing(emulator, until=pivot - micro)["recording_id"])
    assert emulator.stats.api_headers[-1]["user-agent"].startswith("siro-data/")


def test_date_types_and_time_zones(emulator: Emulator, twelve) -> None:
    order = newest_first(twelve)
    pivot = order[5].date_created  # aware, UTC
    expected = [rec.id for rec in order[:5]]
    naive = pivot.replace(tzinfo=None)
    paris = pivot.astimezone(dt.timezone(dt.timedelta(hours=2)))
    for since in (
        pivot,
        naive,  # naive means UTC
        paris,
        pd.Timestamp(pivot),
        pd.Timestamp(naive),
        np.datetime64(naive),
        paris.isoformat(),
        naive.isoformat(),
    ):
        assert listing(emulator, since=since)["recording_id"].tolist() == expected, since
    day = order[5].date_created.date()
    by_day = listing(emulator, since=day)  # a date is its midnight
    assert by_day["date_created"].min() > pd.Timestamp(day, tz="UTC")


def test_team_and_other_filters(emulator: Emulator, twelve) -> None:
    north = [rec.id for rec in newest_first(twelve) if rec.team_id == "team_north"]
    assert north and listing(emulator, team_id="team_north")["recording_id"].tolist() == north
    both = [r.id for r in newest_first(twelve) if r.team_id in ("team_north", "team_south")]
    assert listing(emulator, team_id=["team_north", "team_south"])["recording_id"].tolist() == both
    assert len(both) > len(north)
    closed = {rec.id for rec in twelve.values() if rec.result == "closed"}
    assert set(listing(emulator, result="closed")["recording_id"]) == closed
    follow_ups = {rec.id for rec in twelve.values() if rec.conversation_type == "Follow-up"}
    assert set(listing(emulator, conversation_type=("Follow-up",))["recording_id"]) == follow_ups
    assert len(listing(emulator, organization_id="org_emulator")) == 12


def test_empty_result_keeps_the_dtypes(emulator: Emulator, tmp_path: Path) -> None:
    frame = listing(emulator, team_id="team_nowhere")
    assert frame.empty
    assert_schema(frame)
    assert_schema(recordings_frame([]))
    assert_schema(listing(emulator, since="2030-01-01"))
    manifest = fetch(emulator, frame, tmp_path / "audio", tmp_path / "manifest.parquet")
    assert manifest.empty


# --- bad arguments: a ValueError before any request ----------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": "2025-05-20", "until": "2025-05-10"}, "must be before until"),
        ({"since": "2025-05-10", "until": "2025-05-10"}, "must be before until"),
        ({"since": dt.datetime(2025, 5, 10, 2), "until": "2025-05-10T03:00+02:00"}, "before"),
        ({"since": "last tuesday"}, "since is not a date"),
        ({"until": ""}, "until is not a date"),
        ({"since": 1_700_000_000}, "since must be a date or time"),
        ({"until": 1.5}, "until must be a date or time"),
        ({"since": True}, "since must be a date or time"),
        ({"since": ["2025-05-10"]}, "since must be a date or time, got list"),
        ({"since": pd.NaT}, "since is not a date"),
        ({"page_size": 0}, "page_size must be from 1 to 100"),
        ({"page_size": 101}, "page_size must be from 1 to 100"),
        ({"page_size": 5.0}, "page_size must be a whole number"),
        ({"team_id": []}, "team_id is empty"),
        ({"team_id": ["a", ""]}, "team_id must be non-empty strings"),
        ({"team_id": "a,b"}, "holds a comma"),
        ({"team_id": 7}, "team_id must be a string"),
        ({"result": ["closed"]}, "result must be non-empty strings"),
    ],
)
def test_bad_arguments_fail_before_any_request(emulator: Emulator, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        listing(emulator, **kwargs)
    assert emulator.stats.api_requests == 0


def test_no_token_is_a_clear_value_error(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIRO_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="SIRO_AUTH_TOKEN"):
        list_recordings(api_url=emulator.api_url)
    assert emulator.stats.api_requests == 0


def test_token_and_url_from_the_environment(emulator: Emulator, monkeypatch) -> None:
    monkeypatch.setenv("SIRO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("SIRO_API_URL", emulator.api_url)
    assert len(list_recordings()) == 12
    assert emulator.stats.api_headers[0]["x-siro-auth-token"] == TOKEN


def test_recording_query_names_siros_parameters() -> None:
    query = recording_query(
        since=dt.datetime(2025, 5, 1, 12, 0, 0, 123_456),
        until=pd.Timestamp("2025-05-02T00:00:00.0000001Z"),
        team_id=("a", "b"),
        organization_id="org",
        conversation_type="Follow-up",
        result="not closed",
        page_size=7,
    )
    assert query == {
        "limit": "7",
        "dateCreated:gt": "2025-05-01T12:00:00.123Z",  # floor: nothing after `since` is lost
        "dateCreated:lt": "2025-05-02T00:00:00.001Z",  # ceiling: nothing before `until` is lost
        "teamId": "a,b",
        "organizationId": "org",
        "conversationType": "Follow-up",
        "result": "not closed",
    }
    assert recording_query() == {"limit": "100"}


# --- authentication and errors -------------------------------------------------------------------


def test_401_provider_renews_once_up_front(emulator: Emulator) -> None:
    """The provider's first token is stale: one more call, and the listing goes on."""
    stale, fresh = "tok-stale-aaaaaaaa", "tok-fresh-bbbbbbbb"
    emulator.tokens = {fresh}
    provider = TokenProvider(stale, fresh)
    frame = list_recordings(token=provider, api_url=emulator.api_url, page_size=5)
    assert len(frame) == 12 and provider.calls == 2
    sent = [headers["x-siro-auth-token"] for headers in emulator.stats.api_headers]
    assert sent == [stale, fresh, fresh, fresh]


def test_401_between_pages_renews_the_token(emulator: Emulator, twelve) -> None:
    first, second = "tok-first-cccccccc", "tok-second-dddddddd"
    emulator.tokens = {first}
    provider = TokenProvider(first, second)
    with SiroClient(provider, emulator.api_url) as client:
        pages = client.list_pages({"limit": "5"})
        items = list(next(pages))
        emulator.tokens = {second}  # the token expires mid-listing
        items += [item for page in pages for item in page]
    assert {item["id"] for item in items} == set(twelve) and len(items) == 12
    assert provider.calls == 2


def test_401_that_renewal_cannot_cure(emulator: Emulator) -> None:
    emulator.tokens = {"tok-nobody-has-this"}
    provider = TokenProvider("tok-bad-1-eeeeeeee", "tok-bad-2-ffffffff")
    with pytest.raises(AuthError) as raised:
        list_recordings(token=provider, api_url=emulator.api_url)
    assert raised.value.status == 401 and provider.calls == 2
    assert "Unauthorized: invalid or missing access token" in str(raised.value)
    with pytest.raises(AuthError, match="pass a token provider"):
        list_recordings(token=TOKEN, api_url=emulator.api_url)


def test_api_errors_carry_the_servers_plain_text(emulator: Emulator) -> None:
    with pytest.raises(SiroAPIError) as raised:
        list_recordings(token=TOKEN, api_url=emulator.api_url, organization_id="org_other")
    assert raised.value.status == 403 and raised.value.kind == "forbidden"
    assert str(raised.value) == "403: Forbidden: user does not have access to this organization"
    with SiroClient(TOKEN, emulator.api_url) as client, pytest.raises(SiroAPIError) as raised:
        list(client.list_pages({"cursor": "garbage"}))
    assert str(raised.value) == "400: Invalid cursor"


def test_token_never_in_errors_reprs_or_logs(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with SiroClient(TOKEN, emulator.api_url) as client:
        # The emulator echoes a bad date back: here the date is the token itself.
        with pytest.raises(SiroAPIError) as raised:
            list(client.list_pages({"dateCreated:gt": TOKEN}))
        assert raised.value.status == 400
        assert "Invalid dateCreated:gt" in str(raised.value) and "<redacted>" in str(raised.value)
        texts = [str(raised.value), repr(raised.value), repr(client), raised.value.message]
    emulator.tokens = set()
    with pytest.raises(AuthError) as auth:
        listing(emulator)
    texts += [str(auth.value), repr(auth.value)]
    # The library's retry policy minus its backoff sleeps, for the unreachable host.
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable_api = SiroClient(TOKEN, nowhere, timeout=(1, 1), retries=FAST_RETRIES)
    with unreachable_api, pytest.raises(SiroAPIError) as unreachable:
        list_recordings(client=unreachable_api)
    assert unreachable.value.kind == "connection"
    texts += [str(unreachable.value), caplog.text]
    assert all(TOKEN not in text for text in texts)


# --- pacing -------------------------------------------------------------------------------------


def test_pacing_keeps_under_the_limit(emulator: Emulator) -> None:
    """The emulator allows 5 requests a second; 240 a minute never meets a 429.

    240 rather than 300 leaves each request ~50 ms of slack on a loaded machine, where
    requests reach the server later than the client sent them.
    """
    emulator.faults.rate_limit = 5
    emulator.faults.rate_window = 1.0
    started = time.monotonic()
    frame = list_recordings(
        token=TOKEN, api_url=emulator.api_url, page_size=2, requests_per_minute=240
    )
    elapsed = time.monotonic() - started
    assert len(frame) == 12 and emulator.stats.listing_requests == 6
    assert emulator.stats.rate_limited == 0
    assert elapsed >= 5 * 60 / 240  # six requests, five intervals


def test_without_pacing_the_same_listing_meets_429s(emulator: Emulator) -> None:
    """The control: the limit above is tight enough that an unpaced client is refused."""
    emulator.faults.rate_limit = 5
    emulator.faults.rate_window = 1.0
    emulator.faults.retry_after = "1"
    frame = list_recordings(
        token=TOKEN, api_url=emulator.api_url, page_size=2, requests_per_minute=60_000
    )
    assert len(frame) == 12  # urllib3 retried after the 429s
    assert emulator.stats.rate_limited >= 1


# --- into fetch_all ------------------------------------------------------------------------------


def test_listing_feeds_fetch_all(start_emulator, tmp_path: Path) -> None:
    recordings = sample_recordings(n=6)
    emu = start_emulator(recordings)
    order = newest_first(recordings)
    frame = listing(emu, since=order[-1].date_created)  # all but the oldest
    assert len(frame) == 5
    manifest = fetch(emu, frame, tmp_path / "audio", tmp_path / "manifest.parquet")
    assert manifest["recording_id"].tolist() == frame["recording_id"].tolist()
    assert manifest["error"].isna().all()
    joined = frame.merge(manifest, on="recording_id")
    assert (joined["duration"] - joined["duration_api"]).abs().max() < 0.1
    assert all(Path(path).is_file() for path in joined["path"])
