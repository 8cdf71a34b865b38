"""Files written whole or not at all, with the mode the umask gives.

A file is written under a temporary name beside its target (``.<name>.<random>.tmp``:
a dot name, which parquet readers and ``ls`` pass over) and renamed into place
once complete, so a crash leaves the old file or the new one, never half of
one. The temporary file is created as any command-line tool creates files
(``0o666`` less the umask), not ``0o600`` as :func:`tempfile.mkstemp` does: a
colleague of the same group can read and replace it in a shared folder.
"""

from __future__ import annotations

import glob
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """This process's umask, read without changing it where the system says it (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _umask_lock:  # elsewhere: set and put back, the only portable way to read it
        current = os.umask(0o022)
        os.umask(current)
    return current


_umask_lock = threading.Lock()


def new_file_mode() -> int:
    """The mode a new file gets here: ``0o666`` less the umask (``0o664`` under ``002``).

    For the files created through a library that sets a mode of its own
    (filelock), so that they follow the umask as the others do.

    Examples
    --------
    >>> new_file_mode() == 0o666 & ~umask()
    True
    """
    return 0o666 & ~umask()


def temporary_prefix(path: Path) -> str:
    """How the temporary files of ``path`` begin."""
    return f".{path.name}."


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write; on success it replaces ``path``, on failure it is removed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "state.json"
    >>> with replacing(target) as temporary:
    ...     _ = temporary.write_text("{}")
    >>> target.read_text(), [p.name for p in target.parent.iterdir()]
    ('{}', ['state.json'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _create(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_stale(path: str | os.PathLike[str]) -> None:
    """Remove temporary files of ``path`` that a killed writer left behind.

    Call it only where no other writer can be at work (under the file's lock).
    """
    path = Path(path)
    for stale in path.parent.glob(f"{glob.escape(temporary_prefix(path))}*.tmp"):
        stale.unlink(missing_ok=True)


def _create(path: Path) -> Path:
    """A new empty file beside ``path``, its mode what the umask gives."""
    while True:
        temporary = path.with_name(f"{temporary_prefix(path)}{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary
