"""Retention: ``siro_data.prune(older_than=...)``, ``siro-data prune --older-than`` and
``sync(keep=...)`` remove the audio of recordings older than a limit (by Siro's dates), keep
their rows as ``expired`` tombstones that no sync fetches again, and leave alone a recording
another process holds.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from support import TOKEN, cli, finish

import siro_data
from siro_data.archive import Archive
from siro_data.emulator import Emulator, Recording, sample_recordings
from siro_data.naming import file_stem

NOW = datetime.now(timezone.utc)
SINCE = NOW - timedelta(days=200)
TEN_YEARS = pd.Timedelta(days=3650)


@pytest.fixture
def recordings() -> dict[str, Recording]:
    """Three recordings made about 100 days ago (``old-*``), three 10 days ago (``new-*``)."""
    audio = list(sample_recordings(n=6).values())
    made = [
        dataclasses.replace(
            audio[n], id=f"{age}-{n}", date_created=NOW - timedelta(days=days, hours=n)
        )
        for n, (age, days) in enumerate([("old", 100)] * 3 + [("new", 10)] * 3)
    ]
    return {rec.id: rec for rec in made}


def synced(emu: Emulator, folder: Path, **options) -> siro_data.SyncResult:
    options = {"token": TOKEN, "api_url": emu.api_url, "progress": False, **options}
    return siro_data.sync(folder / "manifest.parquet", folder / "audio", **options)


def audio_files(folder: Path, prefix: str) -> list[Path]:
    return sorted(path for path in (folder / "audio").glob(f"{prefix}*") if path.is_file())


def statuses(folder: Path) -> dict[str, str]:
    manifest = siro_data.read_manifest(folder / "manifest.parquet")
    return dict(zip(manifest["recording_id"], manifest["status"], strict=True))


OLD = ["old-0", "old-1", "old-2"]
NEW = ["new-3", "new-4", "new-5"]


def test_a_retention_run_removes_old_audio_and_no_later_sync_fetches_it(emulator, tmp_path):
    synced(emulator, tmp_path, since=SINCE, convert_to="wav")
    assert len(audio_files(tmp_path, "old-")) == 6  # three downloads, their WAV copies
    new_files = audio_files(tmp_path, "new-")

    removal = siro_data.prune(tmp_path / "manifest.parquet", tmp_path / "audio", older_than="90d")
    assert sorted(removal.rows["recording_id"]) == OLD
    assert removal.files == 6 and removal.busy == []
    assert removal.bytes == sum(emulator.recordings[key].size for key in OLD)
    assert audio_files(tmp_path, "old-") == [] and audio_files(tmp_path, "new-") == new_files
    assert statuses(tmp_path) == {**dict.fromkeys(OLD, "expired"), **dict.fromkeys(NEW, "ok")}
    rows = siro_data.read_manifest(tmp_path / "manifest.parquet").set_index("recording_id")
    assert rows.loc["old-0", "error"].startswith("expired: audio removed by the retention rule")
    assert rows.loc["old-0", "path"] is pd.NA and rows.loc["old-0", "sha256"] is not pd.NA

    # The next sync lists them again (since= reaches back) and would retry any failure of
    # the last ten years: no signing call for any.
    emulator.stats.reset()
    again = synced(emulator, tmp_path, since=SINCE, convert_to="wav", retry_for=TEN_YEARS)
    assert again.listed == 6 and emulator.stats.api_calls == {}
    assert audio_files(tmp_path, "old-") == []
    assert sorted(siro_data.read_recordings(tmp_path / "manifest.parquet").recording_id) == NEW
    # A second run of the rule finds nothing more to remove.
    assert (
        len(
            siro_data.prune(
                tmp_path / "manifest.parquet", tmp_path / "audio", older_than="90d"
            ).rows
        )
        == 0
    )


def test_sync_keep_applies_the_rule_and_never_downloads_what_is_past_it(emulator, tmp_path):
    result = synced(emulator, tmp_path, since=SINCE, keep="90d")
    assert set(emulator.stats.api_calls) == set(NEW)
    assert set(emulator.stats.bytes_served) == set(NEW)
    assert statuses(tmp_path) == {**dict.fromkeys(OLD, "expired"), **dict.fromkeys(NEW, "ok")}
    [removal] = result.removed
    assert sorted(removal.rows["recording_id"]) == OLD and removal.files == 0
    assert result.fetched == 3 and result.failed == 0
    assert "removed the audio of 3 recordings created before" in result.summary()

    # A shorter limit on a later sync takes the recordings it now reaches.
    emulator.stats.reset()
    later = synced(emulator, tmp_path, keep="5d")
    assert emulator.stats.api_calls == {} and audio_files(tmp_path, "new-") == []
    assert sorted(later.removed[0].rows["recording_id"]) == NEW


def hold_lock(archive: Archive, recording_id: str) -> subprocess.Popen:
    """Another process holding ``recording_id``'s lock until its stdin closes."""
    lock = archive.audio.lock(file_stem(recording_id)).filename
    script = (
        "import sys\n"
        "from siro_data.locks import recording_lock\n"
        f"lock = recording_lock({str(lock)!r}); lock.acquire()\n"
        "print('held', flush=True); sys.stdin.read(); lock.release()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline() == "held\n"
    return process


def test_a_held_lock_keeps_its_recordings_audio_until_the_next_run(emulator, tmp_path):
    synced(emulator, tmp_path, since=SINCE)
    archive = Archive(tmp_path / "audio", tmp_path / "manifest.parquet")
    holder = hold_lock(archive, "old-1")
    try:
        removal = siro_data.prune(
            tmp_path / "manifest.parquet", tmp_path / "audio", older_than="90d"
        )
    finally:
        holder.communicate("")
    assert removal.busy == ["old-1"]
    assert "left 1 recording in use by another process" in removal.summary()
    assert [path.name.split("-")[0:2] for path in audio_files(tmp_path, "old-")] == [["old", "1"]]
    assert statuses(tmp_path)["old-1"] == "ok"

    removal = siro_data.prune(tmp_path / "manifest.parquet", tmp_path / "audio", older_than="90d")
    assert list(removal.rows["recording_id"]) == ["old-1"] and removal.busy == []
    assert audio_files(tmp_path, "old-") == [] and statuses(tmp_path)["old-1"] == "expired"


def test_the_prune_command_says_what_it_removed_and_refuses_what_it_cannot_read(emulator, tmp_path):
    places = ["--out-dir", "audio", "--manifest", "manifest.parquet"]
    sync = ["sync", "-q", *places, "--since", f"{SINCE:%Y-%m-%d}"]
    code, _, err = finish(cli(sync, emulator, cwd=tmp_path))
    assert code == 0, err

    code, out, err = finish(cli(["prune", *places, "--older-than", "90d"], cwd=tmp_path))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "removing the audio of the recordings created more than 90d ago"
    assert lines[1].startswith("removed the audio of 3 recordings created before ")
    assert re.fullmatch(
        r"removed the audio of 3 recordings created before \S+: 3 files, \S+ \w+", lines[1]
    )
    assert lines[2] == f"manifest: {tmp_path / 'manifest.parquet'}"
    assert "WARNING siro_data.retention: removing the audio of 3 recordings" in err
    assert audio_files(tmp_path, "old-") == []

    code, _, err = finish(cli(["prune", *places, "--older-than", "90"], cwd=tmp_path))
    assert code == 2 and "older_than needs a unit, as in 90d or 12h" in err
    (tmp_path / "elsewhere").mkdir()
    code, _, err = finish(cli(["prune", "--older-than", "90d"], cwd=tmp_path / "elsewhere"))
    assert code == 2 and "no listing beside the manifest" in err
    assert not (tmp_path / "elsewhere" / "data").exists()  # nothing made where nothing is


def test_a_retention_run_in_a_bucket(bucket, emulator, staging):
    manifest, out_dir = f"{bucket.url}/manifest.parquet", f"{bucket.url}/audio"
    options = {"storage_options": bucket.storage_options}
    siro_data.sync(
        manifest,
        out_dir,
        since=SINCE,
        token=TOKEN,
        api_url=emulator.api_url,
        progress=False,
        convert_to="wav",
        **options,
    )
    fs = bucket.filesystem()
    assert len(fs.glob(f"{out_dir}/old-*")) == 6

    removal = siro_data.prune(manifest, out_dir, older_than="90d", **options)
    fs.invalidate_cache()
    assert removal.files == 6 and fs.glob(f"{out_dir}/old-*") == []
    assert len(fs.glob(f"{out_dir}/new-*")) == 5
    rows = siro_data.read_manifest(manifest, bucket.storage_options)
    assert dict(zip(rows["recording_id"], rows["status"], strict=True)) == {
        **dict.fromkeys(OLD, "expired"),
        **dict.fromkeys(NEW, "ok"),
    }
