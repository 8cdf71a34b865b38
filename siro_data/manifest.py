"""The manifest on disk: parquet, its journal, what an earlier run left complete.

A row's columns and dtypes are :mod:`siro_data.rows`'.

On disk it is one parquet file plus, while a run is going, an append-only
journal of JSON lines beside it (``.<manifest>.journal``). Each finished row
costs one short append, however many rows came before; the journal is folded
into the parquet file at the end of a run and read back after a crash, so a
killed run loses no finished row.

An archive grows for years: nothing here costs more than the new work but
reading what is asked for (:mod:`siro_data.store`: a fold streams the file,
a resume reads the rows of the ids asked for); a run that adds nothing leaves
the file alone.

Several processes may share one manifest: every change to it (a journal line,
a fold into parquet) and every read of it happens under its lock
(:func:`siro_data.locks.manifest_lock`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from . import store
from .files import remove_stale
from .locks import manifest_lock
from .rows import COLUMNS, REPEATING, SCHEMA, Row, conform, from_arrow, to_arrow

log = logging.getLogger(__name__)


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a manifest to parquet atomically: a crash leaves the old file or the new, whole.

    Each recording is written once, its latest row (as every manifest file
    siro_data writes holds it, so that reading one needs no deduplication).

    Parameters
    ----------
    manifest : pandas.DataFrame
        Manifest rows; missing columns are written as nulls, dtypes as
        :data:`siro_data.COLUMNS` says.
    path : path-like
        The parquet file; missing folders are made.

    Raises
    ------
    OSError
        The file could not be written (nothing is left under a temporary name).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from siro_data.rows import to_frame
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "manifest.parquet"
    >>> write_manifest(to_frame([{"recording_id": "a", "error": "404: Recording not found"}]),
    ...                path)
    >>> read_manifest(path)[["recording_id", "error"]]
      recording_id                     error
    0            a  404: Recording not found
    """
    store.write(store.latest(to_arrow(manifest)), Path(path), REPEATING)


def journal_path(path: str | os.PathLike[str]) -> Path:
    """The journal that sits beside a manifest while rows are being added.

    Its name starts with a dot, as the lock's does: parquet readers skip such
    files, so a folder of manifests reads as one dataset.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.journal")


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a manifest, with the rows its journal holds from an unfinished run.

    Parameters
    ----------
    path : path-like
        The parquet file :func:`siro_data.fetch_all` writes, or a folder of
        them (one per partition, as a Dask run writes them): a folder reads as
        one manifest, the latest ``fetched_at`` of each recording winning.

    Returns
    -------
    pandas.DataFrame
        One row per recording (its latest), with exactly the dtypes
        :func:`siro_data.fetch_all` returns; empty, with those dtypes, when
        there is no manifest yet.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> manifest = read_manifest(pathlib.Path(tempfile.mkdtemp()) / "none-yet.parquet")
    >>> len(manifest), manifest.dtypes["duration"]
    (0, dtype('float64'))
    """
    return from_arrow(read_rows(path))


def read_rows(path: str | os.PathLike[str], ids: Iterable[str | None] | None = None) -> pa.Table:
    """The latest row of each recording in a manifest file or folder, as Arrow.

    ``ids``: only these recordings' rows (read batch by batch: memory follows
    the rows kept, not the file).
    """
    path = Path(path)
    wanted = None if ids is None else store.as_ids(ids)
    if path.is_dir():
        parts = [_read_file(path / name, wanted) for name in _part_names(path)]
        rows = store.concat(SCHEMA, parts)
        by_time = pc.sort_indices(rows, sort_keys=[("fetched_at", "ascending", "at_start")])
        return store.latest(rows.take(by_time))
    return _read_file(path, wanted)


def _read_file(path: Path, wanted: pa.Array | None) -> pa.Table:
    with manifest_lock(path, optional=True):
        saved = store.scan(path, SCHEMA, wanted)
        journal = _read_journal(journal_path(path))
    if wanted is not None:
        journal = journal.filter(pc.is_in(journal.column(store.KEY), value_set=wanted))
    return store.merged(saved, journal)


def _part_names(folder: Path) -> list[str]:
    """The manifests in a folder: parquet files, and journals whose file is not saved yet."""
    saved = {path.name for path in folder.glob("*.parquet")}
    journaled = {path.name[1 : -len(".journal")] for path in folder.glob(".*.parquet.journal")}
    return sorted(saved | journaled)


def resume(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    wanted: Iterable[str | None] | pa.Array,
) -> pd.DataFrame:
    """The rows of ``wanted`` ids that need no fetching again: complete, their file still whole.

    Parameters
    ----------
    source : path-like
        A manifest file, or a folder of them (as a Dask run writes it).
    out_dir : path-like
        Where the files are now: a row's file is looked for there by its name,
        so a folder moved as a whole (manifest and audio together) still resumes.
    wanted : iterable of str, or pyarrow.Array
        The ids asked for; other rows are not read.

    Returns
    -------
    pandas.DataFrame
        Manifest rows (the schema of :data:`siro_data.rows.COLUMNS`) whose file
        exists in ``out_dir`` with the size recorded, ``path`` pointing there.
    """
    rows = read_rows(source, store.as_ids(wanted).drop_null())
    complete = pc.and_(
        pc.and_(rows.column("error").is_null(), rows.column("path").is_valid()),
        rows.column("size_bytes").is_valid(),
    )
    candidates = rows if pc.all(complete).as_py() else rows.filter(complete)
    folder = os.path.join(os.fspath(out_dir), "")
    paths = candidates.column("path")
    here = pc.match_substring_regex(paths, "^" + re.escape(folder) + r"[^/\\]*$")
    if not pc.all(here).as_py():  # the folder moved: the files are where they are now
        local = pc.replace_substring_regex(
            paths, pattern=r"^(?:.*[/\\])?", replacement=folder.replace("\\", "\\\\")
        )
        candidates = candidates.set_column(SCHEMA.get_field_index("path"), "path", local)
    intact = _intact(candidates.column("path"), candidates.column("size_bytes"))
    del rows, paths
    if not pc.all(intact).as_py():
        candidates = candidates.filter(intact)
    pa.default_memory_pool().release_unused()  # what reading took, back to the system
    return from_arrow(candidates)


def _intact(paths: pa.ChunkedArray, sizes: pa.ChunkedArray, chunk: int = 1 << 14) -> pa.Array:
    """Whether each file exists with its size: one ``stat`` each, few Python objects at a time."""
    found = []
    for start in range(0, len(paths), chunk):
        names = paths.slice(start, chunk).to_pylist()
        expected = sizes.slice(start, chunk).to_pylist()
        found.extend(_stored_size(name) == size for name, size in zip(names, expected, strict=True))
    return pa.array(found, pa.bool_())


def _stored_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


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
        self.extend([row])

    def extend(self, rows: Iterable[Row]) -> None:
        """Record finished rows, in one write."""
        lines = b"".join(
            json.dumps({name: _jsonable(row.get(name)) for name in COLUMNS}).encode("utf-8") + b"\n"
            for row in rows
        )
        if not lines:
            return
        with manifest_lock(self.manifest_path):
            # One descriptor both reads the last byte and appends (a file object would not).
            journal = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                end = os.fstat(journal).st_size
                fence = b"\n" if end and os.pread(journal, 1, end - 1) != b"\n" else b""
                data = memoryview(fence + lines)
                while data:
                    data = data[os.write(journal, data) :]
            except OSError as exc:  # a failed write does not say which file: this one
                exc.filename = exc.filename or str(self.path)
                raise
            finally:
                os.close(journal)


def compact(path: str | os.PathLike[str], order: Sequence[str | None] | pa.Array = ()) -> int:
    """Fold the journal into the parquet file, then drop the journal; the rows the file holds.

    The file is streamed row group by row group: a row the journal updates is
    replaced where it stands, recordings new to the file are appended, those
    named in ``order`` (a call's ids) in that order within the places they take.
    With nothing journaled and the file in place, the file is left as it is.
    Temporary files left by a save that was killed are removed.
    """
    path = Path(path)
    journal = journal_path(path)
    with manifest_lock(path):
        remove_stale(path)
        new = _read_journal(journal)
        if new.num_rows == 0 and path.exists():
            count = store.rows_in(path)
        else:
            count = store.fold(path, SCHEMA, new, order, REPEATING)
        journal.unlink(missing_ok=True)
    del new
    pa.default_memory_pool().release_unused()  # what reading and writing took, back now
    return count


def _read_journal(path: Path) -> pa.Table:
    """The journal's rows, latest per recording; a line torn by a kill is skipped."""
    try:
        if not path.stat().st_size:
            return SCHEMA.empty_table()
        rows = store.concat(SCHEMA, (conform(batch) for batch in _stream_lines(path)))
    except FileNotFoundError:
        return SCHEMA.empty_table()
    except pa.ArrowInvalid:
        rows = _read_lines(path.read_bytes())
    return store.latest(rows)


#: How journal lines are read: the manifest's columns, typed; anything else ignored.
_JOURNAL_LINES = pj.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore")
#: A block of lines at a time, on this thread: the parser's buffers stay a block's size.
_JOURNAL_BLOCKS = pj.ReadOptions(use_threads=False, block_size=1 << 20)


def _stream_lines(path: Path) -> Iterator[pa.Table]:
    """The journal's lines as Arrow, a block at a time, no Python object per row."""
    for batch in pj.open_json(path, read_options=_JOURNAL_BLOCKS, parse_options=_JOURNAL_LINES):
        yield pa.Table.from_batches([batch])
        pa.default_memory_pool().release_unused()  # the block's parsing buffers, not kept


def _read_lines(data: bytes, batch_rows: int = 4096) -> pa.Table:
    """The journal line by line, as after a kill: a torn line is reported and skipped."""
    tables, batch = [], []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            batch.append(json.loads(line))
        except ValueError:
            log.warning("skipping a torn line %d of the manifest journal", number)
        if len(batch) >= batch_rows:
            tables.append(to_arrow(batch))
            batch = []
    return pa.concat_tables([*tables, to_arrow(batch)])


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
