"""The archive on this machine's disk (or a file system it mounts): how its pieces are written.

Where each piece lives is :mod:`siro_data.archive`'s to say; here is how. Files are
written whole or not at all (a temporary name, then a rename), with the mode the umask
gives, so that colleagues of a group share a setgid folder. Every change to the manifest
(a journal line, a fold into parquet) and every read of it happens under its ``flock``;
the watermark and the listing likewise under theirs. A recording's lock is a file that
exists while it is held (:mod:`siro_data.locks`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import journal, store
from .files import remove_stale, replacing
from .filesystems import Listed
from .locks import exclusive, recording_lock, sweep
from .rows import Row


def ensure_writable_dir(folder: Path, what: str) -> None:
    """Make ``folder`` if needed; fail before any request when results could not be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{what} {folder} cannot be created: {exc.strerror}") from None
    if not folder.is_dir():
        raise ValueError(f"{what} {folder} is not a folder")
    try:  # a real write: permissions, read-only mounts and ACLs all answer it
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"{what} {folder} is not writable: {exc.strerror}") from None


def check_openable(files: Iterable[tuple[str, Path, int]]) -> None:
    """Fail before any request when a file of the run cannot be opened as the run will open
    it: ``(name in the message, path, os.open flags)`` each; one not there yet is made later.
    """
    for name, file, flags in files:
        try:
            os.close(os.open(file, flags))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ValueError(f"the {name} {file} cannot be opened: {exc.strerror}") from None


class DiskTable:
    """A parquet file of one row per recording (the manifest, the listing), changed under its
    lock, replaced whole at each fold."""

    def __init__(self, path: Path, lock: Path, schema: pa.Schema, dictionary: Sequence[str]):
        self.path = path
        self.lock = lock
        self.schema = schema
        self.dictionary = dictionary

    @property
    def location(self) -> str:
        return os.fspath(self.path)

    def check(self, what: str) -> None:
        ensure_writable_dir(self.path.parent, f"the {what}'s folder")
        check_openable([(what, self.path, os.O_RDONLY), (f"{what}'s lock", self.lock, os.O_RDWR)])

    def scan(self, wanted: pa.Array | None = None) -> pa.Table:
        with exclusive(self.lock, optional=True):
            return store.scan(self.path, self.schema, wanted)

    def read(self, columns: list[str], filters: list[tuple[str, str, Any]]) -> pa.Table | None:
        """Some columns of the rows that pass ``filters``; None when there is no file."""
        if not self.path.exists():
            return None
        with exclusive(self.lock, optional=True):
            return pq.read_table(self.path, columns=columns, filters=filters)

    def fold(self, new: pa.Table, order: Sequence[str | None] | pa.Array = ()) -> int:
        """Fold ``new`` rows in, whole or not at all; the rows the file holds."""
        with exclusive(self.lock):
            remove_stale(self.path)  # temporaries of a save that was killed
            return store.fold(self.path, self.schema, new, order, self.dictionary)

    def rows(self) -> int:
        return store.rows_in(self.path)

    def exists(self) -> bool:
        return self.path.exists()


class DiskManifest:
    """The manifest on a disk: its parquet file, and a journal of JSON lines beside it.

    Each finished row costs one short append, under the manifest's lock, so lines of several
    processes never interleave and none is lost to another's fold; a line torn by a kill is
    skipped on reading and fenced off by a newline before the next append.
    """

    def __init__(self, table: DiskTable, journal_file: Path) -> None:
        self.table = table
        self.journal = journal_file

    @property
    def location(self) -> str:
        return os.fspath(self.table.path)

    def check(self) -> None:
        self.table.check("manifest")
        check_openable([("manifest's journal", self.journal, os.O_WRONLY | os.O_APPEND)])

    def exists(self) -> bool:
        return self.table.exists() or self.journal.exists()

    def read_rows(self, wanted: pa.Array | None = None) -> pa.Table:
        with exclusive(self.table.lock, optional=True):
            saved = self.table.scan(wanted)
            new = journal.read_lines(self.journal)
        if wanted is not None:
            new = new.filter(pc.is_in(new.column(store.KEY), value_set=wanted))
        return store.merged(saved, new)

    def append(self, rows: Iterable[Row]) -> None:
        lines = journal.encode_lines(rows)
        if not lines:
            return
        with exclusive(self.table.lock):
            # One descriptor both reads the last byte and appends (a file object would not).
            descriptor = os.open(self.journal, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                end = os.fstat(descriptor).st_size
                fence = b"\n" if end and os.pread(descriptor, 1, end - 1) != b"\n" else b""
                data = memoryview(fence + lines)
                while data:
                    data = data[os.write(descriptor, data) :]
            except OSError as exc:  # a failed write does not say which file: this one
                exc.filename = exc.filename or str(self.journal)
                raise
            finally:
                os.close(descriptor)

    def flush(self) -> None:
        """Every line is written through at once: nothing is held back."""

    def save(self, order: Sequence[str | None] | pa.Array = ()) -> int:
        """Fold the journal into the parquet file, then drop the journal; the rows it holds.
        With nothing journaled and the file in place, the file is left as it is."""
        with exclusive(self.table.lock):
            new = journal.read_lines(self.journal)
            if new.num_rows == 0 and self.table.exists():
                count = self.table.rows()
            else:
                count = self.table.fold(new, order)
            self.journal.unlink(missing_ok=True)
        del new
        pa.default_memory_pool().release_unused()  # what reading and writing took, back now
        return count

    def write(self, rows: pa.Table) -> None:
        """Replace the manifest with ``rows`` (the journal left as it is)."""
        store.write(rows, self.table.path, self.table.dictionary)


class DiskDocument:
    """A small JSON file (a watermark) read freely, changed under its lock, written whole."""

    def __init__(self, path: Path, lock: Path) -> None:
        self.path = path
        self.lock = lock

    @property
    def location(self) -> str:
        return os.fspath(self.path)

    def check(self, what: str) -> None:
        check_openable([(what, self.path, os.O_RDONLY), (f"{what}'s lock", self.lock, os.O_RDWR)])

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def update(self, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> None:
        """Write ``change(current)`` whole, where nobody else writes meanwhile (None: leave)."""
        with exclusive(self.lock):
            state = change(self.read())
            if state is None:
                return
            with replacing(self.path) as temporary:
                temporary.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


class DiskAudio:
    """The audio folder on a disk: files beside their partials, locks in a folder of its own."""

    def __init__(self, folder: Path, locks: Path) -> None:
        self.folder = folder
        self.locks = locks

    @property
    def location(self) -> str:
        return os.fspath(self.folder)

    def check(self) -> None:
        ensure_writable_dir(self.folder, "out_dir")

    def sweep(self) -> None:
        """Lock files nobody holds (killed runs', earlier releases'), removed."""
        sweep(self.locks)

    def final(self, name: str) -> str:
        return os.fspath(self.folder / name)

    def presence(self, count: int) -> Callable[[list[str], list[int]], list[bool]]:
        """How to tell whether each file exists with its size: one ``stat`` each."""
        return lambda paths, sizes: [
            _stored_size(path) == size for path, size in zip(paths, sizes, strict=True)
        ]

    def exists(self, final: str) -> bool:
        return os.path.exists(final)

    def existing(self, paths: list[str]) -> list[bool]:
        return [os.path.exists(path) for path in paths]

    def partial(self, stem: str) -> Path:
        return self.folder / f"{stem}.part"

    def lock(self, stem: str) -> Any:
        self.locks.mkdir(exist_ok=True)
        return recording_lock(self.locks / f"{stem}.lock")

    def prepare(self, final: str, partial: Path, discard: bool) -> None:
        """Discard earlier bytes, or turn a file no complete row accounts for back into a
        partial: a run killed between the rename and its journal line leaves such a file,
        and resuming it costs one ranged request (416 when it is whole)."""
        if discard:
            Path(final).unlink(missing_ok=True)
            partial.unlink(missing_ok=True)
        elif os.path.exists(final):
            os.replace(final, partial)

    def commit(self, partial: Path, final: str, size: int, md5: str) -> None:
        """The complete, checked partial renamed into place."""
        os.replace(partial, final)

    def files(self) -> dict[str, Listed]:
        """Every file right in the folder with its size (a ``stat`` each; a disk keeps no
        MD5); folders aside."""
        found: dict[str, Listed] = {}
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    size = _entry_size(entry)
                    if size is not None:
                        found[entry.path] = Listed(size, None)
        except FileNotFoundError:  # no folder: no file
            pass
        return found

    def leftovers(self) -> list[Path]:
        """Partials and temporary files beside the audio: a run's at work, or a killed one's."""
        return leftovers(self.folder)

    def reader(self, path: str) -> IO[bytes]:
        """``path`` opened to read, unbuffered: the caller reads large blocks."""
        return open(path, "rb", buffering=0)

    def remove(self, final: str) -> bool:
        """Remove a file of the folder (a recording's audio, its copy); whether it was there."""
        try:
            os.unlink(final)
        except FileNotFoundError:
            return False
        return True

    @contextmanager
    def localized(self, path: str) -> Iterator[Path]:
        """A local file with ``path``'s bytes: the file itself."""
        yield Path(path)

    def keep(self, local: Path, final: str) -> None:
        """A file made beside the audio (a WAV copy) is already where it belongs."""
        if os.fspath(local) != final:
            os.replace(local, final)


def manifest_parts(folder: Path) -> list[Path]:
    """The manifests in a folder (a Dask run's): parquet files, and journals whose file is not
    saved yet."""
    saved = {path.name for path in folder.glob("*.parquet")}
    journaled = {p.name[1 : -len(".journal")] for p in folder.glob(".*.parquet.journal")}
    return [folder / name for name in sorted(saved | journaled)]


def leftovers(folder: Path) -> list[Path]:
    """The partials (``<stem>.part``) and temporary files (``*.tmp``) right in ``folder``."""
    try:
        with os.scandir(folder) as entries:
            names = [entry.name for entry in entries]
    except FileNotFoundError:
        return []
    return [folder / name for name in sorted(names) if name.endswith((".part", ".tmp"))]


def _entry_size(entry: os.DirEntry[str]) -> int | None:
    """A directory entry's size; None for a folder, or a file gone since it was listed."""
    try:
        if not entry.is_file(follow_symlinks=False):
            return None
        return entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        return None


def _stored_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None
