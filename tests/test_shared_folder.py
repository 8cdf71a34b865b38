"""A team's shared folder: files follow the umask, two colleagues of one group share a setgid
folder (one killed midway), a colleague who may only read gets a sentence, and a folder that
disappears mid-run is a sentence too, never a traceback.

The colleagues are forked children of the test process that take numeric user and group ids
no account needs (only root may): the interpreter and every module they use are loaded
before the fork, since they could not read them after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from support import TOKEN, fetch, require, sha256

import siro_data
from siro_data import cli
from siro_data.archive import LOCKS_FOLDER, journal_path

GROUP = 12_000  # the team's group
ALICE, BOB, READER = 12_001, 12_002, 12_003  # BOB shares ALICE's group; READER does not
OUTSIDERS = 12_999


def modes(folder: Path) -> dict[str, int]:
    """Every file and folder under ``folder`` (itself excluded): relative name → ``st_mode``."""
    found = {}
    for path in folder.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # a lock released, a partial renamed
            found[str(path.relative_to(folder))] = path.lstat().st_mode
    return found


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


class Watch:
    """A reporter that looks at the files a run has open: at its first bytes (a partial file
    is there) and at its first finished row (the journal is)."""

    def __init__(self, look: Callable[[], None]) -> None:
        self.look = look
        self.moments = {"bytes", "row"}
        self._lock = threading.Lock()

    def _once(self, moment: str) -> None:
        with self._lock:
            if moment in self.moments:
                self.moments.discard(moment)
                self.look()

    def start(self, total: int, done: int, stop: Callable[[], None]) -> None:
        pass

    def finished(self, row: Mapping[str, Any]) -> None:
        self._once("row")

    def add_bytes(self, count: int) -> None:
        self._once("bytes")

    def poll(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("mask", [0o002, 0o022])
def test_every_file_and_folder_follows_the_umask(emulator, tmp_path, mask):
    """Audio, partials, copies, the manifest, its journal and lock, the locks, the listing and
    the watermark: each gets 0o666 less the umask, each folder 0o777 less it."""
    folder = tmp_path / "data"
    manifest_path = folder / "manifest.parquet"
    during: dict[str, int] = {}

    def look() -> None:  # mid-run: the journal and a partial file exist
        during.update(modes(folder))

    emulator.faults.bandwidth = 300_000
    with umask(mask):
        fetch(
            emulator,
            list(emulator.recordings),
            folder / "recordings",
            manifest_path,
            workers=2,
            convert_to="wav",
            progress=Watch(look),
        )
        siro_data.sync(
            manifest_path,
            folder / "recordings",
            since="2025-05-01",
            token=TOKEN,
            api_url=emulator.api_url,
            progress=False,
        )
    after = modes(folder)
    names = {*during, *after}
    assert journal_path(manifest_path).name in during
    assert any(name.endswith(".part") for name in during)
    assert any(name.endswith(".wav") for name in after)
    locks = f"recordings/{LOCKS_FOLDER}"
    assert {".manifest.parquet.lock", "manifest.listing.parquet", locks} <= names
    assert any(name.startswith(".manifest.parquet.sync-") for name in after)
    assert any(name.startswith(f"{locks}/") for name in during)  # held while fetching
    assert not any(name.startswith(f"{locks}/") for name in after)  # and removed on release
    for name, mode in {**during, **after}.items():
        expected = (0o777 if stat.S_ISDIR(mode) else 0o666) & ~mask
        assert stat.S_IMODE(mode) == expected, f"{name}: {stat.S_IMODE(mode):o}, not {expected:o}"


# --- colleagues ------------------------------------------------------------------------------


@pytest.fixture
def shared(emulator) -> Iterator[Path]:
    """A folder of the team's group, setgid, group-writable, that the colleagues can reach.

    Everything the colleagues run is imported here first, by a run of the command itself.
    """
    require(os.geteuid() == 0, "colleagues need root to take other user ids")
    top = Path(tempfile.mkdtemp(prefix="siro-team-", dir="/tmp"))
    top.chmod(0o755)
    folder = top / "team"
    folder.mkdir()
    os.chown(folder, 0, GROUP)
    folder.chmod(0o2775)
    ids = folder / "ids.csv"
    ids.write_text("recording_id\n" + "\n".join(emulator.recordings) + "\n")
    ids.chmod(0o664)
    warm = Path(tempfile.mkdtemp(prefix="siro-warm-"))
    environment = {"SIRO_AUTH_TOKEN": TOKEN, "SIRO_API_URL": emulator.api_url}
    with patched_environment(environment):
        assert cli.main(["fetch", str(ids), "-q", *places(warm)]) == 0
    shutil.rmtree(warm)
    emulator.stats.reset()
    try:
        yield folder
    finally:
        shutil.rmtree(top)


@contextlib.contextmanager
def patched_environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def places(folder: Path) -> list[str]:
    return ["--out-dir", str(folder / "recordings"), "--manifest", str(folder / "manifest.parquet")]


class Colleague:
    """``siro-data`` run by another user of the machine, in a forked child of this process."""

    def __init__(self, uid: int, gid: int, folder: Path, emulator, *argv: str) -> None:
        self.streams = [tempfile.mkstemp(prefix="colleague-") for _ in range(2)]  # out, err
        self.pid = os.fork()
        if self.pid == 0:  # the child: become the colleague, run the command, never return
            code = 70
            try:
                # Its own output, whatever the test runner did with this process's streams.
                sys.stdout = open(self.streams[0][0], "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(self.streams[1][0], "w", closefd=False)  # noqa: SIM115
                os.setgroups([gid])
                os.setgid(gid)
                os.setuid(uid)
                os.umask(0o002)
                os.environ.update(SIRO_AUTH_TOKEN=TOKEN, SIRO_API_URL=emulator.api_url)
                ids = str(folder / "ids.csv")
                code = cli.main(["fetch", ids, "-q", "--workers", "2", *places(folder), *argv])
            except BaseException as exc:  # shows in the test's failure, and in the exit status
                sys.stderr.write(f"colleague crashed: {exc!r}\n")
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        for descriptor, name in self.streams:
            os.close(descriptor)
            Path(name).unlink()

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail("the colleague's run did not end")
            time.sleep(0.05)
        texts = []
        for descriptor, name in self.streams:
            os.close(descriptor)
            texts.append(Path(name).read_text())
            Path(name).unlink()
        return os.waitstatus_to_exitcode(status), *texts


def test_two_colleagues_share_a_setgid_folder_and_a_kill_costs_nothing(emulator, shared):
    """Alice is killed mid-run; Bob, of her group, takes her rows without fetching them again,
    continues her partial file and removes the lock files her kill left; Alice's next run asks
    nothing."""
    emulator.faults.bandwidth = 150_000
    alice = Colleague(ALICE, GROUP, shared, emulator)
    journal = journal_path(shared / "manifest.parquet")
    deadline = time.monotonic() + 60
    while not (journal.exists() and journal.read_text().count("\n") >= 2 and partials(shared)):
        assert time.monotonic() < deadline, "Alice finished no row, or left no partial file"
        time.sleep(0.02)
    alice.kill()
    finished_by_alice = journaled(journal)  # read before Bob folds the journal away
    held = {path.stem: path.stat().st_size for path in partials(shared)}
    locks = shared / "recordings" / LOCKS_FOLDER
    left_by_the_kill = list(locks.iterdir())  # a partial in flight: its lock was held
    assert finished_by_alice and held and left_by_the_kill
    emulator.faults.bandwidth = None
    emulator.stats.reset()

    code, out, err = Colleague(BOB, GROUP, shared, emulator).wait()

    assert code == 0, err
    assert f"{len(emulator.recordings)} recordings: {len(emulator.recordings)} ok" in out
    assert not finished_by_alice & set(emulator.stats.api_calls)  # taken, not fetched again
    resumed = {
        headers["range"]
        for headers in emulator.stats.storage_headers
        if headers.get("range", "bytes=0-") != "bytes=0-"
    }
    assert {f"bytes={size}-" for size in held.values()} <= resumed  # her partials, continued
    manifest = siro_data.read_manifest(shared / "manifest.parquet")
    for row in manifest.itertuples():
        assert sha256(row.path) == emulator.recordings[row.recording_id].sha256
    assert list(locks.iterdir()) == []  # Alice's, taken in turn and removed
    for name, mode in modes(shared).items():
        assert (shared / name).stat().st_gid == GROUP, name
        expected = 0o2775 if stat.S_ISDIR(mode) else 0o664
        assert stat.S_IMODE(mode) == expected, f"{name}: {stat.S_IMODE(mode):o}"

    emulator.stats.reset()
    code, _, err = Colleague(ALICE, GROUP, shared, emulator).wait()
    assert code == 0, err
    assert emulator.stats.api_requests == 0 and sum(emulator.stats.storage_requests.values()) == 0


def partials(folder: Path) -> list[Path]:
    return [path for path in (folder / "recordings").glob("*.part") if path.stat().st_size]


def partial_under_way(folder: Path) -> bool:
    for path in folder.glob("*.part"):
        with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
            if path.stat().st_size:
                return True
    return False


def journaled(journal: Path) -> set[str]:
    """The ids of the rows a journal holds (a line torn by the kill left out)."""
    ids = set()
    for line in journal.read_text().splitlines():
        with contextlib.suppress(ValueError):
            ids.add(json.loads(line)["recording_id"])
    return ids


def test_a_colleague_who_may_only_read_is_told_why_before_any_request(emulator, shared):
    code, _, err = Colleague(ALICE, GROUP, shared, emulator).wait()
    assert code == 0, err
    emulator.stats.reset()

    code, _, err = Colleague(READER, OUTSIDERS, shared, emulator).wait()

    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"siro-data: error: out_dir {shared / 'recordings'} is not writable")
    assert "Permission denied" in err
    assert emulator.stats.api_requests == 0


def test_a_journal_a_colleague_cannot_append_to_is_named_before_any_request(emulator, shared):
    """An older run of Alice's left its journal readable only: Bob is told which file and why."""
    emulator.faults.bandwidth = 150_000
    alice = Colleague(ALICE, GROUP, shared, emulator)
    journal = journal_path(shared / "manifest.parquet")
    deadline = time.monotonic() + 60
    while not (journal.exists() and journal.stat().st_size):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    alice.kill()
    journal.chmod(0o644)
    emulator.stats.reset()

    code, _, err = Colleague(BOB, GROUP, shared, emulator).wait()

    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert f"the manifest's journal {journal} cannot be opened: Permission denied" in err
    assert emulator.stats.api_requests == 0


def test_a_folder_removed_mid_run_stops_with_a_sentence(emulator, tmp_path):
    """The audio folder disappears under a run: one line naming the file and the cause, exit 2,
    the rows finished before kept in the manifest."""
    emulator.faults.bandwidth = 200_000
    ids = tmp_path / "ids.csv"
    ids.write_text("recording_id\n" + "\n".join(emulator.recordings) + "\n")
    audio, manifest_path = tmp_path / "audio", tmp_path / "manifest" / "manifest.parquet"
    command = [sys.executable, "-m", "siro_data.cli", "fetch", str(ids), "-q", "--workers", "1"]
    command += ["--out-dir", str(audio), "--manifest", str(manifest_path)]
    environment = {**os.environ, "SIRO_AUTH_TOKEN": TOKEN, "SIRO_API_URL": emulator.api_url}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    journal = journal_path(manifest_path)
    # A row finished, and the next download under way: its file goes with the folder.
    while not (journal.exists() and journal.stat().st_size and partial_under_way(audio)):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    shutil.rmtree(audio)
    _, err = process.communicate(timeout=120)

    assert process.returncode == 2
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"siro-data: error: cannot write {audio}/")
    assert "No such file or directory; the run stopped" in err
    saved = siro_data.read_manifest(manifest_path)
    assert saved["error"].isna().sum() >= 1
