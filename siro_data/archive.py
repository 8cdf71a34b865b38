"""An archive's pieces, and where each lives: the one owner of a run's files.

An archive is an audio folder (``out_dir``) and a manifest, on this machine's disk or in a
bucket (``gs://``, ``s3://``). Beside the manifest ``manifest.parquet`` live its journal
(``.manifest.parquet.journal``: a file of lines on a disk, a folder of chunks in a bucket),
its lock (``.manifest.parquet.lock``, on a disk), the listing a sync keeps
(``manifest.listing.parquet``) and one watermark per filter set
(``.manifest.parquet.sync-<hash>.json``). In the audio folder, a recording's file is
``<stem>.<ext>``; on a disk its partial ``<stem>.part`` lies beside it and its lock in
``.locks/``; for a bucket both are *staged* on this machine. Names starting with a dot are
skipped by parquet readers, so a folder of manifests reads as one.

How each piece is written (atomically, under a lock or a conditional write) is
:mod:`siro_data.disk`'s or :mod:`siro_data.bucket`'s; the run (:mod:`siro_data.core`),
``sync`` and the Dask path speak to an :class:`Archive`, never to paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import store
from .bucket import (
    BucketAudio,
    BucketDocument,
    BucketManifest,
    BucketTable,
)
from .bucket import (
    manifest_parts as bucket_parts,
)
from .disk import (
    DiskAudio,
    DiskDocument,
    DiskManifest,
    DiskTable,
    ensure_writable_dir,
)
from .disk import (
    manifest_parts as disk_parts,
)
from .filesystems import Bucket, is_bucket
from .rows import REPEATING, SCHEMA, TOMBSTONES, from_arrow

StorageOptions = Mapping[str, Any] | None
Manifest = DiskManifest | BucketManifest
Table = DiskTable | BucketTable
Document = DiskDocument | BucketDocument

#: The folder of the recordings' lock files, in the audio folder (or the staging folder).
LOCKS_FOLDER = ".locks"
#: Where a bucket's partials and locks are staged on this machine: one folder per bucket
#: prefix under this (or ``$SIRO_DATA_STAGING``), kept between runs so that a run killed here
#: continues its partial downloads.
STAGING_ENV = "SIRO_DATA_STAGING"


#: Rows whose files are looked for at once (as Python objects) when a run resumes: a bucket's
#: prefix is listed once for all the batches.
PRESENCE_BATCH = 1 << 14


def location(place: str | os.PathLike[str]) -> str:
    """A bucket URL as it is; a local path made absolute, ``~`` expanded, ``..`` folded."""
    if is_bucket(place):
        return str(place).rstrip("/")
    return os.path.abspath(Path(place).expanduser())


def journal_path(manifest: str | os.PathLike[str]) -> Path:
    """The journal of a manifest on a disk: ``.manifest.parquet.journal`` beside it."""
    path = Path(manifest)
    return path.with_name(f".{path.name}.journal")


def lock_path(file: str | os.PathLike[str]) -> Path:
    """The lock of a file on a disk (the manifest, the listing, a watermark): a dot file."""
    path = Path(file)
    return path.with_name(f".{path.name}.lock")


def listing_path(manifest: str) -> str:
    """The listing kept beside a manifest: ``manifest.parquet`` → ``manifest.listing.parquet``."""
    folder, _, name = manifest.rpartition("/") if is_bucket(manifest) else _split(manifest)
    stem = name[: -len(".parquet")] if name.endswith(".parquet") else Path(name).stem
    return f"{folder}/{stem}.listing.parquet"


def watermark_path(manifest: str, filters: Mapping[str, str]) -> str:
    """The watermark of one filter set: ``.manifest.parquet.sync-<hash of the filters>.json``."""
    digest = hashlib.sha256(json.dumps(dict(filters), sort_keys=True).encode()).hexdigest()[:12]
    folder, _, name = manifest.rpartition("/") if is_bucket(manifest) else _split(manifest)
    return f"{folder}/.{name}.sync-{digest}.json"


def _split(path: str) -> tuple[str, str, str]:
    return os.path.dirname(path), "/", os.path.basename(path)


def staging_folder(out_dir: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Where a bucket prefix's partials and locks wait on this machine: a folder of its own
    inside ``root`` (default ``$SIRO_DATA_STAGING``, else the user's cache)."""
    root = (
        root
        or os.environ.get(STAGING_ENV)
        or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
            "siro-data",
            "staging",
        )
    )
    return Path(root) / hashlib.sha256(out_dir.encode()).hexdigest()[:16]


def open_manifest(
    place: str | os.PathLike[str],
    storage_options: StorageOptions = None,
    staging: Path | None = None,
) -> Manifest:
    """The manifest at ``place`` (a path or a bucket URL), to read and write."""
    where = location(place)
    if is_bucket(where):
        bucket = Bucket(where.rpartition("/")[0], dict(storage_options or {}))
        scratch = staging or staging_folder(bucket.url)
        folder, _, name = where.rpartition("/")
        table = BucketTable(bucket, where, scratch, SCHEMA, REPEATING, "fetched_at")
        return BucketManifest(table, f"{folder}/.{name}.journal")
    path = Path(where)
    return DiskManifest(DiskTable(path, lock_path(path), SCHEMA, REPEATING), journal_path(path))


def manifest_parts(place: str, storage_options: StorageOptions = None) -> list[Manifest]:
    """The manifests a folder (a Dask run's) holds, or the one at ``place``."""
    where = location(place)
    if is_bucket(where):
        bucket = Bucket(where, dict(storage_options or {}))
        parts = bucket_parts(bucket, where)
        if not parts and bucket.stat(where) is not None:  # a file, not a folder
            return [open_manifest(where, storage_options)]
        return [open_manifest(part, storage_options) for part in parts]
    if os.path.isdir(where):
        return [open_manifest(part) for part in disk_parts(Path(where))]
    return [open_manifest(where)]


def read_rows(
    place: str | os.PathLike[str],
    ids: Iterable[str | None] | pa.Array | None = None,
    storage_options: StorageOptions = None,
) -> pa.Table:
    """The latest row of each recording in a manifest, a file or a folder of them, as Arrow.

    ``ids``: only these recordings' rows (read group by group: memory follows the rows kept).
    """
    wanted = None if ids is None else store.as_ids(ids)
    parts = manifest_parts(place, storage_options)
    if len(parts) == 1:
        return parts[0].read_rows(wanted)
    rows = store.concat(SCHEMA, [part.read_rows(wanted) for part in parts])
    by_time = pc.sort_indices(rows, sort_keys=[("fetched_at", "ascending", "at_start")])
    return store.latest(rows.take(by_time))


def listing_table(
    manifest: str | os.PathLike[str],
    schema: pa.Schema,
    dictionary: tuple[str, ...],
    storage_options: StorageOptions = None,
) -> Table:
    """The listing a sync keeps beside ``manifest``."""
    where = listing_path(location(manifest))
    if is_bucket(where):
        bucket = Bucket(where.rpartition("/")[0], dict(storage_options or {}))
        return BucketTable(
            bucket, where, staging_folder(bucket.url), schema, dictionary, "listed_at"
        )
    path = Path(where)
    return DiskTable(path, lock_path(path), schema, dictionary)


class Archive:
    """A run's audio folder and manifest, on a disk or in a bucket, and what a run asks of them.

    Parameters
    ----------
    out_dir, manifest_path : path-like or str
        Local paths, or bucket URLs (``gs://bucket/prefix``, ``s3://...``).
    storage_options : mapping, optional
        For a bucket: what fsspec's filesystem takes (as pandas and Dask take them).
    staging : path-like, optional
        For a bucket: the folder of this machine where partials and locks wait, in a
        folder per prefix (:func:`staging_folder`; a Dask worker passes its scratch space).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        manifest_path: str | os.PathLike[str],
        storage_options: StorageOptions = None,
        staging: str | os.PathLike[str] | None = None,
    ) -> None:
        self.out_dir = location(out_dir)
        self.manifest_path = location(manifest_path)
        self.storage_options = dict(storage_options or {})
        if is_bucket(self.out_dir):
            bucket = Bucket(self.out_dir, self.storage_options)
            self.staging = staging_folder(bucket.url, staging)
            locks = self.staging / LOCKS_FOLDER
            self.audio: DiskAudio | BucketAudio = BucketAudio(
                bucket, bucket.url, self.staging, locks
            )
        else:
            folder = Path(self.out_dir)
            self.staging = folder
            self.audio = DiskAudio(folder, folder / LOCKS_FOLDER)
        self.manifest = open_manifest(self.manifest_path, storage_options, self.staging)

    def check(self) -> None:
        """Fail before any request, with one sentence, where results could not be written."""
        self.audio.check()
        if not is_bucket(self.manifest_path):
            ensure_writable_dir(Path(self.manifest_path).parent, "the manifest's folder")
        self.manifest.check()

    def resume(
        self, wanted: Iterable[str | None] | pa.Array, source: str | None = None
    ) -> pd.DataFrame:
        """The rows of ``wanted`` ids that need no fetching again: complete, their file still
        whole in ``out_dir`` (looked for there by its name, so a folder moved as a whole, its
        manifest with it, still resumes); and tombstones (``deleted``, ``expired``: never
        fetched again, their files not looked for).

        ``source``: the manifest (or folder of them, a Dask run's) to read; this one by default.
        """
        rows = self.rows(wanted, source)
        kinds = rows.column("error_kind")
        buried = pc.fill_null(pc.is_in(kinds, pa.array(sorted(TOMBSTONES), kinds.type)), False)
        tombstones = rows.filter(buried) if pc.any(buried).as_py() else None
        complete = pc.and_(
            pc.and_(rows.column("error").is_null(), rows.column("path").is_valid()),
            rows.column("size_bytes").is_valid(),
        )
        candidates = rows if pc.all(complete).as_py() else rows.filter(complete)
        folder = self.out_dir + "/"
        paths = candidates.column("path")
        here = pc.match_substring_regex(paths, "^" + re.escape(folder) + r"[^/\\]*$")
        if not pc.all(here).as_py():  # the folder moved: the files are where they are now
            moved = pc.replace_substring_regex(
                paths, pattern=r"^(?:.*[/\\])?", replacement=folder.replace("\\", "\\\\")
            )
            candidates = candidates.set_column(SCHEMA.get_field_index("path"), "path", moved)
        intact = pa.array(self._present(candidates), pa.bool_())
        del rows, paths
        if not pc.all(intact).as_py():
            candidates = candidates.filter(intact)
        pa.default_memory_pool().release_unused()  # what reading took, back to the system
        if tombstones is not None:
            candidates = pa.concat_tables([candidates, tombstones.cast(candidates.schema)])
        return from_arrow(candidates)

    def rows(self, wanted: Iterable[str | None] | pa.Array, source: str | None = None) -> pa.Table:
        """The latest rows of ``wanted`` ids in the manifest (or ``source``), as Arrow."""
        ids = store.as_ids(wanted).drop_null()
        if source is None:
            return self.manifest.read_rows(ids)
        return read_rows(location(source), ids, self.storage_options)

    def _present(self, rows: pa.Table) -> list[bool]:
        """Whether each row's file is there with its size, few Python objects at a time."""
        chunk = PRESENCE_BATCH
        found: list[bool] = []
        paths, sizes = rows.column("path"), rows.column("size_bytes")
        present = self.audio.presence(rows.num_rows)
        for start in range(0, rows.num_rows, chunk):
            found += present(
                paths.slice(start, chunk).to_pylist(), sizes.slice(start, chunk).to_pylist()
            )
        return found

    # --- what sync keeps beside the manifest --------------------------------------------------

    def listing(self, schema: pa.Schema, dictionary: tuple[str, ...]) -> Table:
        """The listing a sync keeps beside the manifest."""
        return listing_table(self.manifest_path, schema, dictionary, self.storage_options)

    def watermark(self, filters: Mapping[str, str]) -> Document:
        """The watermark of one filter set."""
        where = watermark_path(self.manifest_path, filters)
        if is_bucket(where):
            bucket = Bucket(where.rpartition("/")[0], self.storage_options)
            return BucketDocument(bucket, where, staging_folder(bucket.url))
        return DiskDocument(Path(where), lock_path(where))

    def __repr__(self) -> str:
        return f"Archive({self.out_dir!r}, {self.manifest_path!r})"
