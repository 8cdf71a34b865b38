"""Deletions follow Siro: a recording Siro no longer serves becomes a ``deleted`` tombstone,
found by ``sync --reconcile`` or by a 404 on a recording fetched before; its audio stays unless
``--prune`` removes it; the exports and ``read_recordings`` leave it out; no later run asks for it.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from support import TOKEN, cli, fetch, finish

import siro_data
from siro_data.archive import Archive
from siro_data.cli import PRUNE_LINE
from siro_data.emulator import Emulator, Recording, sample_recordings
from siro_data.naming import file_stem

#: The sample recordings' dates end here.
END = datetime(2025, 6, 1, tzinfo=timezone.utc)
SINCE = END - timedelta(days=60)
#: A retry window that reaches every recording: a tombstone must not be asked even so.
TEN_YEARS = pd.Timedelta(days=3650)


@pytest.fixture
def recordings() -> dict[str, Recording]:
    """Eight recordings, one every five days before END, audio of mixed formats."""
    audio = list(sample_recordings(n=6).values())
    made = [
        dataclasses.replace(
            audio[n % len(audio)], id=f"rec-{n}", date_created=END - timedelta(days=5 * (8 - n))
        )
        for n in range(8)
    ]
    return {rec.id: rec for rec in made}


def synced(emu: Emulator, folder: Path, **options) -> siro_data.SyncResult:
    options = {"token": TOKEN, "api_url": emu.api_url, "progress": False, **options}
    return siro_data.sync(folder / "manifest.parquet", folder / "audio", **options)


def manifest_rows(folder: Path) -> pd.DataFrame:
    return siro_data.read_manifest(folder / "manifest.parquet").set_index("recording_id")


def files_of(folder: Path, recording_id: str) -> list[Path]:
    """Every file of a recording in the audio folder: download, copy, partial."""
    return sorted((folder / "audio").glob(f"{file_stem(recording_id)}.*"))


def test_reconcile_tombstones_a_deleted_recording_and_keeps_its_audio_by_default(
    emulator, tmp_path
):
    first = synced(emulator, tmp_path, since=SINCE)
    assert first.fetched == 8
    gone = emulator.delete("rec-3")

    # A daily sync does not see it: its row is complete, nothing asks Siro about it.
    daily = synced(emulator, tmp_path)
    assert daily.deleted is None and manifest_rows(tmp_path).loc[gone.id, "status"] == "ok"

    emulator.stats.reset()
    reconciled = synced(emulator, tmp_path, reconcile=True)
    assert list(reconciled.deleted["recording_id"]) == [gone.id]
    assert reconciled.list_calls == emulator.stats.listing_requests == 1  # 7 listed: one page
    assert reconciled.since < gone.date_created  # the whole history, from the first sync's
    assert emulator.stats.api_calls == {}  # listing only: nothing to fetch
    row = manifest_rows(tmp_path).loc[gone.id]
    assert (row["status"], row["error_kind"]) == ("deleted", "deleted")
    assert row["error"] == "deleted in Siro: no longer in its listing"
    assert row["sha256"] == gone.sha256 and row["fetched_at"] > first.recordings["fetched_at"].max()
    assert Path(row["path"]).exists()  # the default keeps the audio
    assert "reconciled: 1 no longer listed by Siro, now deleted" in reconciled.summary()

    assert gone.id not in set(siro_data.read_recordings(tmp_path / "manifest.parquet").recording_id)
    manifest = siro_data.read_manifest(tmp_path / "manifest.parquet")
    assert gone.id not in siro_data.to_hf_dataset(manifest)["recording_id"]
    nemo = siro_data.to_nemo_manifest(manifest, tmp_path / "train.json").read_text()
    assert gone.id not in nemo and nemo.count("\n") == 7

    # Listed again on purpose: nothing asks Siro for it again, nor does a fetch of the ids.
    emulator.stats.reset()
    again = synced(emulator, tmp_path, since=SINCE, reconcile=True, retry_for=TEN_YEARS)
    assert len(again.deleted) == 0
    ids = list(manifest["recording_id"])
    back = fetch(emulator, ids, tmp_path / "audio", tmp_path / "manifest.parquet")
    assert back.set_index("recording_id").loc[gone.id, "status"] == "deleted"
    assert gone.id not in emulator.stats.api_calls


def test_prune_removes_the_audio_copies_and_partials_of_deleted_recordings_keeping_rows(
    emulator, tmp_path, caplog
):
    synced(emulator, tmp_path, since=SINCE, convert_to="wav")
    gone = emulator.delete("rec-1")  # an m4a: a download and its WAV copy
    partial = tmp_path / "audio" / f"{file_stem(gone.id)}.part"
    partial.write_bytes(b"a download a killed run left")
    assert len(files_of(tmp_path, gone.id)) == 3
    others = {path for rec in emulator.recordings for path in files_of(tmp_path, rec)}

    with caplog.at_level(logging.WARNING, logger="siro_data"):
        result = synced(emulator, tmp_path, reconcile=True, prune=True)
    assert files_of(tmp_path, gone.id) == []
    assert others == {path for rec in emulator.recordings for path in files_of(tmp_path, rec)}
    [removal] = result.removed
    assert (len(removal.rows), removal.files, removal.bytes) == (1, 3, gone.size)
    assert any(
        record.levelno == logging.WARNING and "removing the audio of 1 recordings" in record.message
        for record in caplog.records
    )
    row = manifest_rows(tmp_path).loc[gone.id]
    assert row["status"] == "deleted" and row["path"] is pd.NA and row["audio_path"] is pd.NA
    assert row["error"] == "deleted in Siro: no longer in its listing; audio removed"
    assert row["size_bytes"] == gone.size  # what it was, kept as history

    emulator.stats.reset()  # a sync that would retry any failure of the last ten years
    after = synced(emulator, tmp_path, since=SINCE, prune=True, retry_for=TEN_YEARS)
    assert gone.id not in emulator.stats.api_calls and after.removed[0].files == 0
    assert files_of(tmp_path, gone.id) == []


def test_a_purge_is_found_by_reconcile(emulator, tmp_path):
    synced(emulator, tmp_path, since=SINCE)
    purged = emulator.purge(before=END - timedelta(days=25))
    assert purged == ["rec-0", "rec-1", "rec-2"]
    result = synced(emulator, tmp_path, reconcile=True)
    assert sorted(result.deleted["recording_id"]) == purged
    statuses = manifest_rows(tmp_path)["status"]
    assert statuses[purged].eq("deleted").all()
    assert statuses.drop(purged).eq("ok").all()


def test_a_404_on_a_recording_fetched_before_is_a_deletion_not_a_failure(
    emulator, out_dir, manifest_path
):
    ids = list(emulator.recordings)[:3]
    fetch(emulator, ids, out_dir, manifest_path)
    gone = emulator.delete(ids[0])
    for path in out_dir.glob(f"{file_stem(gone.id)}.*"):
        path.unlink()  # its row is asked again only when its file is missing

    again = fetch(emulator, [*ids, "never-known"], out_dir, manifest_path).set_index("recording_id")
    assert again.loc[gone.id, ["status", "error_kind"]].tolist() == ["deleted", "deleted"]
    assert again.loc[gone.id, "error"] == "deleted in Siro: 404: Recording not found"
    assert again.loc[gone.id, "path"] is pd.NA and again.loc[gone.id, "sha256"] == gone.sha256
    assert again.loc["never-known", ["status", "error_kind"]].tolist() == ["failed", "not_found"]

    emulator.stats.reset()
    fetch(emulator, ids, out_dir, manifest_path)
    assert emulator.stats.api_requests == 0


def test_reconcile_refuses_a_filter_that_would_make_recordings_look_deleted(emulator, tmp_path):
    with pytest.raises(ValueError, match="reconcile takes no filter but team_id"):
        synced(emulator, tmp_path, since=SINCE, result="closed", reconcile=True)
    assert emulator.stats.api_requests == 0


def test_reconcile_by_team_marks_only_that_teams_recordings(emulator, tmp_path):
    """A team's reconcile lists that team: another team's recordings are not its to judge."""
    teams = sorted({rec.team_id for rec in emulator.recordings.values()})
    synced(emulator, tmp_path, since=SINCE)  # every team, kept without a team
    synced(emulator, tmp_path, since=SINCE, team_id=teams[0])
    ours = [rec.id for rec in emulator.recordings.values() if rec.team_id == teams[0]]
    theirs = [rec.id for rec in emulator.recordings.values() if rec.team_id != teams[0]]
    emulator.delete(ours[0])
    emulator.delete(theirs[0])
    result = synced(emulator, tmp_path, team_id=teams[0], reconcile=True)
    assert list(result.deleted["recording_id"]) == [ours[0]]
    assert manifest_rows(tmp_path).loc[theirs[0], "status"] == "ok"


def test_the_cli_reconciles_prunes_says_so_and_exits_0(emulator, tmp_path):
    command = ["sync", "-q", "--out-dir", "audio", "--manifest", "manifest.parquet"]
    code, _, err = finish(cli([*command, "--since", f"{SINCE:%Y-%m-%d}"], emulator, cwd=tmp_path))
    assert code == 0, err
    gone = emulator.delete("rec-5")

    code, out, err = finish(cli([*command, "--reconcile"], emulator, cwd=tmp_path))
    assert code == 0, err
    assert "reconciled: 1 no longer listed by Siro, now deleted" in out.splitlines()
    assert PRUNE_LINE not in out and files_of(tmp_path, gone.id)  # without --prune: kept

    code, out, err = finish(cli([*command, "--prune"], emulator, cwd=tmp_path))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == PRUNE_LINE
    assert "removed the audio of 1 recordings deleted in Siro: 1 files, " in out
    assert "WARNING siro_data.retention: removing the audio of 1 recordings" in err
    assert files_of(tmp_path, gone.id) == []


def test_prune_in_a_bucket_removes_objects_and_keeps_rows(bucket, emulator, staging):
    places = {
        "manifest_path": f"{bucket.url}/manifest.parquet",
        "out_dir": f"{bucket.url}/audio",
        "storage_options": bucket.storage_options,
    }
    options = {"token": TOKEN, "api_url": emulator.api_url, "progress": False, **places}
    siro_data.sync(since=SINCE, convert_to="wav", **options)
    gone = emulator.delete("rec-1")
    fs = bucket.filesystem()
    stem = file_stem(gone.id)
    assert len(fs.glob(f"{bucket.url}/audio/{stem}.*")) == 2
    partial = Archive(places["out_dir"], places["manifest_path"], bucket.storage_options)
    partial = partial.audio.partial(stem)  # staged on this machine
    partial.write_bytes(b"partial")

    result = siro_data.sync(reconcile=True, prune=True, **options)
    fs.invalidate_cache()
    assert fs.glob(f"{bucket.url}/audio/{stem}.*") == []
    assert not partial.exists()
    # The audio and its WAV copy; the partial was swept by the run's start already (its
    # object being in the bucket, another machine's work as far as this one knows).
    assert result.removed[0].files == 2
    assert len(fs.glob(f"{bucket.url}/audio/*.wav")) == 7
    manifest = siro_data.read_manifest(places["manifest_path"], bucket.storage_options)
    row = manifest.set_index("recording_id").loc[gone.id]
    assert row["status"] == "deleted" and row["path"] is pd.NA
    emulator.stats.reset()
    siro_data.sync(since=SINCE, **options)
    assert gone.id not in emulator.stats.api_calls
