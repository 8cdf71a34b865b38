"""The locks that keep processes sharing one folder apart.

Two kinds: the manifest's lock (``.<manifest>.lock`` beside it), held around
every journal line, fold into parquet and read; and one lock per recording
(``out_dir/.locks/<name>.lock``), held while a process fetches that file.
Lock files are left in place: deleting one races with a process waiting on it.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from .files import new_file_mode

try:
    import fcntl
except ImportError:  # Windows: filelock's own lock
    fcntl = None

#: Folder in ``out_dir`` for the per-recording locks.
LOCKS_FOLDER = ".locks"


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file that sits beside a manifest (a dot name: parquet readers skip it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def recording_lock(out_dir: Path, stem: str) -> FileLock:
    """The lock a process holds while it fetches the recording stored as ``stem``.

    Its file follows the umask, so a colleague of the group can take it in turn.
    """
    return FileLock(out_dir / LOCKS_FOLDER / f"{stem}.lock", mode=new_file_mode())


def acquire(lock: FileLock, poll: float, check: Callable[[], None]) -> None:
    """Wait for ``lock``, calling ``check`` every ``poll`` seconds (it raises to give up)."""
    while True:
        check()
        try:
            lock.acquire(timeout=poll)
            return
        except Timeout:
            continue


@contextmanager
def manifest_lock(path: Path, optional: bool = False) -> Iterator[None]:
    """Hold the manifest's lock (re-entrant within a thread).

    ``optional``: where the lock cannot be created (a read-only folder, where
    nobody can be writing either), go on without it.

    On POSIX this is the ``flock`` filelock takes (either excludes the other) without
    filelock's bookkeeping, which costs 0.3 to 1 ms a call: every finished row takes it.
    """
    if fcntl is not None:
        held = _flock(lock_path(path).absolute(), optional)
        if held is not _UNSUPPORTED:
            try:
                yield
            finally:
                _unflock(held)
            return
    lock = FileLock(lock_path(path), is_singleton=True, mode=new_file_mode())
    try:
        lock.acquire()
    except OSError:
        if not optional:
            raise
        yield
        return
    try:
        yield
    finally:
        lock.release()


_held = threading.local()  # .paths: lock file → depth, for the locks this thread holds
_UNSUPPORTED = object()


def _flock(lock: Path, optional: bool) -> object:
    """Take `lock` (blocking, re-entrant within a thread): what :func:`_unflock` needs.

    None when `optional` and the lock file cannot be made; ``_UNSUPPORTED`` where the
    file system has no ``flock`` (filelock then falls back to a lock of its own).
    """
    depths: dict[Path, int] = _held.__dict__.setdefault("paths", {})
    if depths.get(lock):
        depths[lock] += 1
        return lock, None
    try:
        try:
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # as filelock does, make the folder
            lock.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        if not optional:
            raise
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
    except BaseException as exc:
        os.close(descriptor)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSYS:
            return _UNSUPPORTED
        raise
    depths[lock] = 1
    return lock, descriptor


def _unflock(held: object) -> None:
    if held is None:
        return
    lock, descriptor = held
    depths: dict[Path, int] = _held.paths
    if descriptor is None:
        depths[lock] -= 1
        return
    del depths[lock]
    try:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
