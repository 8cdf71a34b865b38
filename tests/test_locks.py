"""Per-recording locks: their files last only while held, leftovers are swept, and removing
them never lets two holders in at once (threads and processes contending on one recording).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import portalocker.portalocker
import pytest
from support import fetch

from siro_data.archive import LOCKS_FOLDER
from siro_data.emulator import CONTENT_TYPES, make_recording
from siro_data.exceptions import LocalFileError
from siro_data.locks import recording_lock


def files_besides_audio(out_dir: Path, manifest_path: Path) -> list[str]:
    """Every file under ``out_dir`` that is neither audio nor the manifest."""
    return sorted(
        str(path.relative_to(out_dir))
        for path in out_dir.rglob("*")
        if path.is_file() and path.suffix[1:] not in CONTENT_TYPES and path != manifest_path
    )


def test_a_run_over_1000_recordings_leaves_no_lock_file_behind(start_emulator, tmp_path):
    """The files a run keeps besides the audio do not grow with the archive: here the manifest's
    one lock.

    (The promise is a few hundred at most, whatever the archive's size; the lock files of the
    recordings in flight are the only ones that come and go.)
    """
    tiny = make_recording("tiny", 0.05, "wav")
    recordings = {f"rec-{n:04d}": dataclasses.replace(tiny, id=f"rec-{n:04d}") for n in range(1000)}
    emulator = start_emulator(recordings)
    out_dir = tmp_path / "recordings"
    manifest_path = out_dir / "manifest.parquet"  # its journal and lock count too

    manifest = fetch(emulator, list(recordings), out_dir, manifest_path, requests_per_minute=10**6)

    assert manifest["error"].isna().all()
    assert len(list(out_dir.glob("*.wav"))) == 1000
    assert files_besides_audio(out_dir, manifest_path) == [".manifest.parquet.lock"]


def test_lock_files_nobody_holds_are_swept_and_a_held_one_is_left(emulator, out_dir, manifest_path):
    """What earlier releases (one lock file per recording, forever) and killed runs left goes at
    the start of the next run; the lock of a run still at work stays where it is."""
    locks = out_dir / LOCKS_FOLDER
    locks.mkdir(parents=True)
    for n in range(2000):
        (locks / f"old-{n:04d}.lock").touch()
    busy = recording_lock(locks / "in-flight-elsewhere.lock")
    busy.acquire()
    try:
        manifest = fetch(emulator, list(emulator.recordings), out_dir, manifest_path)
        assert [path.name for path in locks.iterdir()] == ["in-flight-elsewhere.lock"]
    finally:
        busy.release()
    assert manifest["error"].isna().all()
    assert list(locks.iterdir()) == []


CONTEND = textwrap.dedent(
    """
    import json, os, sys, threading
    from pathlib import Path
    from siro_data.locks import acquire, recording_lock

    folder, rounds, threads = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    inside = folder / "inside"  # exists while someone holds the lock
    overlaps, held = [], []

    def contend():
        for _ in range(rounds):
            lock = recording_lock(folder / ".locks" / "contended.lock")
            acquire(lock, 0.001, lambda: None)  # tries a millisecond apart: contention
            try:
                try:
                    os.close(os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    overlaps.append(1)  # another holder is inside: exclusion broken
                    continue
                held.append(1)
                os.sched_yield()
                os.unlink(inside)
            finally:
                lock.release()

    workers = [threading.Thread(target=contend) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps({"held": len(held), "overlaps": len(overlaps)}))
    """
)


def test_one_recording_is_never_held_twice_while_lock_files_come_and_go(tmp_path):
    """Processes of several threads take one recording's lock in turn, as fast as they can: the
    file is removed and made again at every turn, and never do two holders overlap."""
    (tmp_path / LOCKS_FOLDER).mkdir()
    processes, rounds, threads = 4, 60, 3
    contenders = [
        subprocess.Popen(
            [sys.executable, "-c", CONTEND, str(tmp_path), str(rounds), str(threads)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = []
    for contender in contenders:
        out, err = contender.communicate(timeout=120)
        assert contender.returncode == 0, err
        results.append(json.loads(out))

    assert sum(result["overlaps"] for result in results) == 0
    assert sum(result["held"] for result in results) == processes * rounds * threads
    assert list((tmp_path / LOCKS_FOLDER).iterdir()) == []


def test_a_file_system_without_flock_stops_the_run_with_a_sentence(
    emulator, out_dir, manifest_path, monkeypatch
):
    def refuse(file: object, flags: object) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(portalocker.portalocker, "LOCKER", (refuse, lambda file: None))

    with pytest.raises(LocalFileError) as stopped:
        fetch(emulator, list(emulator.recordings), out_dir, manifest_path)

    assert str(stopped.value).startswith(f"cannot write {out_dir.absolute() / LOCKS_FOLDER}/")
    assert "Function not implemented" in str(stopped.value)
    assert emulator.stats.total_bytes_served == 0
