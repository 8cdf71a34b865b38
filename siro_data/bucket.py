"""The archive in a bucket (``gs://``, ``s3://``): how its pieces are written where nothing is
appended to and writers on other machines may meet.

Where each piece lives is :mod:`siro_data.archive`'s to say; here is how:

- **Audio.** A recording's bytes accumulate in a partial on this machine (the *staging*
  folder: a run killed here continues it; a machine replaced loses those bytes, at most the
  recordings in flight), are checked there, then streamed to their object, which the store
  shows whole or not at all; the object's size and MD5, as the store states them, must be
  the file's.
- **The manifest.** One parquet object, which readers read as it is. The rows a run finishes
  go in *chunks* of its own (``<journal>/<writer>-<n>.parquet``) every few seconds, so that two
  writers never write one object. A save folds every chunk into the manifest with a
  conditional write (replace only if unchanged since read, else read again and fold again)
  and then deletes the chunks it folded. A row replaces another only if it is as recent.
- **The listing and the watermarks**: the same conditional writes.
- **Presence** of complete rows: the prefix is listed (a request per 1,000 objects), never an
  object at a time, unless they are few.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import journal, store
from .disk import ensure_writable_dir, leftovers
from .exceptions import DownloadError
from .filesystems import Bucket, Listed, PreconditionFailed, Stat
from .locks import held_if_free, recording_lock, sweep
from .rows import SCHEMA, Row

log = logging.getLogger(__name__)

#: A writer's finished rows go to the bucket as a chunk when a row finishes this long after
#: the last chunk, when FLUSH_ROWS wait, and at the end of its run. The rows of a writer
#: killed before then are lost, not their audio: the next run finds each object with no row,
#: copies it back from the bucket and confirms it with one ranged request to Siro's storage.
FLUSH_SECONDS = 5.0
#: ... or as soon as this many rows wait.
FLUSH_ROWS = 1000
#: Scratch files (a manifest being read or written, an object copied down for a conversion)
#: older than this were left by a killed process: the next run's sweep removes them.
SCRATCH_STALE_SECONDS = 24 * 3600
#: Complete rows to confirm up to this many are asked one by one (a request each); more, and
#: the prefix is listed once (a request per 1,000 objects).
ASKED_ONE_BY_ONE = 64


class BucketTable:
    """A parquet object of one row per recording (the manifest, the listing), replaced only
    if unchanged since it was read: a writer that lost the race reads it again and folds again.
    """

    def __init__(
        self,
        bucket: Bucket,
        url: str,
        staging: Path,
        schema: pa.Schema,
        dictionary: Sequence[str],
        time_column: str,
    ) -> None:
        self.bucket = bucket
        self.url = url
        self.staging = staging
        self.schema = schema
        self.dictionary = dictionary
        self.time_column = time_column

    @property
    def location(self) -> str:
        return self.url

    def check(self, what: str) -> None:
        """The bucket was checked writable with the audio's."""

    def scan(self, wanted: pa.Array | None = None) -> pa.Table:
        with self._snapshot() as (local, _):
            return store.scan(local, self.schema, wanted)

    def read(self, columns: list[str], filters: list[tuple[str, str, Any]]) -> pa.Table | None:
        """Some columns of the rows that pass ``filters``; None when there is no object."""
        with self._snapshot() as (local, _):
            return None if local is None else pq.read_table(local, columns=columns, filters=filters)

    def fold(self, new: pa.Table, order: Sequence[str | None] | pa.Array = ()) -> int:
        """Fold ``new`` rows in with a conditional write, again until no other writer was
        first; the rows the object holds."""
        new = _not_older(new, self.time_column)
        settings = {"dictionary": self.dictionary, "time_column": self.time_column}
        while True:
            with self._snapshot() as (local, version), _scratch(self.staging) as temporary:
                count = store.fold_into(local, temporary, self.schema, new, order, **settings)
                try:
                    self.bucket.put(temporary, self.url, version)
                except PreconditionFailed:
                    log.info("%s changed while folding rows into it: folding again", self.url)
                    continue
            return count

    def rows(self) -> int:
        """How many rows the object holds (its footer); FileNotFoundError when there is none."""
        while True:
            try:
                with self.bucket.open(self.url) as source:
                    return store.rows_in(source)
            except FileNotFoundError:
                raise
            except (OSError, pa.ArrowException):  # replaced while its footer was read
                log.info("%s changed while its row count was read: reading again", self.url)

    @contextmanager
    def _snapshot(self) -> Iterator[tuple[Path | None, str | None]]:
        """The object copied here in one request, and the version a replace must match
        ((None, None) when there is no object). Read in ranges, an object another writer
        replaces meanwhile would mix two versions; a copy is one. The version is read first:
        a copy newer than it makes the conditional replace fail, and the fold is done again.
        """
        stat = self.bucket.stat(self.url)
        if stat is None:
            yield None, None
            return
        with _scratch(self.staging, ".parquet") as local:
            self.bucket.download(self.url, local)
            yield local, stat.version

    def exists(self) -> bool:
        return self.bucket.stat(self.url) is not None


def _not_older(rows: pa.Table, time_column: str) -> pa.Table:
    """One row per recording, its latest by ``time_column`` (chunks of several writers)."""
    by_time = pc.sort_indices(rows, sort_keys=[(time_column, "ascending", "at_start")])
    return store.latest(rows.take(by_time))


class BucketManifest:
    """The manifest in a bucket: its parquet object, and the chunks of rows writers add."""

    def __init__(self, table: BucketTable, chunks: str) -> None:
        self.table = table
        self.chunks = chunks  # the URL of the folder of chunks
        self._writer = uuid.uuid4().hex[:12]
        self._held: list[Row] = []
        self._written = 0
        self._last_flush = time.monotonic()

    @property
    def location(self) -> str:
        return self.table.url

    def check(self) -> None:
        """The bucket was checked writable with the audio's."""

    def exists(self) -> bool:
        return self.table.exists() or bool(self._chunk_urls())

    def read_rows(self, wanted: pa.Array | None = None) -> pa.Table:
        saved = self.table.scan(wanted)
        new = self._journaled(self._chunk_urls())
        if wanted is not None:
            new = new.filter(pc.is_in(new.column(store.KEY), value_set=wanted))
        return store.merged(saved, new)

    def append(self, rows: Iterable[Row]) -> None:
        self._held.extend(rows)
        waited = time.monotonic() - self._last_flush
        if len(self._held) >= FLUSH_ROWS or waited >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """The rows held so far, to the bucket as one chunk (an object of its own)."""
        if self._held:
            self._written += 1
            name = f"{self._writer}-{self._written:06d}.parquet"
            data = journal.encode_chunk(self._held)
            self.table.bucket.fs.pipe_file(self.table.bucket.key(f"{self.chunks}/{name}"), data)
            self._held = []
        self._last_flush = time.monotonic()

    def save(self, order: Sequence[str | None] | pa.Array = ()) -> int:
        """Fold every chunk into the manifest (conditionally), then delete those folded."""
        self.flush()
        chunks = self._chunk_urls()
        if not chunks:
            try:
                return self.table.rows()  # nothing new: the object as it is
            except FileNotFoundError:
                pass  # no manifest yet: an empty one is written
        count = self.table.fold(self._journaled(chunks), order)
        for url in chunks:
            self.table.bucket.remove(url)
        return count

    def write(self, rows: pa.Table) -> None:
        """Replace the manifest with ``rows`` (whatever it held)."""
        with _scratch(self.table.staging) as temporary:
            store.write(rows, temporary, self.table.dictionary)
            self.table.bucket.upload(temporary, self.table.url)

    def _chunk_urls(self) -> list[str]:
        return sorted(self.table.bucket.sizes(self.chunks))

    def _journaled(self, urls: list[str]) -> pa.Table:
        """The rows of these chunks, latest per recording. A chunk gone since it was listed
        was folded by another writer: its rows are in the manifest that writer saved."""
        found = (self.table.bucket.read(url) for url in urls)
        chunks = [journal.read_chunk(data) for data in found if data is not None]
        return _not_older(store.concat(SCHEMA, chunks), "fetched_at")


class BucketDocument:
    """A small JSON object (a watermark), replaced only if unchanged since read."""

    def __init__(self, bucket: Bucket, url: str, staging: Path) -> None:
        self.bucket = bucket
        self.url = url
        self.staging = staging

    @property
    def location(self) -> str:
        return self.url

    def check(self, what: str) -> None:
        """The bucket was checked writable with the audio's."""

    def read(self) -> dict[str, Any] | None:
        data = self.bucket.read(self.url)
        return None if data is None else json.loads(data)

    def update(self, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> None:
        """Write ``change(current)``, again until no other writer was first (None: leave)."""
        while True:
            stat = self.bucket.stat(self.url)
            current = self.read() if stat is not None else None
            state = change(current)
            if state is None:
                return
            with _scratch(self.staging) as temporary:
                temporary.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
                try:
                    self.bucket.put(temporary, self.url, None if stat is None else stat.version)
                except PreconditionFailed:
                    continue
            return


class BucketAudio:
    """The audio under a bucket prefix: partials and locks staged on this machine."""

    def __init__(self, bucket: Bucket, url: str, staging: Path, locks: Path) -> None:
        self.bucket = bucket
        self.url = url
        self.staging = staging
        self.locks = locks
        self._found: dict[str, Stat] = {}  # final URL → what exists() saw, for prepare()
        self._copied_back: dict[str, Stat] = {}  # final URL → the object prepare() copied

    @property
    def location(self) -> str:
        return self.url

    def check(self) -> None:
        self.bucket.check_writable("out_dir")
        ensure_writable_dir(self.staging, "the staging folder")

    def sweep(self) -> None:
        """The lock files nobody holds, then the partials nobody works on whose object is
        in the bucket: another machine finished them (a listing of the name per partial)."""
        sweep(self.locks)
        removed = 0
        for partial in self.staging.glob("*.part"):
            stem = partial.name.removesuffix(".part")
            with held_if_free(self.lock(stem)) as free:
                if free and self.bucket.starting_with(self.url, f"{stem}."):
                    partial.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.info("removed %d partial files finished elsewhere from %s", removed, self.staging)
        stale = time.time() - SCRATCH_STALE_SECONDS
        for scratch in self.staging.glob(".scratch-*"):
            with contextlib.suppress(FileNotFoundError):
                if scratch.stat().st_mtime < stale:
                    scratch.unlink()

    def final(self, name: str) -> str:
        return f"{self.url}/{name}"

    def presence(self, count: int) -> Callable[[list[str], list[int]], list[bool]]:
        """How to tell, for ``count`` rows asked in batches, whether each object exists with
        its size: for a few, a request each; else one listing of the prefix (a request per
        1,000 objects), made once for every batch."""
        if count <= ASKED_ONE_BY_ONE:

            def asked(paths: list[str], sizes: list[int]) -> list[bool]:
                with ThreadPoolExecutor(8) as pool:
                    stats = list(pool.map(self.bucket.stat, paths))
                pairs = zip(stats, sizes, strict=True)
                return [stat is not None and stat.size == size for stat, size in pairs]

            return asked
        listed = self.bucket.sizes(self.url)
        return lambda paths, sizes: [
            listed.get(path) == size for path, size in zip(paths, sizes, strict=True)
        ]

    def exists(self, final: str) -> bool:
        """Whether the object is there (a request); what it is, kept for :meth:`prepare`."""
        stat = self.bucket.stat(final)
        if stat is not None:
            self._found[final] = stat
        return stat is not None

    def existing(self, paths: list[str]) -> list[bool]:
        """Whether each object exists: a request each for a few, else a listing."""
        if len(paths) <= ASKED_ONE_BY_ONE:
            with ThreadPoolExecutor(8) as pool:
                return [stat is not None for stat in pool.map(self.bucket.stat, paths)]
        found = self.bucket.sizes(self.url)
        return [path in found for path in paths]

    def partial(self, stem: str) -> Path:
        return self.staging / f"{stem}.part"

    def lock(self, stem: str) -> Any:
        self.locks.mkdir(parents=True, exist_ok=True)
        return recording_lock(self.locks / f"{stem}.lock")

    def prepare(self, final: str, partial: Path, discard: bool) -> None:
        """Discard earlier bytes, or copy back an object no complete row accounts for (its
        writer was killed after the upload, before its row reached the bucket): resuming it
        costs one ranged request to Siro's storage, and the object is not uploaded again.
        The object is the one :meth:`exists` just found: no request to look again."""
        found = self._found.pop(final, None)
        if discard:
            partial.unlink(missing_ok=True)
        elif found is not None:
            self.bucket.download(final, partial)
            self._copied_back[final] = found

    def commit(self, partial: Path, final: str, size: int, md5: str) -> None:
        """The complete, checked partial streamed to its object, which must then hold it."""
        copied = self._copied_back.pop(final, None)
        if copied is not None and copied.size == size and copied.md5 in (None, md5):
            partial.unlink(missing_ok=True)  # the object holds these very bytes already
            return
        stat = self.bucket.upload(partial, final)
        if stat.size != size or (stat.md5 is not None and stat.md5 != md5):
            raise DownloadError(f"the bucket's copy of {final} is not the file uploaded")
        partial.unlink(missing_ok=True)

    def files(self) -> dict[str, Listed]:
        """Every object right under the prefix with its size and the store's MD5 of it (None
        for an S3 object uploaded in parts): a listing (a request per 1,000 objects)."""
        return self.bucket.listed(self.url)

    def leftovers(self) -> list[Path]:
        """The partials staged on this machine: a run's at work, or a killed one's."""
        return [path for path in leftovers(self.staging) if path.suffix == ".part"]

    def reader(self, url: str) -> IO[bytes]:
        """The object opened to read (ranges of :data:`siro_data.filesystems.UPLOAD_BLOCK`)."""
        return self.bucket.open(url)

    def remove(self, final: str) -> bool:
        """Remove an object of the prefix (a recording's audio, its copy); whether it was there."""
        if self.bucket.stat(final) is None:
            return False
        self.bucket.remove(final)
        return True

    @contextmanager
    def localized(self, path: str) -> Iterator[Path]:
        """A local file with the object's bytes, for as long as the block runs."""
        with _scratch(self.staging, Path(path).suffix) as local:
            self.bucket.download(path, local)
            yield local

    def keep(self, local: Path, final: str) -> None:
        """A file made on this machine (a WAV copy) stored under its final URL."""
        self.bucket.upload(local, final)
        local.unlink(missing_ok=True)


def manifest_parts(bucket: Bucket, folder: str) -> list[str]:
    """The manifests under a prefix (a Dask run's): parquet objects, and folders of chunks
    whose manifest is not saved yet."""
    parts = set()
    for url in bucket.children(folder):
        name = url[len(folder) + 1 :]
        if name.endswith(".parquet"):
            parts.add(name)
        elif name.startswith(".") and name.endswith(".parquet.journal/"):
            parts.add(name[1 : -len(".journal/")])
    return [f"{folder}/{name}" for name in sorted(parts)]


@contextmanager
def _scratch(folder: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary local file in ``folder``, removed after the block."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=folder, prefix=".scratch-", suffix=suffix)
    os.close(descriptor)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
