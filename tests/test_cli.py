"""The siro-data command, run as a user runs it: a subprocess against the emulator."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from support import cli, finish

from siro_data import read_manifest
from siro_data.archive import LOCKS_FOLDER
from siro_data.emulator import sample_recordings
from siro_data.manifest import write_manifest
from siro_data.rows import to_frame


@pytest.fixture
def ids_csv(tmp_path, emulator) -> Path:
    path = tmp_path / "ids.csv"
    pd.DataFrame({"recording_id": list(emulator.recordings), "note": "x"}).to_csv(path, index=False)
    return path


def test_console_script_is_installed():
    assert (Path(sys.executable).parent / "siro-data").exists()


def test_fetch_all_ok_exits_0_with_a_summary(tmp_path, emulator, ids_csv):
    code, out, err = finish(cli(["fetch", str(ids_csv), "-q"], emulator, cwd=tmp_path))
    assert code == 0, err
    assert f"{len(emulator.recordings)} recordings: {len(emulator.recordings)} ok, 0 failed" in out
    assert f"manifest: {tmp_path / 'data' / 'manifest.parquet'}" in out
    assert read_manifest(tmp_path / "data" / "manifest.parquet")["error"].isna().all()


def test_some_rows_failed_exits_1_errors_grouped(tmp_path, emulator, ids_csv):
    first = next(iter(emulator.recordings))
    emulator.faults.api_status[first] = 404
    code, out, _ = finish(cli(["fetch", str(ids_csv), "-q"], emulator, cwd=tmp_path))
    assert code == 1
    assert f"  not_found: 1 (e.g. '{first}': 404: Recording not found)" in out


@pytest.mark.parametrize(("offset", "way"), [(-3600.0, "ahead of"), (3600.0, "behind")])
def test_an_api_clock_an_hour_off_is_one_line_and_no_loss(tmp_path, emulator, ids_csv, offset, way):
    emulator.faults.clock_offset = offset
    code, out, err = finish(cli(["fetch", str(ids_csv), "-q"], emulator, cwd=tmp_path))
    assert code == 0, err
    assert f"{len(emulator.recordings)} recordings: {len(emulator.recordings)} ok, 0 failed" in out
    assert err.splitlines() == [  # no traceback, one line said once
        f"WARNING siro_data.clock: this machine's clock is 1 h 00 min {way} the API's; "
        "signed URLs are judged by storage, not by this clock"
    ]


def test_usage_and_auth_errors_exit_2(tmp_path, emulator, ids_csv):
    code, _, err = finish(cli(["fetch", str(ids_csv), "--id-column", "rid"], emulator))
    assert code == 2
    assert "no column 'rid'" in err
    code, _, err = finish(cli(["fetch", str(ids_csv)], emulator, token=None))
    assert (code, "SIRO_AUTH_TOKEN" in err) == (2, True)
    code, _, err = finish(cli(["fetch", str(ids_csv), "-q"], emulator, token="wrong-token-xyz"))
    assert code == 2
    assert "authentication failed" in err
    assert emulator.stats.api_requests == 1
    assert "wrong-token-xyz" not in err


def test_demo_needs_no_token_and_gets_durations_right(tmp_path):
    code, out, err = finish(cli(["demo", "-q"], cwd=tmp_path, token=None))
    assert code == 0, err
    manifest = read_manifest(tmp_path / "data" / "manifest.parquet")
    truth = {rec_id: rec.duration for rec_id, rec in sample_recordings().items()}
    assert sorted(manifest["recording_id"]) == sorted(truth)
    assert manifest["error"].isna().all()
    for row in manifest.itertuples():
        assert row.duration == pytest.approx(truth[row.recording_id], rel=0.01)
    assert "12 recordings: 12 ok, 0 failed" in out


def kill_during_save(process: subprocess.Popen, folder: Path, rng: random.Random) -> None:
    """SIGKILL the run while it writes the manifest: as soon as its temporary file exists."""
    deadline = time.monotonic() + 60
    while not list(folder.glob(".manifest.parquet.*.tmp")):
        assert process.poll() is None, "the run ended without saving the manifest"
        assert time.monotonic() < deadline, "no manifest save seen"
        time.sleep(0.0005)
    time.sleep(rng.uniform(0, 0.01))
    process.send_signal(signal.SIGKILL)
    process.communicate()


def test_killed_runs_resume_to_identical_files(tmp_path, emulator, ids_csv):
    """SIGKILL at random moments and during manifest saves, then a final run: nothing lost."""
    emulator.faults.bandwidth = 150_000  # a whole run takes a few seconds
    emulator.faults.api_latency = 0.02
    data = tmp_path / "data"
    data.mkdir()
    earlier = to_frame(  # rows of an earlier job make each save take a while
        {"recording_id": f"earlier-{n}", "error": "404: Recording not found"} for n in range(30_000)
    )
    write_manifest(earlier, data / "manifest.parquet")
    command = ["fetch", str(ids_csv), "-q", "--workers", "3"]
    rng = random.Random(7)
    for _ in range(8):
        process = cli(command, emulator, cwd=tmp_path)
        time.sleep(rng.uniform(0.8, 1.6))  # past start-up, into the downloads
        process.send_signal(signal.SIGKILL)
        process.communicate()
    for _ in range(3):
        kill_during_save(cli(command, emulator, cwd=tmp_path), data, rng)
        assert len(read_manifest(data / "manifest.parquet")) >= len(earlier)  # still readable
    code, _, err = finish(cli(["fetch", str(ids_csv), "-q"], emulator, cwd=tmp_path))
    assert code == 0, err

    manifest = read_manifest(data / "manifest.parquet")
    assert manifest["recording_id"].is_unique
    assert len(manifest) == len(earlier) + len(emulator.recordings)
    ours = manifest[manifest["recording_id"].isin(list(emulator.recordings))]
    assert ours["error"].isna().all()
    for row in ours.itertuples():
        data_bytes = Path(row.path).read_bytes()
        assert (
            hashlib.sha256(data_bytes).hexdigest() == emulator.recordings[row.recording_id].sha256
        )
    leftovers = [p.name for p in data.rglob("*") if p.suffix in (".part", ".tmp")]
    assert leftovers == []
    assert list((data / "recordings" / LOCKS_FOLDER).iterdir()) == []  # what the kills left
    total = sum(r.size for r in emulator.recordings.values())
    assert emulator.stats.total_bytes_served <= 1.25 * total

    emulator.stats.reset()
    code, _, _ = finish(cli(["fetch", str(ids_csv), "-q"], emulator, cwd=tmp_path))
    assert code == 0
    assert emulator.stats.api_requests == 0
    assert emulator.stats.total_bytes_served == 0
