"""The siro-data command, run as a user runs it: a subprocess against the emulator."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TOKEN

from siro_data import read_manifest
from siro_data.emulator import sample_recordings

COMMAND = [sys.executable, "-m", "siro_data.cli"]


def siro_data(args, emulator=None, cwd=None, token=TOKEN, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIRO_")}
    if emulator is not None:
        env["SIRO_API_URL"] = emulator.api_url
    if token:
        env["SIRO_AUTH_TOKEN"] = token
    return subprocess.Popen(
        [*COMMAND, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


@pytest.fixture
def ids_csv(tmp_path, emulator) -> Path:
    path = tmp_path / "ids.csv"
    pd.DataFrame({"recording_id": list(emulator.recordings), "note": "x"}).to_csv(path, index=False)
    return path


def test_console_script_is_installed():
    assert (Path(sys.executable).parent / "siro-data").exists()


def test_fetch_all_ok_exits_0_with_a_summary(tmp_path, emulator, ids_csv):
    code, out, err = finish(siro_data(["fetch", str(ids_csv), "-q"], emulator, cwd=tmp_path))
    assert code == 0, err
    assert f"{len(emulator.recordings)} recordings: {len(emulator.recordings)} ok, 0 failed" in out
    assert f"manifest: {tmp_path / 'data' / 'manifest.parquet'}" in out
    assert read_manifest(tmp_path / "data" / "manifest.parquet")["error"].isna().all()


def test_some_rows_failed_exits_1_errors_grouped(tmp_path, emulator, ids_csv):
    first = next(iter(emulator.recordings))
    emulator.faults.api_status[first] = 404
    code, out, _ = finish(siro_data(["fetch", str(ids_csv), "-q"], emulator, cwd=tmp_path))
    assert code == 1
    assert f"  not_found: 1 (e.g. '{first}': 404: Recording not found)" in out


def test_usage_and_auth_errors_exit_2(tmp_path, emulator, ids_csv):
    code, _, err = finish(siro_data(["fetch", str(ids_csv), "--id-column", "rid"], emulator))
    assert code == 2
    assert "no column 'rid'" in err
    code, _, err = finish(siro_data(["fetch", str(ids_csv)], emulator, token=None))
    assert (code, "SIRO_AUTH_TOKEN" in err) == (2, True)
    code, _, err = finish(
        siro_data(["fetch", str(ids_csv), "-q"], emulator, token="wrong-token-xyz")
    )
    assert code == 2
    assert "authentication failed" in err
    assert emulator.stats.api_requests == 1
    assert "wrong-token-xyz" not in err


def test_demo_needs_no_token_and_gets_durations_right(tmp_path):
    code, out, err = finish(siro_data(["demo", "-q"], cwd=tmp_path, token=None))
    assert code == 0, err
    manifest = read_manifest(tmp_path / "data" / "manifest.parquet")
    truth = {rec_id: rec.duration for rec_id, rec in sample_recordings().items()}
    assert sorted(manifest["recording_id"]) == sorted(truth)
    assert manifest["error"].isna().all()
    for row in manifest.itertuples():
        assert row.duration == pytest.approx(truth[row.recording_id], rel=0.01)
    assert "12 recordings: 12 ok, 0 failed" in out


def test_killed_runs_resume_to_identical_files(tmp_path, emulator, ids_csv):
    """SIGKILL at random moments, then a final run: every file whole, every id once."""
    emulator.faults.bandwidth = 400_000  # each file takes a fraction of a second
    emulator.faults.api_latency = 0.02
    rng = random.Random(7)
    for _ in range(4):
        process = siro_data(["fetch", str(ids_csv), "-q", "--workers", "3"], emulator, cwd=tmp_path)
        time.sleep(rng.uniform(0.8, 2.0))  # past start-up, into the downloads
        process.send_signal(signal.SIGKILL)
        process.communicate()
    code, _, err = finish(siro_data(["fetch", str(ids_csv), "-q"], emulator, cwd=tmp_path))
    assert code == 0, err

    manifest = read_manifest(tmp_path / "data" / "manifest.parquet")
    assert sorted(manifest["recording_id"]) == sorted(emulator.recordings)
    for row in manifest.itertuples():
        data = Path(row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == emulator.recordings[row.recording_id].sha256
    leftovers = [p.name for p in (tmp_path / "data").rglob("*") if p.suffix in (".part", ".tmp")]
    assert leftovers == []
    total = sum(r.size for r in emulator.recordings.values())
    assert emulator.stats.total_bytes_served <= 1.25 * total

    emulator.stats.reset()
    code, _, _ = finish(siro_data(["fetch", str(ids_csv), "-q"], emulator, cwd=tmp_path))
    assert code == 0
    assert emulator.stats.api_requests == 0
    assert emulator.stats.total_bytes_served == 0
