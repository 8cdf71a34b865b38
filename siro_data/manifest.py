"""The manifest: one row per recording, its schema defined here once.

On disk it is a parquet file plus, while a run is going, an append-only
journal of JSON lines beside it (``<manifest>.journal``). Each finished row
costs one short append, however many rows came before; the journal is folded
into the parquet file at the end of a run and read back after a crash, so a
killed run loses no finished row.

Several processes may share one manifest: every change to it (a journal line,
a fold into parquet) and every read of it happens under a lock file beside it
(``<manifest>.lock``).
"""

from __future__ import annotations

import errno
import glob
import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

try:
    import fcntl
except ImportError:  # Windows: filelock's own lock
    fcntl = None

log = logging.getLogger(__name__)

#: Column → pandas dtype, in order.
COLUMNS: dict[str, str] = {
    "recording_id": "string",
    "path": "string",
    "expiration": "datetime64[ns, UTC]",
    "error": "string",
    "duration": "float64",
    "size_bytes": "Int64",
    "error_kind": "string",
    "sha256": "string",
    "content_type": "string",
    "fetched_at": "datetime64[ns, UTC]",
    "audio_path": "string",
}

SCHEMA = pa.schema(
    [
        (name, pa.timestamp("ns", tz="UTC"))
        if dtype.startswith("datetime64")
        else (name, {"string": pa.string(), "float64": pa.float64(), "Int64": pa.int64()}[dtype])
        for name, dtype in COLUMNS.items()
    ]
)

Row = Mapping[str, Any]


def to_frame(rows: Iterable[Row] | pd.DataFrame) -> pd.DataFrame:
    """Rows (dicts or a frame) as a manifest frame: exactly the columns, in order, typed.

    Examples
    --------
    >>> to_frame([{"recording_id": "a", "error": "404: Recording not found"}]).dtypes["size_bytes"]
    Int64Dtype()
    """
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    typed = {}
    for name, dtype in COLUMNS.items():
        column = frame[name] if name in frame else pd.Series([None] * len(frame), dtype=object)
        if dtype.startswith("datetime64"):
            typed[name] = pd.to_datetime(column, utc=True, format="ISO8601").astype(dtype)
        else:
            typed[name] = column.astype(dtype)
    return pd.DataFrame(typed, index=pd.RangeIndex(len(frame)))


def empty_manifest() -> pd.DataFrame:
    """A manifest with no rows, with the full schema."""
    return to_frame([])


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a manifest to parquet atomically: a crash leaves the old file or the new, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(to_frame(manifest), schema=SCHEMA, preserve_index=False)
    fd, temporary = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def journal_path(path: str | os.PathLike[str]) -> Path:
    """The journal that sits beside a manifest while rows are being added.

    Its name starts with a dot, as the lock's does: parquet readers skip such
    files, so a folder of manifests reads as one dataset.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.journal")


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a manifest, with the rows its journal holds from an unfinished run.

    The latest row of each recording wins. A missing file reads as an empty
    manifest; dtypes are exactly those :func:`siro_data.fetch_all` returns.
    ``path`` may also be a folder of manifests (one per partition, as a Dask
    run writes them): it reads as one, the latest ``fetched_at`` winning.
    """
    path = Path(path)
    if path.is_dir():
        return _read_dataset(path)
    parts = []
    with _locked(path, optional=True):
        if path.exists():
            parts.append(to_frame(pq.read_table(path).to_pandas()))
        journal = _read_journal(journal_path(path))
    if journal:
        parts.append(to_frame(journal))
    if not parts:
        return empty_manifest()
    return latest_rows(pd.concat(parts, ignore_index=True))


def _read_dataset(folder: Path) -> pd.DataFrame:
    journaled = (name[1 : -len(".journal")] for name in _names(folder, ".*.parquet.journal"))
    names = sorted(set(_names(folder, "*.parquet")) | set(journaled))
    parts = [read_manifest(folder / name) for name in names]
    if not parts:
        return empty_manifest()
    rows = pd.concat(parts, ignore_index=True)
    by_time = rows.sort_values("fetched_at", kind="stable", na_position="first")
    return latest_rows(by_time.reset_index(drop=True))


def _names(folder: Path, pattern: str) -> list[str]:
    return [path.name for path in folder.glob(pattern) if not path.name.endswith(".tmp")]


def latest_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per recording: its latest, in the order recordings first appeared."""
    first_seen, _ = pd.factorize(manifest["recording_id"], use_na_sentinel=False)
    latest = pd.Series(range(len(manifest))).groupby(first_seen).last()
    return to_frame(manifest.iloc[latest.to_numpy()].reset_index(drop=True))


class Journal:
    """Append-only record of finished rows, one JSON line each, written through at once.

    Each append opens the file anew under the manifest's lock, so lines of
    several processes never interleave and none is lost to another's
    :func:`compact`. A line torn by a kill is skipped on reading and fenced
    off by a newline before the next append.
    """

    def __init__(self, manifest_path: str | os.PathLike[str]) -> None:
        self.manifest_path = Path(manifest_path)
        self.path = journal_path(manifest_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, row: Row) -> None:
        """Record one finished row."""
        line = json.dumps({name: _jsonable(row.get(name)) for name in COLUMNS}).encode("utf-8")
        with _locked(self.manifest_path):
            # One descriptor both reads the last byte and appends (a file object would not).
            journal = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                end = os.fstat(journal).st_size
                fence = b"\n" if end and os.pread(journal, 1, end - 1) != b"\n" else b""
                data = memoryview(fence + line + b"\n")
                while data:
                    data = data[os.write(journal, data) :]
            finally:
                os.close(journal)


def compact(path: str | os.PathLike[str], order: Sequence[str | None] = ()) -> pd.DataFrame:
    """Fold the journal into the parquet file, then drop the journal; the whole manifest.

    Rows are journaled as they finish; recordings new to the file and named in
    ``order`` (a call's ids) are saved in that order instead. With nothing
    journaled and the file in place, the file is left as it is. Temporary
    files left by a save that was killed are removed.
    """
    path = Path(path)
    journal = journal_path(path)
    with _locked(path):
        for stale in path.parent.glob(f"{glob.escape(_temporary_prefix(path))}*.tmp"):
            stale.unlink(missing_ok=True)
        unchanged = path.exists() and (not journal.exists() or journal.stat().st_size == 0)
        if unchanged:
            manifest = read_manifest(path)
        else:
            before = _saved_ids(path)
            manifest = _new_rows_in_order(read_manifest(path), before, order)
            write_manifest(manifest, path)
        journal.unlink(missing_ok=True)
    return manifest


def _saved_ids(path: Path) -> set[str | None]:
    if not path.exists():
        return set()
    return set(pq.read_table(path, columns=["recording_id"]).column(0).to_pylist())


def _new_rows_in_order(
    manifest: pd.DataFrame, before: set[str | None], order: Sequence[str | None]
) -> pd.DataFrame:
    """The rows of recordings not in ``before`` and named in ``order``, put in that order
    within the places they hold; every other row stays where it is.
    """
    rank = {key: position for position, key in enumerate(order)}
    ids = [None if key is pd.NA else key for key in manifest["recording_id"].tolist()]
    slots = [row for row, key in enumerate(ids) if key in rank and key not in before]
    rows = list(range(len(manifest)))
    for slot, row in zip(slots, sorted(slots, key=lambda row: rank[ids[row]]), strict=True):
        rows[slot] = row
    return to_frame(manifest.iloc[rows].reset_index(drop=True))


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file that sits beside a manifest."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextmanager
def _locked(path: Path, optional: bool = False) -> Iterator[None]:
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
    lock = FileLock(lock_path(path), is_singleton=True)
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


def _read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                log.warning("skipping a torn line %d of the manifest journal", number)
    return rows


def _jsonable(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def summarize(manifest: pd.DataFrame) -> str:
    """A few lines for people: counts, errors by kind with an example, hours of audio.

    Examples
    --------
    >>> print(summarize(to_frame([{"recording_id": "a", "duration": 5400.0, "size_bytes": 10},
    ...                           {"recording_id": "b", "error": "404: Recording not found",
    ...                            "error_kind": "not_found"}])))
    2 recordings: 1 ok, 1 failed
      not_found: 1 (e.g. 'b': 404: Recording not found)
    audio: 1.50 hours in 10 bytes
    """
    failed = manifest[manifest["error"].notna()]
    lines = [f"{len(manifest)} recordings: {len(manifest) - len(failed)} ok, {len(failed)} failed"]
    for kind, group in failed.groupby(failed["error_kind"].fillna("error"), sort=True):
        example = group.iloc[0]
        lines.append(
            f"  {kind}: {len(group)} (e.g. {example['recording_id']!r}: {example['error']})"
        )
    ok = manifest[manifest["error"].isna()]
    hours = ok["duration"].sum() / 3600
    lines.append(f"audio: {hours:.2f} hours in {_human_bytes(int(ok['size_bytes'].sum()))}")
    return "\n".join(lines)


def _human_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    exponent = min(int(math.log(count, 1024)), 4)
    return f"{count / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB', 'TiB')[exponent - 1]}"
