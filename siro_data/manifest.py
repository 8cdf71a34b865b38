"""The manifest on disk: parquet, its journal, what an earlier run left complete.

A row's columns and dtypes are :mod:`siro_data.rows`'.

On disk it is a parquet file plus, while a run is going, an append-only
journal of JSON lines beside it (``<manifest>.journal``). Each finished row
costs one short append, however many rows came before; the journal is folded
into the parquet file at the end of a run and read back after a crash, so a
killed run loses no finished row.

Several processes may share one manifest: every change to it (a journal line,
a fold into parquet) and every read of it happens under its lock
(:func:`siro_data.locks.manifest_lock`).
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .locks import manifest_lock
from .rows import COLUMNS, SCHEMA, Row, empty_manifest, to_frame

log = logging.getLogger(__name__)


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a manifest to parquet atomically: a crash leaves the old file or the new, whole.

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
    path = Path(path)
    if path.is_dir():
        return _read_dataset(path)
    parts = []
    with manifest_lock(path, optional=True):
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


def resume(
    source: str | os.PathLike[str], out_dir: str | os.PathLike[str], wanted: Iterable[str | None]
) -> pd.DataFrame:
    """The rows of ``wanted`` ids that need no fetching again: complete, their file still whole.

    Parameters
    ----------
    source : path-like
        A manifest file, or a folder of them (as a Dask run writes it).
    out_dir : path-like
        Where the files are now: a row's file is looked for there by its name,
        so a folder moved as a whole (manifest and audio together) still resumes.
    wanted : iterable of str
        The ids asked for; other rows are left out.

    Returns
    -------
    pandas.DataFrame
        Manifest rows (the schema of :data:`siro_data.rows.COLUMNS`) whose file
        exists in ``out_dir`` with the size recorded, ``path`` pointing there.
    """
    previous = read_manifest(source)
    candidates = previous[
        previous["recording_id"].isin([key for key in wanted if key is not None])
        & previous["error"].isna()
        & previous["path"].notna()
        & previous["size_bytes"].notna()
    ]
    local = [os.path.join(out_dir, os.path.basename(path)) for path in candidates["path"]]
    intact = [
        _stored_size(path) == size
        for path, size in zip(local, candidates["size_bytes"].tolist(), strict=True)
    ]
    return to_frame(candidates.assign(path=local)[intact].reset_index(drop=True))


def _stored_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


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
        with manifest_lock(self.manifest_path):
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
    with manifest_lock(path):
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
