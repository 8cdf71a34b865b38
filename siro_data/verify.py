"""verify: an archive checked against its manifest, for an archive that stays true for years.

Every complete row's file is looked for in ``out_dir`` by its name (as a run resumes it) and
checked against the row: its size from one listing of the folder (a ``stat`` each on a disk;
a request per 1,000 objects in a bucket, which lists each object's MD5 too), then, when the
size is right, the store's MD5 against the row's, or where either is unknown (on a disk) its
SHA-256 (read in blocks of :data:`BLOCK` by worker threads; ``hashlib`` lets go of the GIL).
Besides, the folder's partials and temporary files that no run is at work on, and the files
no row claims. With ``repair``, a bad row becomes a failed row (``missing``, ``corrupt``) that
the next run fetches again.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import store
from .archive import Archive, listing_path
from .filesystems import Listed
from .locks import held_if_free, try_acquire
from .progress import LogProgress, ProgressChoice, Reporter, reporter_for
from .rows import Kind, error_row

log = logging.getLogger(__name__)

#: Bytes read and hashed at a time.
BLOCK = 4 * 2**20
#: A temporary file (a WAV copy being written) is taken for a leftover once nothing has
#: written to it for this long: a conversion does not hold its recording's lock.
TEMPORARY_GRACE_SECONDS = 600.0
#: How often the calling thread looks at the stop switch (and the reporter gets a ``poll``).
POLL_SECONDS = 0.2
#: Bad rows repaired together: their locks held, their rows read again, one save.
REPAIRED_AT_ONCE = 256
#: Examples shown on each line of :meth:`VerifyReport.summary`.
EXAMPLES = 3


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found, by kind.

    Attributes
    ----------
    checked : int
        Complete rows whose file was checked (size, then MD5 or SHA-256).
    missing, wrong_size, wrong_hash : tuple of str
        Recording ids whose file is gone, has another size, or other bytes of the same size.
    leftovers : tuple of str
        Partials and temporary files no running process is at work on.
    orphans : tuple of str
        Files in ``out_dir`` that no row claims (the archive's own dot files aside).
    repaired : bool
        Bad rows were turned into failed rows and their files removed, leftovers removed.
    deleted : tuple of str
        The orphans deleted (``delete_orphans``): those still unclaimed when the manifest was
        read again, whose recording no run was fetching.
    stopped : bool
        The check was stopped (the panel's Stop) before every row was checked.

    Examples
    --------
    >>> report = VerifyReport(checked=3, missing=("rec_1",))
    >>> report.ok
    False
    >>> print(report)
    3 complete recordings checked: 2 whole, 1 bad
    missing: 1 (rec_1)
    wrong size: 0
    wrong hash: 0
    leftovers: 0
    orphans: 0
    """

    checked: int = 0
    missing: tuple[str, ...] = ()
    wrong_size: tuple[str, ...] = ()
    wrong_hash: tuple[str, ...] = ()
    leftovers: tuple[str, ...] = ()
    orphans: tuple[str, ...] = ()
    repaired: bool = False
    deleted: tuple[str, ...] = ()
    stopped: bool = False

    @property
    def bad(self) -> tuple[str, ...]:
        """The ids of every bad row."""
        return self.missing + self.wrong_size + self.wrong_hash

    @property
    def ok(self) -> bool:
        """Whether all is well: every complete row's file whole, nothing left over or
        unclaimed, every row checked."""
        return not (self.bad or self.leftovers or self.orphans or self.stopped)

    def summary(self) -> str:
        """A line of counts, then one line per kind with a few examples."""
        bad = len(self.bad)
        lines = [
            f"{self.checked} complete recordings checked: {self.checked - bad} whole, {bad} bad"
        ]
        if self.stopped:
            lines[0] += " (stopped before the end)"
        kinds = {
            "missing": self.missing,
            "wrong size": self.wrong_size,
            "wrong hash": self.wrong_hash,
            "leftovers": self.leftovers,
            "orphans": self.orphans,
        }
        for kind, found in kinds.items():
            shown = ", ".join(found[:EXAMPLES]) + (", ..." if len(found) > EXAMPLES else "")
            lines.append(f"{kind}: {len(found)}" + (f" ({shown})" if found else ""))
        if self.repaired and (bad or self.leftovers):
            lines.append(
                f"repaired: {bad} rows marked failed (missing, corrupt), their files and the"
                f" leftovers removed; the next fetch or sync fetches them again"
            )
        if self.deleted:
            lines.append(f"orphans deleted: {len(self.deleted)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def verify(
    manifest_path: str | os.PathLike[str] = "data/manifest.parquet",
    out_dir: str | os.PathLike[str] = "data/recordings",
    *,
    repair: bool = False,
    delete_orphans: bool = False,
    workers: int = 4,
    progress: bool | ProgressChoice | Reporter = "auto",
    storage_options: dict[str, Any] | None = None,
) -> VerifyReport:
    """Check every complete row's file against its size and MD5 or SHA-256; find leftovers.

    Parameters
    ----------
    manifest_path : path-like or str
        The manifest (a file or a bucket URL), as :func:`siro_data.fetch_all` writes it.
    out_dir : path-like or str
        Its audio folder, or bucket prefix. A row's file is looked for here by its name.
    repair : bool
        Turn each bad row into a failed row of kind ``missing`` (the file is gone) or
        ``corrupt`` (its size or digest is not the row's), its ``error`` saying what was
        found, and **remove the bad file**, so that the next :func:`siro_data.fetch_all`
        (or ``sync``, for recordings younger than its ``retry_for``) fetches it again from
        scratch. Leftover partials and temporary files are removed too. A recording a run
        is fetching meanwhile (its lock held) is left to that run.
    delete_orphans : bool
        Delete the files no row claims. Without it they are only listed.
    workers : int
        Files read and hashed at once.
    progress : {"auto", "bars", "log", "none"}, bool or Reporter
        What the check shows, chosen as :func:`siro_data.fetch_all` chooses it (the panel
        in a notebook, bars on a terminal, log lines elsewhere); a row checked is a row
        finished, the bytes read are the bytes received (a :class:`~siro_data.LogProgress`
        says "checking").
    storage_options : dict, optional
        For bucket URLs, as :func:`siro_data.fetch_all` takes them.

    Returns
    -------
    VerifyReport
        What was found, by kind; ``.ok`` when all is well.

    Raises
    ------
    ValueError
        There is no manifest at ``manifest_path``, or it is a folder of them (a Dask run's,
        not handled).

    Notes
    -----
    What is read: the manifest; one listing of ``out_dir``; then only the files whose size
    is right and whose digest the listing does not give, each once. A wrong size is known
    without reading.

    A *leftover* is a partial (``<stem>.part``) whose recording's lock no process holds (a
    run at work holds it: its partial is not reported), or a temporary file (``*.tmp``)
    whose recording's lock is free and which nothing has written to for
    :data:`~siro_data.verify.TEMPORARY_GRACE_SECONDS`. An *orphan* is a file of ``out_dir``
    no row's ``path`` or ``audio_path`` names; names starting with a dot (the locks, the
    journal, the manifest's lock and temporaries), the manifest and its listing are the
    archive's own.

    In a bucket, the listing gives each object's size and the store's own MD5 of it (GCS's
    ``md5Hash``, S3's ETag of an object uploaded in one part), which the store keeps as it
    keeps the bytes: a row whose ``md5`` is known is checked against it, and its object is not
    downloaded at all. An object with no MD5 (an S3 upload in parts, whose ETag is no MD5) or
    a row without one (written before the column existed) is downloaded and its SHA-256
    checked, as on a disk, where every file with the right size is read. Partials of a
    bucket's audio are staged on this machine: only those of this machine's runs are seen.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from siro_data import fetch_all
    >>> from siro_data.emulator import Emulator
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with Emulator() as emu:
    ...     manifest = fetch_all(list(emu.recordings)[:3], out_dir=folder / "audio",
    ...                          manifest_path=folder / "manifest.parquet",
    ...                          token=emu.token, api_url=emu.api_url, progress=False)
    >>> pathlib.Path(manifest.loc[0, "path"]).unlink()
    >>> report = verify(folder / "manifest.parquet", folder / "audio", progress=False)
    >>> report.ok, report.missing == (manifest.loc[0, "recording_id"],)
    (False, True)
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    archive = Archive(out_dir, manifest_path, storage_options)
    if os.path.isdir(archive.manifest_path):
        raise ValueError(
            f"{archive.manifest_path} is a folder (a Dask run's manifests): verify checks one"
            " manifest file"
        )
    if not archive.manifest.exists():
        raise ValueError(f"there is no manifest at {archive.manifest_path}")
    rows = archive.manifest.read_rows()
    files = archive.audio.files()
    complete = pc.and_(
        pc.and_(rows.column("error").is_null(), rows.column("path").is_valid()),
        rows.column("size_bytes").is_valid(),
    )
    good = rows.filter(complete)
    columns = ("recording_id", "path", "size_bytes", "sha256", "md5", "fetched_at")
    checks = [
        _Check(key, archive.audio.final(_name(path)), size, digest, md5, finished)
        for key, path, size, digest, md5, finished in zip(
            *(good.column(name).to_pylist() for name in columns), strict=True
        )
    ]
    claimed = _claimed(rows)
    del rows, good
    reporter = reporter_for(progress, archive.manifest_path)
    if isinstance(reporter, LogProgress):
        reporter.action = "checking"
    found = _Checker(archive, files, workers, reporter)
    found.run(checks)
    leftovers = _leftovers(archive, remove=repair)
    orphans = _orphans(archive, files, claimed)
    if repair:
        _repair(archive, found.bad)
    deleted = _delete(archive, orphans) if delete_orphans and orphans else []
    by_kind = {kind: tuple(c.recording_id for c, k, _ in found.bad if k == kind) for kind in _KINDS}
    report = VerifyReport(
        checked=found.checked,
        missing=by_kind["missing"],
        wrong_size=by_kind["wrong size"],
        wrong_hash=by_kind["wrong hash"],
        leftovers=tuple(os.fspath(path) for path in leftovers),
        orphans=tuple(orphans),
        repaired=repair,
        deleted=tuple(deleted),
        stopped=found.checked < len(checks),
    )
    log.info("%s", report.summary().replace("\n", "; "))
    return report


_KINDS = ("missing", "wrong size", "wrong hash")
_WHEN = ("recording_id", "fetched_at")


@dataclass(frozen=True)
class _Check:
    """A complete row's file and what it must be."""

    recording_id: str
    path: str
    size: int
    sha256: str | None
    md5: str | None
    fetched_at: Any  # the row's, to tell it from a row written since


class _Halted(Exception):
    """Raised in a worker when the check is over before its file is read to the end."""


class _Checker:
    """Worker threads hashing the files whose size is right and whose MD5 the listing does not
    give; the bad ones, as found."""

    def __init__(
        self, archive: Archive, files: Mapping[str, Listed], workers: int, reporter: Reporter
    ) -> None:
        self.archive = archive
        self.files = files
        self.workers = workers
        self.reporter = reporter
        self.stop = threading.Event()  # the reporter's Stop
        self._halt = threading.Event()  # the workers' end, whatever the reason
        self.checked = 0
        self.bad: list[tuple[_Check, str, str]] = []  # (check, kind, what was found)

    def run(self, checks: list[_Check]) -> None:
        """Check every file; report each row as it is decided."""
        reporter = self.reporter
        reporter.start(total=len(checks), done=0, stop=self.stop.set)
        to_read = []
        try:
            for check in checks:  # missing, wrong size, and digests the store lists: no read
                listed = self.files.get(check.path)
                if listed is None:
                    self._decided(check, "missing", f"verify: the file is missing: {check.path}")
                elif listed.size != check.size:
                    found = f"{listed.size} bytes, the row says {check.size}"
                    self._decided(check, "wrong size", f"verify: wrong size: {found}: {check.path}")
                elif listed.md5 is not None and check.md5 is not None:
                    self._compared(check, "md5", listed.md5, check.md5)
                elif check.sha256 is None:
                    self._decided(check, None, "")
                else:
                    to_read.append(check)
            self._hash_all(to_read)
        finally:
            reporter.close()

    def _hash_all(self, checks: list[_Check]) -> None:
        if not checks:
            return
        pool = ThreadPoolExecutor(min(self.workers, len(checks)), thread_name_prefix="verify")
        queue: Iterator[_Check] = iter(checks)
        pending: dict[Future, _Check] = {}

        def submit(count: int) -> None:
            for check in itertools.islice(queue, count):
                pending[pool.submit(self._digest, check.path)] = check

        try:
            submit(2 * self.workers)
            while pending and not self.stop.is_set():
                done, _ = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    self._hashed(pending.pop(future), future.result())
                submit(len(done))
                self.reporter.poll()
        finally:
            self._halt.set()  # the workers end at their next block: nothing more is read
            pool.shutdown(wait=True, cancel_futures=True)

    def _hashed(self, check: _Check, digest: str | None) -> None:
        if digest is None:  # removed while being read
            self._decided(check, "missing", f"verify: the file is missing: {check.path}")
        else:
            self._compared(check, "sha256", digest, check.sha256)

    def _compared(self, check: _Check, algorithm: str, digest: str, expected: str) -> None:
        if digest != expected:
            found = f"{algorithm} {digest[:16]}..., the row says {expected[:16]}..."
            self._decided(check, "wrong hash", f"verify: wrong bytes: {found}: {check.path}")
        else:
            self._decided(check, None, "")

    def _decided(self, check: _Check, kind: str | None, error: str) -> None:
        self.checked += 1
        if kind is not None:
            self.bad.append((check, kind, error))
            log.info("%r: %s", check.recording_id, error)
        self.reporter.finished({"recording_id": check.recording_id, "error": error or None})

    def _digest(self, path: str) -> str | None:
        """The file's SHA-256 in hex; None when it is gone."""
        digest = hashlib.sha256()
        block = bytearray(BLOCK)
        view = memoryview(block)
        try:
            with self.archive.audio.reader(path) as source:
                while count := source.readinto(block):
                    digest.update(view[:count])
                    self.reporter.add_bytes(count)
                    if self._halt.is_set():
                        raise _Halted
        except FileNotFoundError:
            return None
        return digest.hexdigest()


def _repair(archive: Archive, bad: list[tuple[_Check, str, str]]) -> None:
    """Each bad row a failed row of its kind and its file removed, a few at a time, while no
    run fetches them: their locks held, their rows read again (a row another run finished
    since it was checked is left as it is)."""
    for start in range(0, len(bad), REPAIRED_AT_ONCE):
        with ExitStack() as held:
            unchanged = {}
            for check, kind, error in bad[start : start + REPAIRED_AT_ONCE]:
                lock = archive.audio.lock(Path(_name(check.path)).stem)
                if not try_acquire(lock):
                    log.info("%r is being fetched: left to that run", check.recording_id)
                    continue
                held.callback(lock.release)
                unchanged[check.recording_id] = (check, kind, error)
            if not unchanged:
                continue
            now = archive.manifest.read_rows(store.as_ids(list(unchanged)))
            for key, finished in zip(*(now.column(c).to_pylist() for c in _WHEN), strict=True):
                if finished != unchanged[key][0].fetched_at:
                    log.info("%r was fetched again since it was checked: left", key)
                    del unchanged[key]
            rows = []
            for check, kind, error in unchanged.values():
                archive.audio.remove(check.path)
                row_kind = Kind.MISSING if kind == "missing" else Kind.CORRUPT
                rows.append(error_row(check.recording_id, error, row_kind))
            archive.manifest.append(rows)
            archive.manifest.save()


def _leftovers(archive: Archive, remove: bool) -> list[Path]:
    """Partials and temporaries no process is at work on (removed when ``remove``)."""
    found = []
    for path in archive.audio.leftovers():
        temporary = path.suffix == ".tmp"
        # <stem>.part; <stem>.<ext>.<hex>.tmp, or the same after a dot
        with held_if_free(archive.audio.lock(path.name.lstrip(".").split(".", 1)[0])) as free:
            if not free or (temporary and _age(path) < TEMPORARY_GRACE_SECONDS):
                continue  # a run is fetching that recording, or still writing the file
            found.append(path)
            if remove:
                path.unlink(missing_ok=True)
    return found


def _delete(archive: Archive, orphans: list[str]) -> list[str]:
    """The orphans deleted: those still unclaimed once the manifest is read again (a run may
    have finished one since the listing) and whose recording no run is fetching."""
    claimed = _claimed(archive.manifest.read_rows())
    deleted = []
    for path in orphans:
        name = _name(path)
        if name in claimed:
            continue
        with held_if_free(archive.audio.lock(name.split(".", 1)[0])) as free:
            if free:
                archive.audio.remove(path)
                deleted.append(path)
    return deleted


def _orphans(archive: Archive, files: Mapping[str, Listed], claimed: set[str]) -> list[str]:
    """The files of ``out_dir`` no row claims, the archive's own aside."""
    own = {_name(archive.manifest_path), _name(listing_path(archive.manifest_path))}
    return sorted(
        path
        for path in files
        if (name := _name(path)) not in claimed
        and name not in own
        and not name.startswith(".")
        and not name.endswith((".part", ".tmp"))
    )


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _name(path: str) -> str:
    """A path's or URL's last part."""
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _claimed(rows: pa.Table) -> set[str]:
    """The file names the rows name: their downloads and their WAV/FLAC copies."""
    columns = ("path", "audio_path")
    return {_name(path) for name in columns for path in rows.column(name).drop_null().to_pylist()}
