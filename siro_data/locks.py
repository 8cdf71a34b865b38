"""The locks that keep processes sharing one folder apart; where their files lie is
:mod:`siro_data.archive`'s to say.

Two kinds: a file's lock (the manifest's, the listing's, a watermark's), held around every
change and read of it (:func:`exclusive`); and one lock per recording, held while a process
fetches that recording (:func:`recording_lock`).

A file's lock file stays in place. A recording's lock file exists only while
it is held, so the folder holds the recordings in flight, not the archive: the holder
removes it while still holding it, and a taker checks once it has the ``flock`` that the
name still leads to the file it locked, else it tries again (portalocker's
``TemporaryFileLock``). Removing a file so never lets two processes hold one lock.
A killed process leaves its file behind (the kernel drops its ``flock``), and earlier
releases kept one per recording: :func:`sweep` removes those nobody holds.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from portalocker import AlreadyLocked, LockException, TemporaryFileLock

from .files import new_file_mode

try:
    import fcntl
except ImportError:  # Windows: filelock's own lock for the manifest
    fcntl = None

log = logging.getLogger(__name__)

#: How often a thread waiting for a recording's lock tries it again.
RETRY_SECONDS = 0.05


def recording_lock(path: Path) -> TemporaryFileLock:
    """The lock (its file at ``path``) a process holds while it fetches one recording.

    Its file is created as ``open`` creates files (``0o666`` less the umask), so a
    colleague of the group can take it in turn; it is removed on release.
    """
    return TemporaryFileLock(path, check_interval=RETRY_SECONDS, fail_when_locked=False)


def acquire(lock: TemporaryFileLock, poll: float, check: Callable[[], None]) -> None:
    """Wait for ``lock``, calling ``check`` every ``poll`` seconds (it raises to give up).

    A lock the file system refuses (one without ``flock``) is an ``OSError`` naming its file,
    as a file that cannot be written is: the run stops with that sentence.
    """
    while True:
        check()
        try:
            lock.acquire(timeout=poll)
            return
        except AlreadyLocked:
            continue
        except LockException as exc:
            raise OSError(errno.ENOLCK, str(exc.__cause__ or exc), lock.filename) from exc


def try_acquire(lock: TemporaryFileLock) -> bool:
    """Take ``lock`` if nobody holds it, without waiting; whether it was taken."""
    try:
        lock.acquire(timeout=0, fail_when_locked=True)
    except AlreadyLocked:
        return False
    except LockException as exc:
        raise OSError(errno.ENOLCK, str(exc.__cause__ or exc), lock.filename) from exc
    return True


def sweep(folder: Path) -> None:
    """Remove the lock files in ``folder`` that nobody holds.

    Killed processes leave theirs, and earlier releases kept one per recording.
    Each is taken without waiting and removed while held, as a release does: a file in
    use is left alone. Files this account may not open stay; a folder it may not change,
    or a file system without ``flock``, ends the sweep (the run reports what it cannot do
    when it takes a lock).
    """
    removed = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".lock") and _remove_if_free(entry.path):
                    removed += 1
    except FileNotFoundError:  # no folder yet: nothing was ever locked here
        pass
    except OSError as exc:
        log.info("lock files in %s left in place: %s", folder, exc)
    if removed:
        log.info("removed %d lock files nobody held from %s", removed, folder)


if fcntl is None:

    def _remove_if_free(path: str) -> bool:
        """Windows: a file open anywhere cannot be removed, and every holder has it open."""
        try:
            os.unlink(path)
        except (PermissionError, FileNotFoundError):
            return False
        return True

else:

    def _remove_if_free(path: str) -> bool:
        """Take ``path``'s lock without waiting and, while holding it, remove the file."""
        try:
            descriptor = os.open(path, os.O_RDWR)
        except (PermissionError, FileNotFoundError):  # another account's file; gone meanwhile
            return False
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held: a run is fetching that recording
                return False
            try:
                locked_what_is_there = os.path.samestat(os.fstat(descriptor), os.stat(path))
            except FileNotFoundError:
                return False
            if locked_what_is_there:  # else its holder removed it before our flock
                os.unlink(path)
            return locked_what_is_there
        finally:
            os.close(descriptor)


@contextmanager
def exclusive(lock: Path, optional: bool = False) -> Iterator[None]:
    """Hold the lock whose file is ``lock`` (re-entrant within a thread).

    ``optional``: where the lock cannot be created (a read-only folder, where
    nobody can be writing either), go on without it.

    On POSIX this is the ``flock`` filelock takes (either excludes the other) without
    filelock's bookkeeping, which costs 0.3 to 1 ms a call: every finished row takes it.
    """
    if fcntl is not None:
        held = _flock(lock.absolute(), optional)
        if held is not _UNSUPPORTED:
            try:
                yield
            finally:
                _unflock(held)
            return
    fallback = FileLock(lock, is_singleton=True, mode=new_file_mode())
    try:
        fallback.acquire()
    except OSError:
        if not optional:
            raise
        yield
        return
    try:
        yield
    finally:
        fallback.release()


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
