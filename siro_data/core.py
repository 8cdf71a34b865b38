"""The run on one machine: a table of ids in; audio files and a manifest out.

It resumes what a manifest (a file, or a folder of them) already holds
complete, and hands every other id to a worker thread that *finishes* it: its
resumed row or a fresh download (the :class:`~siro_data.Downloader` signs,
fetches, signs again when a URL expires, and checks), put in place, then the
row's post-steps (:mod:`siro_data.processors`). Each finished row goes to the
manifest's journal as it comes in. Where files live, on a disk or in a bucket,
is the :class:`~siro_data.archive.Archive`'s: this module speaks to it, never to
paths. :func:`siro_data.fetch_all` is the public entry: it runs this, or the
Dask path that runs this on each partition.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import audio, processors, store
from .archive import Archive
from .client import SignedURL, SiroClient
from .download import Downloader
from .exceptions import (
    AuthError,
    Interrupted,
    LocalFileError,
    SiroDataError,
    UnavailableError,
)
from .inputs import IdsLike, id_array, invalid_reason
from .locks import acquire
from .naming import file_stem, url_extension
from .processors import Processor
from .progress import Reporter
from .rows import (
    UNAVAILABLE_KINDS,
    Kind,
    Row,
    Status,
    empty_manifest,
    error_row,
    from_arrow,
    in_order,
    ok_row,
    status_of,
    stopped_row,
    to_arrow,
    tombstone,
)
from .sessions import describe_error

log = logging.getLogger(__name__)

#: How often a waiting thread looks at the stop switch (and the reporter gets a ``poll``).
POLL_SECONDS = 0.2
#: Ids handed to the thread pool ahead of time, per worker.
QUEUED_PER_WORKER = 2
#: Rows in a row failed because the API did (no answer, 5xx, 429 after the retries), per
#: worker, after which the run stops with ``UnavailableError``: every worker met the outage
#: twice, so it is the API's, and the rest would only fail the same way, slowly.
UNAVAILABLE_PER_WORKER = 2


def run(
    ids: IdsLike,
    archive: Archive,
    *,
    connect: Callable[[], AbstractContextManager[SiroClient]],
    downloader: Downloader,
    reporter: Reporter,
    id_column: str = "recording_id",
    workers: int = 16,
    overwrite: bool = False,
    steps: Sequence[Processor] = (),
    resume_from: str | None = None,
) -> pd.DataFrame:
    """Fetch ``ids`` into ``archive`` on this machine's threads; the manifest of this call.

    What :func:`siro_data.fetch_all` does for a pandas table, with its settings
    already turned into the objects that do the work.

    Parameters
    ----------
    ids, id_column, workers, overwrite
        As :func:`siro_data.fetch_all` takes them.
    archive : Archive
        The audio folder and the manifest, on a disk or in a bucket.
    connect : callable
        Returns the API client as a context manager (closed on exit), called
        only when some id must be fetched: a run with nothing new needs no token.
    downloader : Downloader
        The storage side's sessions and policy.
    reporter : Reporter
        What the run shows, and its Stop.
    steps : sequence of Processor
        Post-steps applied to every complete row, in order.
    resume_from : str, optional
        The manifest (a file, or a folder of them) whose complete rows need no
        fetching; default the archive's. A Dask partition writes its own
        manifest file and resumes from the whole folder.
    """
    keys = id_array(ids, id_column)
    archive.check()
    archive.audio.sweep()  # the lock files killed runs and earlier releases left
    plan = _plan(keys, archive, resume_from, steps, overwrite)
    untouched, tasks, invalid = plan.untouched, plan.tasks, plan.invalid
    manifest = archive.manifest
    finished: set[str | None] = set()

    def record(row: Row) -> None:
        manifest.append([row])
        finished.add(row["recording_id"])
        reporter.finished(row)

    def complete_elsewhere(recording_id: str) -> Row | None:
        """The row of another process that finished this recording since the start."""
        found = archive.resume([recording_id], resume_from)
        return found.iloc[0].to_dict() if len(found) else None

    def gone(recording_id: str, error: str) -> Row | None:
        """A tombstone for a recording the API no longer knows, if its row was ok before."""
        rows = from_arrow(archive.rows([recording_id], resume_from)).to_dict("records")
        if not rows or status_of(rows[0]) not in (Status.OK, Status.DELETED):
            return None  # an id never fetched: its 404 is an unknown id, not a deletion
        path = rows[0]["path"]
        kept = isinstance(path, str) and archive.audio.exists(path)
        return tombstone(rows[0], Kind.DELETED, f"deleted in Siro: {error}", kept)

    with ExitStack() as opened:
        fetching = len(tasks) > len(plan.resumed)
        client = opened.enter_context(connect()) if fetching else None
        work = _Run(
            client,
            downloader,
            archive,
            workers,
            overwrite,
            reporter,
            complete_elsewhere,
            gone,
            steps,
        )
        reporter.start(total=len(keys), done=len(untouched), stop=work.stop.set)
        try:
            for key in invalid:
                record(error_row(key, f"invalid id: {invalid_reason(key)}", Kind.INVALID_ID))
            if tasks:
                work.execute(tasks, plan.resumed, record)
            not_reached = [stopped_row(key) for key in tasks if key not in finished]
            manifest.append(not_reached)
            for row in not_reached:
                reporter.finished(row)
        except KeyboardInterrupt:  # the whole queue stops, as for any cell: save, then say so
            reporter.close()
            _save(archive, keys, failing=True)
            raise Interrupted(
                f"interrupted: the manifest keeps the rows finished, in {manifest.location};"
                " run again to resume"
            ) from None
        except BaseException as exc:
            reporter.close()
            _save(archive, keys, failing=True)
            if isinstance(exc, OSError) and not isinstance(exc, LocalFileError):
                raise LocalFileError(exc, "write") from exc  # the journal's append, say
            raise
        reporter.close()
    _save(archive, keys, failing=False)
    fresh = tasks + invalid
    if fresh:  # this run's rows, as saved: held by the file, not kept in memory meanwhile
        saved = manifest.read_rows(store.as_ids(fresh))
        rows = in_order(pa.concat_tables([to_arrow(untouched), saved]), keys)
    else:  # a re-run with nothing new: the resumed frame as it is
        rows = in_order(untouched, keys)
    report_outcome(rows)
    return rows


@dataclass(frozen=True)
class _Plan:
    """What a run has to do."""

    untouched: pd.DataFrame  # complete, nothing left to do: no task, no object per row
    tasks: list[str]  # the ids to finish, in input order
    resumed: dict[str, Row]  # the tasks' rows that are complete, their post-steps left
    invalid: list[str | None]  # ids that cannot be asked for


def _plan(
    keys: pa.Array,
    archive: Archive,
    source: str | None,
    steps: Sequence[Processor],
    overwrite: bool,
) -> _Plan:
    """What a run over ``keys`` has to do, from what ``source`` has complete."""
    try:
        resumed = empty_manifest() if overwrite else archive.resume(keys, source)
    except OSError as exc:  # known before any request: a sentence, not a traceback
        where = source or archive.manifest_path
        raise ValueError(str(LocalFileError(exc, "read the manifest", where))) from None
    unfinished = processors.pending(steps, resumed) & resumed["error"].isna()  # not tombstones
    untouched = resumed[~unfinished] if unfinished.any() else resumed
    to_finish = {row["recording_id"]: row for row in resumed[unfinished].to_dict("records")}
    done = pc.is_in(keys, value_set=pa.array(untouched["recording_id"], pa.large_string()))
    tasks, invalid = [], []
    for key in keys.filter(pc.invert(done)).to_pylist():  # objects only for the work to do
        (tasks if invalid_reason(key) is None else invalid).append(key)
    return _Plan(untouched, tasks, to_finish, invalid)


def report_outcome(manifest: pd.DataFrame) -> None:
    """One warning for rows not reached by a stopped run, one for rows that failed."""
    stopped = int((manifest["error_kind"] == Kind.STOPPED).sum())
    failed = int(manifest["error"].notna().sum()) - stopped
    if stopped:
        log.warning("the run stopped: %d recordings not fetched, run again to resume", stopped)
    if failed:
        log.warning("%d of %d recordings failed: see the error column", failed, len(manifest))


def _save(archive: Archive, keys: pa.Array, failing: bool) -> None:
    """Fold the journal into the manifest, new rows in input order.

    While another error is on its way out, a failure to save (the same full
    disk, say) is logged rather than raised over it: the journal still holds
    every row written to it, and the next run reads it.
    """
    manifest = archive.manifest
    try:
        saved = manifest.save(order=keys)
    except OSError as exc:
        if not failing:
            raise LocalFileError(exc, "save the manifest", manifest.location) from exc
        log.error("manifest not saved (%s); its journal keeps the rows", exc.strerror or exc)
    else:
        log.info("manifest saved to %s (%d rows)", manifest.location, saved)


class _Stopped(Exception):
    """Raised inside a worker when the run is stopping; its row is left for the next run."""


@dataclass
class _Attempt:
    """What one id's task holds: the signed URL in use, for an error row's ``expiration``."""

    signed: SignedURL | None = None


@dataclass
class _Run:
    """Worker threads finishing one id each, and the stop switch they share."""

    client: SiroClient | None
    downloader: Downloader
    archive: Archive
    workers: int
    overwrite: bool
    reporter: Reporter
    complete_elsewhere: Callable[[str], Row | None]
    gone: Callable[[str, str], Row | None]
    steps: Sequence[Processor] = ()
    stop: threading.Event = field(default_factory=threading.Event)
    failing_in_a_row: int = 0  # rows just recorded that failed because the API did

    def execute(
        self, tasks: list[str], resumed: Mapping[str, Row], record: Callable[[Row], None]
    ) -> None:
        """Finish every id (from its ``resumed`` row, if any); record each row as it finishes;
        raise what stops the run.
        """
        pool = ThreadPoolExecutor(min(len(tasks), self.workers), thread_name_prefix="siro-data")
        queue = iter(enumerate(tasks))
        order: dict[Future, int] = {}
        pending: set[Future] = set()

        def submit(count: int) -> None:
            """A few ids ahead of the workers, not all: waiting stays cheap for 100,000 ids."""
            for index, key in itertools.islice(queue, count):
                future = pool.submit(self._finish, key, resumed.get(key))
                order[future] = index
                pending.add(future)

        submit(QUEUED_PER_WORKER * self.workers)
        fatal: BaseException | None = None
        try:
            while pending and not self.stop.is_set():
                done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=order.pop):  # finished together: input order
                    error = self._collect(future, record)
                    fatal = fatal or error
                if not self.stop.is_set():
                    submit(len(done))
                self.reporter.poll()
            self._halt(pending)
        except BaseException:  # an interrupt: stop cleanly, keep what finished
            self._halt(pending)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for future in sorted(pending, key=order.pop):
                error = self._collect(future, record)
                fatal = fatal or error
        if fatal is not None:
            raise fatal

    def _collect(self, future: Future, record: Callable[[Row], None]) -> BaseException | None:
        """Record a finished row; return the error that must stop the run, if any."""
        if future.cancelled():
            return None
        error = future.exception()
        if error is None:
            row = future.result()
            record(row)
            return self._outage(row)
        return None if isinstance(error, _Stopped) else error

    def _outage(self, row: Row) -> UnavailableError | None:
        """An error that stops the run once so many rows in a row failed because the API did."""
        if row.get("error_kind") not in UNAVAILABLE_KINDS:
            self.failing_in_a_row = 0
            return None
        self.failing_in_a_row += 1
        if self.failing_in_a_row < UNAVAILABLE_PER_WORKER * self.workers:
            return None
        self.stop.set()
        return UnavailableError(
            None,
            f"the API failed {self.failing_in_a_row} recordings in a row, the last with"
            f" {row['error']}",
        )

    def _halt(self, pending: set[Future]) -> None:
        self.stop.set()
        for future in pending:
            future.cancel()

    def _finish(self, recording_id: str, resumed: Row | None) -> Row:
        """One id's whole path: its resumed row or a fresh download, then the post-steps.

        A failure becomes its row; a 401 or a disk error stops the run.
        """
        attempt = _Attempt()
        try:
            self._check_stop()
            row = resumed if resumed is not None else self._fetch(recording_id, attempt)
            return processors.apply(self.steps, row)
        except _Stopped:
            raise
        except AuthError:  # a bad token: every row would fail alike
            self.stop.set()  # before this thread takes the next id
            raise
        except OSError as exc:  # a full disk, a folder gone: the same for every row
            self.stop.set()
            error = LocalFileError(exc, "write")  # the sentence the caller shows
            log.info("%s; stopping, partial files are kept", error)
            raise error from exc
        except SiroDataError as exc:
            log.info("%r failed: %s", recording_id, exc)
            deleted = self.gone(recording_id, str(exc)) if exc.kind == Kind.NOT_FOUND else None
            return deleted or error_row(recording_id, str(exc), exc.kind, _expiration(attempt))
        except Exception as exc:  # an answer nobody foresaw: it costs its row, not the run
            log.exception("%r: unexpected error", recording_id)
            message = f"unexpected error: {describe_error(exc)}"
            return error_row(recording_id, message, Kind.UNEXPECTED, _expiration(attempt))

    def _fetch(self, recording_id: str, attempt: _Attempt) -> Row:
        """Sign and download one recording, while no other process works on it."""
        lock = self.archive.audio.lock(file_stem(recording_id))
        acquire(lock, POLL_SECONDS, self._check_stop)
        try:
            return self._fetch_unlocked(recording_id, attempt)
        finally:
            lock.release()

    def _fetch_unlocked(self, recording_id: str, attempt: _Attempt) -> Row:
        """Sign, download into the partial (the Downloader signs again when the URL
        expires), check, put the file in place.
        """
        assert self.client is not None  # made whenever a task has something to fetch
        client = self.client

        def sign() -> SignedURL:
            self._check_stop()
            attempt.signed = client.sign(recording_id)
            return attempt.signed

        signed = sign()
        stem = file_stem(recording_id)
        files = self.archive.audio
        target = files.final(f"{stem}.{url_extension(signed.url)}")
        if not self.overwrite and files.exists(target):
            row = self.complete_elsewhere(recording_id)
            if row is not None:  # another process finished it meanwhile
                return row
        partial = files.partial(stem)
        files.prepare(target, partial, self.overwrite)
        result = self.downloader.fetch(
            signed,
            partial,
            renew=sign,
            verify=audio.probe,
            on_bytes=self._on_bytes,
            on_size=getattr(self.reporter, "expect_bytes", None),
        )
        files.commit(result.path, target, result.size, result.md5)
        info = result.verified
        return ok_row(
            recording_id,
            path=target,
            expiration=attempt.signed.expiration,
            duration=info.duration,
            size_bytes=result.size,
            sha256=result.sha256,
            md5=result.md5,
            content_type=result.content_type,
            sample_rate=info.sample_rate,
            channels=info.channels,
            codec=info.codec,
        )

    def _on_bytes(self, count: int) -> None:
        self._check_stop()
        self.reporter.add_bytes(count)

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise _Stopped


def _expiration(attempt: _Attempt) -> pd.Timestamp | None:
    return attempt.signed.expiration if attempt.signed else None
