"""The manifest, for those who read and write it: one row per recording, on a disk or in a
bucket, with the dtypes of :data:`siro_data.COLUMNS` whatever reads it.

Where the manifest's pieces live and how they are written is :mod:`siro_data.archive`'s. On
disk it is one parquet file plus, while a run is going, a journal beside it, folded in at
the end of the run and read back after a crash, so a killed run loses no finished row; in a
bucket, a parquet object plus the chunks of rows each writer adds.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from . import store
from .archive import open_manifest, read_rows
from .rows import from_arrow, to_arrow


def write_manifest(
    manifest: pd.DataFrame,
    path: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Write a manifest to parquet atomically: a crash leaves the old file or the new, whole.

    Each recording is written once, its latest row (as every manifest file
    siro_data writes holds it, so that reading one needs no deduplication).

    Parameters
    ----------
    manifest : pandas.DataFrame
        Manifest rows; missing columns are written as nulls, dtypes as
        :data:`siro_data.COLUMNS` says.
    path : path-like or str
        The parquet file (missing folders are made), or a bucket URL
        (``gs://bucket/prefix/manifest.parquet``, ``s3://...``).
    storage_options : dict, optional
        For a bucket: what its fsspec filesystem takes (as pandas takes them).

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
    open_manifest(path, storage_options).write(store.latest(to_arrow(manifest)))


def read_manifest(
    path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Read a manifest, with the rows its journal holds from an unfinished run.

    Parameters
    ----------
    path : path-like or str
        The parquet file :func:`siro_data.fetch_all` writes, or a folder of
        them (one per partition, as a Dask run writes them): a folder reads as
        one manifest, the latest ``fetched_at`` of each recording winning. A
        bucket URL (``gs://...``, ``s3://...``) reads the same from a bucket.
    storage_options : dict, optional
        For a bucket: what its fsspec filesystem takes (as pandas takes them).

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
    return from_arrow(read_rows(path, storage_options=storage_options))
