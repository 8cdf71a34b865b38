"""Ending a run early: the reporter's stop, a full disk, folders that cannot be written."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from support import fetch, sha256

from siro_data import read_manifest
from siro_data.archive import journal_path
from siro_data.naming import file_stem


class StopAfterFirstRow:
    """A reporter that presses Stop as soon as one row is final, and remembers what it saw."""

    def __init__(self) -> None:
        self.rows: list[Mapping[str, Any]] = []
        self.bytes = 0
        self.polls = 0
        self.closed = False
        self._stop: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def start(self, total: int, done: int, stop: Callable[[], None]) -> None:
        self.total, self.done, self._stop = total, done, stop

    def finished(self, row: Mapping[str, Any]) -> None:
        self.rows.append(row)
        self._stop()

    def add_bytes(self, count: int) -> None:
        with self._lock:
            self.bytes += count

    def poll(self) -> None:
        self.polls += 1

    def close(self) -> None:
        self.closed = True


def test_stop_returns_the_manifest_so_far_and_a_rerun_finishes(emulator, out_dir, manifest_path):
    emulator.faults.bandwidth = 200_000  # a few seconds of work in all
    ids = list(emulator.recordings)
    reporter = StopAfterFirstRow()

    manifest = fetch(emulator, ids, out_dir, manifest_path, workers=2, progress=reporter)

    assert reporter.closed and reporter.total == len(ids) and reporter.done == 0
    assert list(manifest["recording_id"]) == ids
    kinds = manifest["error_kind"].fillna("ok")
    assert 1 <= (kinds == "ok").sum() < len(ids)
    assert set(kinds) == {"ok", "stopped"}
    stopped = manifest[kinds == "stopped"]
    assert (stopped["error"] == "not fetched: the run was stopped").all()
    assert stopped["path"].isna().all()
    for recording_id in stopped["recording_id"]:  # at most a partial file, never a final one
        assert {p.suffix for p in out_dir.glob(f"{file_stem(recording_id)}.*")} <= {".part"}
    saved = read_manifest(manifest_path).set_index("recording_id").loc[ids].reset_index()
    pd.testing.assert_frame_equal(saved, manifest)
    served_before = emulator.stats.total_bytes_served

    again = fetch(emulator, ids, out_dir, manifest_path)

    assert again["error"].isna().all()
    for row in again.itertuples():
        assert sha256(row.path) == emulator.recordings[row.recording_id].sha256
    total = sum(recording.size for recording in emulator.recordings.values())
    assert served_before <= emulator.stats.total_bytes_served <= 1.1 * total  # partials resumed


class DiskFull:
    """Appends under ``folder`` fail with ENOSPC once ``budget`` bytes were written.

    The operating system's answer is simulated at the one place files are
    appended to (``Path.open(..., "ab")``: partial downloads and the journal);
    everything siro_data does about it is real.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, folder: Path, budget: int) -> None:
        self.folder, self.budget = folder, budget
        real_open = Path.open

        def open_(path: Path, mode: str = "r", *args: Any, **kwargs: Any):
            handle = real_open(path, mode, *args, **kwargs)
            if "a" in mode and path.is_relative_to(self.folder):
                return _Metered(handle, self)
            return handle

        monkeypatch.setattr(Path, "open", open_)


class _Metered:
    def __init__(self, handle: Any, disk: DiskFull) -> None:
        self._handle, self._disk = handle, disk

    def write(self, data: bytes) -> int:
        if self._disk.budget < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        self._disk.budget -= len(data)
        return self._handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _Metered:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._handle.close()


def test_full_disk_stops_the_run_keeps_partials_and_a_valid_manifest(
    emulator, out_dir, manifest_path, monkeypatch, caplog
):
    ids = list(emulator.recordings)
    fetch(emulator, ids[:1], out_dir, manifest_path)  # a manifest from before
    half = emulator.recordings[ids[1]].size // 2  # the next one to fetch fills the disk halfway
    emulator.faults.bandwidth = 40_000  # paced: the body arrives in pieces of 2 kB
    disk = DiskFull(monkeypatch, out_dir.parent, budget=half)
    emulator.stats.reset()

    caplog.set_level(logging.INFO, logger="siro_data.core")
    with pytest.raises(OSError) as info:
        fetch(emulator, ids, out_dir, manifest_path, workers=1)

    assert info.value.errno == errno.ENOSPC
    assert str(info.value).startswith(f"cannot write {out_dir.absolute()}/")  # one sentence:
    assert str(info.value).endswith(".part: No space left on device")  # the file, the cause
    assert "cannot write" in caplog.text and "partial files are kept" in caplog.text
    assert emulator.stats.api_requests == 1  # the run stopped at the first failed write
    partials = [path for path in out_dir.iterdir() if path.suffix == ".part"]
    assert len(partials) == 1
    kept = partials[0].stat().st_size
    assert 0 < kept <= half
    saved = read_manifest(manifest_path)  # still whole: the earlier row, nothing half-written
    assert list(saved["recording_id"]) == ids[:1] and saved["error"].isna().all()

    disk.budget = 10**12  # space freed
    emulator.stats.reset()
    again = fetch(emulator, ids, out_dir, manifest_path)

    assert again["error"].isna().all()
    assert not partials[0].exists()
    assert {"bytes=0-", f"bytes={kept}-"} >= {h["range"] for h in emulator.stats.storage_headers}
    assert f"bytes={kept}-" in {h["range"] for h in emulator.stats.storage_headers}  # resumed
    for key in ids[2:]:
        assert emulator.stats.bytes_served[key] == emulator.recordings[key].size
    assert not journal_path(manifest_path).exists()


@pytest.mark.parametrize(
    "where",
    ["/proc/siro-data-cannot-be-here", "file-in-the-way/sub"],
)
def test_unwritable_out_dir_is_reported_before_any_request(
    emulator, tmp_path, manifest_path, where
):
    (tmp_path / "file-in-the-way").write_text("not a folder")
    out_dir = tmp_path / where if not where.startswith("/") else Path(where)
    with pytest.raises(ValueError, match=r"out_dir .* cannot be created"):
        fetch(emulator, list(emulator.recordings), out_dir, manifest_path)
    assert emulator.stats.api_requests == 0


def test_read_only_out_dir_is_reported_before_any_request(emulator, manifest_path):
    """/proc/self exists and refuses every new file, even to root: a write probe tells."""
    with pytest.raises(ValueError, match="out_dir /proc/self is not writable"):
        fetch(emulator, list(emulator.recordings), Path("/proc/self"), manifest_path)
    assert emulator.stats.api_requests == 0


class InterruptOnFirstRow(StopAfterFirstRow):
    """Ctrl-C (or Jupyter's interrupt) landing in the calling thread once a row is final."""

    def finished(self, row: Mapping[str, Any]) -> None:
        self.rows.append(row)

    def poll(self) -> None:
        if self.rows:
            raise KeyboardInterrupt


def test_an_interrupt_saves_the_manifest_then_raises(emulator, out_dir, manifest_path, caplog):
    """Ctrl-C, or the kernel's interrupt in Jupyter: the whole queue stops, as for any cell."""
    emulator.faults.bandwidth = 200_000
    ids = list(emulator.recordings)

    with pytest.raises(KeyboardInterrupt) as info:
        fetch(emulator, ids, out_dir, manifest_path, workers=2, progress=InterruptOnFirstRow())

    assert str(info.value) == (
        f"interrupted: the manifest keeps the rows finished, in {manifest_path};"
        " run again to resume"
    )
    assert info.value.__suppress_context__  # one short message, not the wait() it broke
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    saved = read_manifest(manifest_path)  # saved, with the rows that finished
    assert 1 <= saved["error"].isna().sum() < len(ids)
    assert not journal_path(manifest_path).exists()
    again = fetch(emulator, ids, out_dir, manifest_path)
    assert again["error"].isna().all()
