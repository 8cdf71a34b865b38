"""sync over an archive that grows between runs: the watermark, late and not-ready recordings,
retries that stop, kills, list calls that follow what is new, one pacer for listing and signing.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from support import FAST_RETRIES, TOKEN, cli, finish, sha256

import siro_data
from siro_data import SiroClient
from siro_data.archive import listing_path
from siro_data.emulator import Emulator, Recording, sample_recordings

#: The sample recordings were made in the 30 days before this (see sample_recordings).
END = datetime(2025, 6, 1, tzinfo=timezone.utc)


@pytest.fixture
def recordings() -> dict[str, Recording]:
    """A growing archive's past: 240 recordings, two a day over 120 days, audio shared."""
    audio = list(sample_recordings(n=2).values())
    days = 120
    return {
        rec.id: rec
        for rec in (
            dataclasses.replace(
                audio[index % 2],
                id=f"past-{index:03d}",
                date_created=END - timedelta(days=days) + timedelta(hours=12 * index),
            )
            for index in range(2 * days)
        )
    }


def synced(emu: Emulator, tmp_path: Path, **options) -> siro_data.SyncResult:
    options = {"token": TOKEN, "api_url": emu.api_url, "progress": False, **options}
    return siro_data.sync(tmp_path / "manifest.parquet", tmp_path / "audio", **options)


def newcomer(emu: Emulator, name: str, created: datetime, **options) -> Recording:
    """A recording that appears in the archive now, created at ``created``."""
    audio = next(iter(sample_recordings(n=1).values()))
    return emu.publish(dataclasses.replace(audio, id=name), created=created, **options)


def watermark(tmp_path: Path) -> str | None:
    states = list(tmp_path.glob(".manifest.parquet.sync-*.json"))
    assert len(states) <= 1
    return json.loads(states[0].read_text())["watermark"] if states else None


def test_the_first_sync_needs_since_and_asks_nothing_without_it(emulator, tmp_path):
    with pytest.raises(ValueError, match=r"first sync .* needs since"):
        synced(emulator, tmp_path)
    assert emulator.stats.api_requests == 0


def test_daily_syncs_fetch_only_what_is_new_and_catch_late_and_not_ready_ones(emulator, tmp_path):
    since = END - timedelta(days=5)
    first = synced(emulator, tmp_path, since=since)
    created_since = sum(rec.date_created > since for rec in emulator.recordings.values())
    assert first.new == first.listed == created_since == 9
    assert first.recordings["error"].isna().all()
    newest = max(rec.date_created for rec in emulator.recordings.values())
    assert watermark(tmp_path) == f"{newest:%Y-%m-%dT%H:%M:%S}.000Z"

    # The next day: three new recordings, one created before the watermark that only shows
    # up now (late), one whose audio is not ready yet.
    fresh = [newcomer(emulator, f"new-{n}", newest + timedelta(hours=n + 1)) for n in range(3)]
    late = newcomer(emulator, "late", newest - timedelta(hours=30))
    slow = newcomer(emulator, "not-ready", newest + timedelta(hours=5), ready_in=3600)
    emulator.stats.reset()

    second = synced(emulator, tmp_path)

    arrived = {rec.id for rec in [*fresh, late, slow]}
    assert second.new == len(arrived) and second.retried == 0
    assert set(emulator.stats.api_calls) == arrived  # complete rows of the overlap cost no call
    assert set(emulator.stats.bytes_served) == {rec.id for rec in [*fresh, late]}
    rows = second.recordings.set_index("recording_id")
    assert rows.loc["not-ready", "error"] == (
        "200: signedUrl error: Recording audio is not available yet"
    )
    assert rows.loc["not-ready", "error_kind"] == "api_error"
    for rec in [*fresh, late]:
        assert sha256(rows.loc[rec.id, "path"]) == rec.sha256
    assert watermark(tmp_path) == f"{slow.date_created:%Y-%m-%dT%H:%M:%S}.000Z"

    # Later its audio is ready: the next sync retries it, and only it.
    emulator.faults.not_ready_until.clear()
    emulator.stats.reset()
    third = synced(emulator, tmp_path)
    assert (third.new, third.retried) == (0, 1)
    assert set(emulator.stats.api_calls) == {"not-ready"}
    assert third.recordings.set_index("recording_id").loc["not-ready", "error"] is pd.NA

    everything = siro_data.read_recordings(tmp_path / "manifest.parquet")
    assert everything["error"].isna().all()
    assert len(everything) == first.listed + len(arrived)
    assert everything.set_index("recording_id").loc["late", "date_created"] == late.date_created


def test_list_calls_follow_what_is_new_not_the_archive(emulator, tmp_path):
    """240 recordings, 100 a page: listing them all is 3 calls; a daily sync lists the
    overlap and the day's new ones in one."""
    siro_data.list_recordings(
        since=END - timedelta(days=200), token=TOKEN, api_url=emulator.api_url
    )
    assert emulator.stats.listing_requests == 3

    synced(emulator, tmp_path, since=END - timedelta(days=5))
    newest = max(rec.date_created for rec in emulator.recordings.values())
    for day in range(1, 5):
        for n in range(20):
            newcomer(emulator, f"day{day}-{n}", newest + timedelta(days=day, minutes=n))
        emulator.stats.reset()
        result = synced(emulator, tmp_path)
        # The overlap (3 days): two a day of the past until the newcomers fill it.
        assert result.new == 20
        assert result.listed <= 20 + 2 * 3 + 20 * 3
        assert result.list_calls == emulator.stats.listing_requests == 1
        assert len(emulator.stats.api_calls) == 20  # signing: the new ones only


def test_final_failures_are_not_asked_again_and_retries_stop_after_a_while(emulator, tmp_path):
    newest = max(rec.date_created for rec in emulator.recordings.values())
    gone = newcomer(emulator, "gone", newest + timedelta(hours=1))
    flaky = newcomer(emulator, "flaky", newest + timedelta(hours=2))
    emulator.faults.api_status[gone.id] = 404
    emulator.faults.api_status[flaky.id] = 503
    since = newest - timedelta(days=4)  # before the next syncs' overlap: nothing else is new
    fast = SiroClient(TOKEN, emulator.api_url, retries=FAST_RETRIES)  # the 503s without waits
    first = synced(emulator, tmp_path, since=since, retry_for=pd.Timedelta(days=2), client=fast)
    kinds = first.recordings.set_index("recording_id")["error_kind"]
    assert (kinds["gone"], kinds["flaky"]) == ("not_found", "server_error")

    # A day later (by Siro's dates): the 503 is retried, the 404 is not asked again.
    newcomer(emulator, "next-day", newest + timedelta(days=1))
    emulator.stats.reset()
    second = synced(emulator, tmp_path, retry_for=pd.Timedelta(days=2), client=fast)
    assert second.retried == 1
    assert set(emulator.stats.api_calls) == {"next-day", "flaky"}
    # What this sync tried, apart from what it knew had failed for good.
    assert sorted(second.tried["recording_id"]) == ["flaky", "next-day"]
    assert (second.fetched, second.failed) == (1, 1)
    assert list(second.known_failed["recording_id"]) == ["gone"]

    # Three days on, flaky is older than retry_for: it keeps its last error.
    newcomer(emulator, "later", newest + timedelta(days=3))
    emulator.stats.reset()
    third = synced(emulator, tmp_path, retry_for=pd.Timedelta(days=2), client=fast)
    fast.close()
    assert third.retried == 0
    assert set(emulator.stats.api_calls) == {"later"}
    assert (third.fetched, third.failed) == (1, 0)
    assert sorted(third.known_failed["recording_id"]) == ["flaky", "gone"]
    assert "2 known failures, not asked again: not_found 1, server_error 1" in third.summary()
    kept = siro_data.read_manifest(tmp_path / "manifest.parquet").set_index("recording_id")
    assert kept.loc["flaky", "error"].startswith("503")


def test_each_team_is_listed_apart_and_kept_with_its_team(start_emulator, tmp_path):
    recordings = sample_recordings(n=12)
    teams = sorted({rec.team_id for rec in recordings.values()})[:2]
    emu = start_emulator(recordings)
    result = synced(emu, tmp_path, since=END - timedelta(days=40), team_id=teams)
    expected = {rec.id: rec.team_id for rec in recordings.values() if rec.team_id in teams}
    listed = result.recordings
    assert dict(zip(listed.recording_id, listed.team_id, strict=True)) == expected
    kept = pd.read_parquet(listing_path(tmp_path / "manifest.parquet"))
    assert dict(zip(kept.recording_id, kept.team_id, strict=True)) == expected
    assert len(list(tmp_path.glob(".manifest.parquet.sync-*.json"))) == 1  # one filter set

    # Another filter set keeps a watermark of its own.
    synced(emu, tmp_path, since=END - timedelta(days=40), result="closed")
    assert len(list(tmp_path.glob(".manifest.parquet.sync-*.json"))) == 2


def test_listing_and_signing_share_one_pace(emulator, tmp_path):
    """The emulator refuses more than 5 calls a second; the sync paces all its calls at 4.5."""
    emulator.faults.rate_limit, emulator.faults.rate_window = 5, 1.0
    started = time.monotonic()
    result = synced(emulator, tmp_path, since=END - timedelta(days=8), requests_per_minute=270)
    assert emulator.stats.rate_limited == 0
    calls = result.list_calls + result.new
    assert calls == 1 + 15  # one page, fifteen signed URLs
    assert time.monotonic() - started >= (calls - 1) / 4.5 * 0.95


def run_cli(emu: Emulator, tmp_path: Path, *extra: str) -> subprocess.Popen:
    command = ["sync", "-q", "--workers", "2", "--out-dir", "audio"]
    return cli([*command, "--manifest", "manifest.parquet", *extra], emu, cwd=tmp_path)


def test_a_sync_killed_midway_loses_nothing_and_the_next_one_finishes(emulator, tmp_path):
    newest = max(rec.date_created for rec in emulator.recordings.values())
    since = f"{newest - timedelta(days=2):%Y-%m-%dT%H:%M:%S}Z"
    process = run_cli(emulator, tmp_path, "--since", since)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    before = watermark(tmp_path)
    assert "listed 4 recordings" in out and "watermark: " in out

    fresh = [newcomer(emulator, f"new-{n}", newest + timedelta(hours=n + 1)) for n in range(8)]
    emulator.faults.bandwidth = 100_000  # a few seconds of downloading
    emulator.stats.reset()
    process = run_cli(emulator, tmp_path)
    deadline = time.monotonic() + 60
    while sum(emulator.stats.bytes_served.values()) < 150_000:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert watermark(tmp_path) == before  # moved only by a sync that finished

    emulator.faults.bandwidth = None
    process = run_cli(emulator, tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "fetched 8 new, retried 0" in out or "retried" in out
    result = siro_data.read_recordings(tmp_path / "manifest.parquet").set_index("recording_id")
    for rec in fresh:
        assert sha256(result.loc[rec.id, "path"]) == rec.sha256
    assert sum(emulator.stats.bytes_served.values()) <= 1.25 * sum(rec.size for rec in fresh)
    assert watermark(tmp_path) == f"{fresh[-1].date_created:%Y-%m-%dT%H:%M:%S}.000Z"
    assert not list((tmp_path / "audio").glob("*.part"))


def test_the_cli_says_what_this_sync_did_and_a_known_failure_is_no_failure_of_it(
    emulator, tmp_path
):
    """Day 1 meets a 404: exit 1. The next days list it again in their overlap, do not ask
    for it, count it on a line of its own, and exit 0: nothing they tried failed."""
    newest = max(rec.date_created for rec in emulator.recordings.values())
    emulator.faults.api_status["past-239"] = 404
    since = f"{newest - timedelta(days=1):%Y-%m-%dT%H:%M:%S}Z"
    code, out, err = finish(run_cli(emulator, tmp_path, "--since", since))
    assert code == 1, err
    assert out.splitlines()[:5] == [
        f"listed 2 recordings created after {since[:-1]}.000Z (1 list calls)",
        "fetched 2 new, retried 0 that had failed",
        "2 recordings: 1 ok, 1 failed",
        "  not_found: 1 (e.g. 'past-239': 404: Recording not found)",
        out.splitlines()[4],
    ]
    assert out.splitlines()[4].startswith("audio: ") and "0 bytes" not in out.splitlines()[4]
    assert f"watermark: {newest:%Y-%m-%dT%H:%M:%S}.000Z" in out

    # The first needs --since; later ones need nothing. The next lists 3 days back from the
    # watermark (4 more, older ones), the one after finds nothing new.
    for new in (4, 0):
        emulator.stats.reset()
        code, out, err = finish(run_cli(emulator, tmp_path))
        assert code == 0, err
        assert out.splitlines()[1:4] == [
            f"fetched {new} new, retried 0 that had failed",
            f"{new} recordings: {new} ok, 0 failed",
            "1 known failure, not asked again: not_found",
        ]
        audio = out.splitlines()[4]  # what this sync fetched, nothing more
        assert audio.startswith("audio: ") and audio.endswith(" 0 bytes") == (new == 0)
        assert "past-239" not in emulator.stats.api_calls
    (tmp_path / "elsewhere").mkdir()
    code, _, err = finish(run_cli(emulator, tmp_path / "elsewhere"))
    assert code == 2 and "needs since" in err
