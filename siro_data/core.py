"""fetch_all: a table of recording ids in; audio files and a manifest out.

The orchestration only: it validates the input, skips what an earlier run
finished, runs sign → download → inspect for the rest on worker threads, and
records each finished row in the manifest's journal as it comes in.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from . import audio
from .client import SignedURL, SiroClient, TokenSource
from .download import download, partial_path
from .exceptions import AuthError, DownloadError, ExpiredURLError, SiroDataError
from .manifest import Journal, compact, read_manifest, to_frame
from .naming import file_stem, url_extension
from .progress import Reporter, TqdmProgress, in_notebook
from .sessions import DEFAULT_TIMEOUT, ThreadSessions, describe_error, retry_policy

log = logging.getLogger(__name__)

#: Fresh signed URLs in a row that bring no new byte before a recording is given up.
#: (A long download may outlive many URLs: each that makes progress is welcome.)
MAX_FRUITLESS_SIGNINGS = 3
#: A URL this close to its expiration is not worth starting a download with.
EXPIRY_MARGIN_SECONDS = 1.0
#: How often a waiting thread looks at the stop switch (and the reporter gets a ``poll``).
POLL_SECONDS = 0.2
#: Folder in ``out_dir`` for the per-recording locks that keep two processes apart.
LOCKS_FOLDER = ".locks"
#: Ids handed to the thread pool ahead of time, per worker.
QUEUED_PER_WORKER = 2
#: What ``convert_to`` accepts.
CONVERSIONS = (None, "wav", "flac")

IdsLike = pd.DataFrame | pd.Series | Iterable[Any]


def fetch_all(
    ids: IdsLike,
    id_column: str = "recording_id",
    out_dir: str | os.PathLike[str] = "data/recordings",
    manifest_path: str | os.PathLike[str] = "data/manifest.parquet",
    token: TokenSource | None = None,
    api_url: str | None = None,
    workers: int = 16,
    progress: bool | Reporter = True,
    overwrite: bool = False,
    *,
    client: SiroClient | None = None,
    requests_per_minute: int = 1000,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    convert_to: str | None = None,
) -> pd.DataFrame:
    """Download the audio of many recordings, resumably, and describe it in a manifest.

    Parameters
    ----------
    ids : DataFrame, Series or iterable
        Recording ids: a DataFrame's ``id_column``, or the values themselves.
        A Dask DataFrame or Series runs on the cluster: see
        :func:`siro_data.dask.fetch_all` (``manifest_path`` is then a folder).
        Duplicates are fetched once; numbers become strings; a null or empty
        id becomes a row with an error.
    id_column : str
        The id column when ``ids`` is a DataFrame.
    out_dir : path-like
        Where the audio files go, one per recording, named after its id.
    manifest_path : path-like
        The parquet manifest. It describes everything fetched into
        ``out_dir`` so far, across runs: rows of this call are added or updated.
    token : str or callable, optional
        Siro OAuth access token, or a function returning the current one
        (asked again once after a 401). Default: ``$SIRO_AUTH_TOKEN``. Not
        needed when every row is already complete.
    api_url : str, optional
        Default: ``$SIRO_API_URL``, else ``https://api.siro.ai``.
    workers : int
        Recordings in flight at once (signing and downloading overlap). A
        recording spends ~0.1 s at the API and most of a second downloading,
        so about 12 in flight are needed to use Siro's 1000 calls a minute;
        16 leaves room (see the README's figures).
    progress : bool or Reporter
        Show progress: ``tqdm.auto`` bars (text in a terminal, widgets in
        Jupyter), or nothing, or any :class:`siro_data.progress.Reporter`
        such as :class:`siro_data.widgets.Panel`, which has a Stop button.
    overwrite : bool
        Fetch every recording again, even those already complete.
    client : SiroClient, optional
        A client to use instead of one made from ``token`` and ``api_url``.
    requests_per_minute : int
        Pace of API calls; Siro allows 1000 per token per minute.
    timeout : (float, float)
        Connect and read timeouts in seconds, for every request.
    convert_to : {None, "wav", "flac"}
        Also write, beside each download, a copy that soundfile and every
        audio tool read (16-bit PCM, the original rate and channels); its path
        is the ``audio_path`` column. Copies already made are kept; complete
        downloads without one are converted without being fetched again.

    Returns
    -------
    pandas.DataFrame
        The manifest of this call: one row per distinct id, in input order,
        with the columns of :data:`siro_data.manifest.COLUMNS`. A row whose
        ``error`` is null has its complete, checked file at ``path``. When the
        run was stopped (the reporter's Stop, or an interrupt in Jupyter), the
        ids it did not reach have ``error_kind`` "stopped"; run again to resume.

    Raises
    ------
    ValueError
        Bad input, before any request: no such column, no token, bad settings.
    AuthError
        The token was rejected (and could not be renewed): the run stopped,
        the manifest keeps every row finished before.
    OSError
        Writing failed (a full disk, for instance): the run stopped the same
        way, partial files are kept for the next run.
    KeyboardInterrupt
        Outside Jupyter, after the manifest was saved the same way.

    Notes
    -----
    Several processes may fetch into one ``out_dir`` and manifest at once:
    a lock per recording (in ``out_dir/.locks``) keeps them from fetching the
    same file together, and the manifest's own lock keeps its rows whole.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from siro_data.emulator import Emulator
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with Emulator() as emu:
    ...     manifest = fetch_all(list(emu.recordings)[:3], out_dir=folder / "audio",
    ...                          manifest_path=folder / "manifest.parquet",
    ...                          token=emu.token, api_url=emu.api_url, progress=False)
    >>> print(manifest["error"].isna().all())
    True
    """
    if _is_dask(ids):
        from .dask import fetch_all as fetch_on_dask

        return fetch_on_dask(
            ids,
            id_column,
            out_dir,
            manifest_path,
            token,
            api_url,
            workers,
            overwrite,
            requests_per_minute=requests_per_minute,
            timeout=timeout,
            convert_to=convert_to,
        )
    keys = normalize_ids(ids, id_column)
    check_settings(workers, convert_to)
    out_dir = Path(os.path.abspath(Path(out_dir).expanduser()))  # ".." folded, links kept
    manifest_path = Path(os.path.abspath(Path(manifest_path).expanduser()))
    _ensure_writable_dir(out_dir, "out_dir")
    _ensure_writable_dir(manifest_path.parent, "manifest_path's folder")

    rows: dict[str | None, dict[str, Any]] = {}
    if not overwrite:
        rows.update(_complete_rows(read_manifest(manifest_path), out_dir, set(keys)))
    uncopied = {key: row for key, row in rows.items() if not _has_copy(row, convert_to)}
    fetch = [key for key in keys if key not in rows and _invalid_reason(key) is None]
    own_client = bool(fetch) and client is None
    if own_client:
        client = SiroClient(
            token, api_url, requests_per_minute=requests_per_minute, timeout=timeout
        )
    reporter = _reporter(progress)
    journal = Journal(manifest_path)

    def record(row: dict[str, Any]) -> None:
        rows[row["recording_id"]] = row
        journal.append(row)
        reporter.finished(row)

    def complete_elsewhere(recording_id: str) -> dict[str, Any] | None:
        """The row of another process that finished this recording since the start."""
        return _complete_rows(read_manifest(manifest_path), out_dir, {recording_id}).get(
            recording_id
        )

    run = _Run(
        client, out_dir, workers, overwrite, timeout, reporter, complete_elsewhere, convert_to
    )
    todo = list(uncopied) + fetch
    reporter.start(total=len(keys), done=len(rows) - len(uncopied), stop=run.stop.set)
    try:
        for key in keys:
            reason = _invalid_reason(key)
            if reason and key not in rows:
                record(_error_row(key, f"invalid id: {reason}", "invalid_id"))
        if todo:
            try:
                run.execute(todo, uncopied, record)
            except KeyboardInterrupt:
                if not in_notebook():
                    raise
                log.warning("interrupted: the run stopped, run again to resume")
        for key in fetch:
            if key not in rows:
                record(_error_row(key, "not fetched: the run was stopped", "stopped"))
    except BaseException:
        _wind_up(reporter, client if own_client else None, manifest_path, keys, failing=True)
        raise
    _wind_up(reporter, client if own_client else None, manifest_path, keys, failing=False)
    manifest = to_frame([rows[key] for key in keys])
    report_outcome(manifest)
    return manifest


def report_outcome(manifest: pd.DataFrame) -> None:
    """One warning for rows not reached by a stopped run, one for rows that failed."""
    stopped = int((manifest["error_kind"] == "stopped").sum())
    failed = int(manifest["error"].notna().sum()) - stopped
    if stopped:
        log.warning("the run stopped: %d recordings not fetched, run again to resume", stopped)
    if failed:
        log.warning("%d of %d recordings failed: see the error column", failed, len(manifest))


def _reporter(progress: bool | Reporter) -> Reporter:
    if isinstance(progress, Reporter):
        return progress
    if progress and in_notebook():
        from .widgets import Panel

        return Panel()
    return TqdmProgress(disable=not progress)


def _wind_up(
    reporter: Reporter,
    client: SiroClient | None,
    manifest_path: Path,
    keys: list[str | None],
    failing: bool,
) -> None:
    """Close what the run opened and fold the journal into the manifest, new rows in input order.

    While another error is on its way out, a failure to save (the same full
    disk, say) is logged rather than raised over it: the journal still holds
    every row, and the next run reads it.
    """
    reporter.close()
    if client is not None:
        client.close()
    try:
        saved = compact(manifest_path, order=keys)
    except OSError as exc:
        if not failing:
            raise
        log.error("manifest not saved (%s); its journal keeps the rows", exc.strerror or exc)
    else:
        log.info("manifest saved to %s (%d rows)", manifest_path, len(saved))


def check_settings(workers: int, convert_to: str | None) -> None:
    """Refuse bad settings with a clear ``ValueError``, before any request."""
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if convert_to not in CONVERSIONS:
        raise ValueError(f"convert_to must be one of {CONVERSIONS}, got {convert_to!r}")


def _is_dask(ids: Any) -> bool:
    """A Dask DataFrame or Series (told without importing Dask)."""
    return type(ids).__module__.startswith("dask") and hasattr(ids, "to_delayed")


def normalize_ids(ids: IdsLike, id_column: str = "recording_id") -> list[str | None]:
    """Distinct ids as strings (``None`` for a missing one), in input order.

    Examples
    --------
    >>> normalize_ids([12, "12", 7.0, None, float("nan"), "a"])
    ['12', '7', None, 'a']
    """
    if isinstance(ids, pd.DataFrame):
        if id_column not in ids.columns:
            raise ValueError(
                f"no column {id_column!r} in the DataFrame; its columns are {list(ids.columns)}"
                " (pass id_column=...)"
            )
        values: Iterable[Any] = ids[id_column]
    elif isinstance(ids, str | bytes):
        raise TypeError("ids must be a DataFrame, a Series or a list of ids, not one string")
    else:
        values = ids
    return list(dict.fromkeys(_as_id(value) for value in values))


def _as_id(value: Any) -> str | None:
    """One id as a string: integral numbers without a decimal point, missing as None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _invalid_reason(recording_id: str | None) -> str | None:
    if recording_id is None:
        return "missing (null)"
    if not recording_id.strip():
        return "empty"
    return None


def _ensure_writable_dir(folder: Path, what: str) -> None:
    """Fail before any request when results could not be written."""
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


def _complete_rows(
    previous: pd.DataFrame, out_dir: Path, wanted: set[str | None]
) -> dict[str | None, dict[str, Any]]:
    """Rows of an earlier run whose file is still there, whole: no need to fetch them again."""
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
    complete = candidates.assign(path=local)[intact]
    return {row["recording_id"]: row for row in complete.to_dict("records")}


def _has_copy(row: dict[str, Any], convert_to: str | None) -> bool:
    """Whether a complete row already has the copy asked for (an atomic write: whole if there)."""
    if convert_to is None:
        return True
    copy = row.get("audio_path")
    return not pd.isna(copy) and Path(copy).suffix == f".{convert_to}" and Path(copy).exists()


def _error_row(
    recording_id: str | None, error: str, kind: str, signed: SignedURL | None = None
) -> dict[str, Any]:
    return {
        "recording_id": recording_id,
        "error": error,
        "error_kind": kind,
        "expiration": signed.expiration if signed else None,
        "fetched_at": pd.Timestamp.now(tz="UTC"),
    }


def _stored_size(path: str | os.PathLike[str]) -> int | None:
    """The file's size, or None when there is no file to measure."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _expired(error: DownloadError, signed: SignedURL) -> bool:
    """Storage said the URL expired, or refused it once its expiration had passed."""
    refused = error.status in (400, 401, 403)
    return isinstance(error, ExpiredURLError) or (refused and signed.expires_within(0))


class _Stopped(Exception):
    """Raised inside a worker when the run is stopping; its row is left for the next run."""


@dataclass
class _Run:
    """Worker threads doing sign → download → inspect, and the stop switch they share."""

    client: SiroClient
    out_dir: Path
    workers: int
    overwrite: bool
    timeout: tuple[float, float]
    reporter: Reporter
    complete_elsewhere: Callable[[str], dict[str, Any] | None]
    convert_to: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def execute(
        self,
        todo: list[str],
        uncopied: dict[str, dict[str, Any]],
        record: Callable[[dict[str, Any]], None],
    ) -> None:
        """Fetch every id (or only convert the complete ``uncopied`` rows); record each row as
        it finishes; raise what stops the run.
        """
        (self.out_dir / LOCKS_FOLDER).mkdir(exist_ok=True)
        sessions = ThreadSessions(retry_policy())
        pool = ThreadPoolExecutor(min(len(todo), self.workers), thread_name_prefix="siro-data")
        queue = iter(enumerate(todo))
        order: dict[Future, int] = {}
        pending: set[Future] = set()

        def submit(count: int) -> None:
            """A few ids ahead of the workers, not all: waiting stays cheap for 100,000 ids."""
            for index, key in itertools.islice(queue, count):
                if key in uncopied:
                    future = pool.submit(self._copy, uncopied[key])
                else:
                    future = pool.submit(self._fetch_one, key, sessions)
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
            sessions.close()
        if fatal is not None:
            raise fatal

    @staticmethod
    def _collect(future: Future, record: Callable[[dict[str, Any]], None]) -> BaseException | None:
        """Record a finished row; return the error that must stop the run, if any."""
        if future.cancelled():
            return None
        error = future.exception()
        if error is None:
            record(future.result())
            return None
        return None if isinstance(error, _Stopped) else error

    def _halt(self, pending: set[Future]) -> None:
        self.stop.set()
        for future in pending:
            future.cancel()

    def _fetch_one(self, recording_id: str, sessions: ThreadSessions) -> dict[str, Any]:
        """One recording, while no other process works on it."""
        lock = FileLock(self.out_dir / LOCKS_FOLDER / f"{file_stem(recording_id)}.lock")
        while True:
            self._check_stop()
            try:
                lock.acquire(timeout=POLL_SECONDS)
                break
            except Timeout:
                continue
        try:
            return self._fetch_unlocked(recording_id, sessions)
        finally:
            lock.release()

    def _fetch_unlocked(self, recording_id: str, sessions: ThreadSessions) -> dict[str, Any]:
        """One recording's whole life: a failure becomes its row; a 401 or disk error stops all."""
        signed = None
        discard = self.overwrite
        fruitless = 0
        try:
            while fruitless < MAX_FRUITLESS_SIGNINGS:
                self._check_stop()
                signed = self.client.sign(recording_id)
                if signed.expires_within(EXPIRY_MARGIN_SECONDS):
                    fruitless += 1
                    continue
                target = self.out_dir / f"{file_stem(recording_id)}.{url_extension(signed.url)}"
                if not discard and target.exists():
                    row = self.complete_elsewhere(recording_id)
                    if row is not None:  # another process finished it meanwhile
                        return row
                self._prepare(target, discard)
                discard = False
                held = _stored_size(partial_path(target)) or 0
                try:
                    result = download(
                        signed.url,
                        target,
                        session=sessions.get(),
                        timeout=self.timeout,
                        verify=audio.duration,
                        on_bytes=self._on_bytes,
                    )
                except DownloadError as exc:
                    if not _expired(exc, signed):
                        raise
                    grew = (_stored_size(partial_path(target)) or 0) > held
                    fruitless = 0 if grew else fruitless + 1
                    log.info("%r: signed URL expired, asking for a fresh one", recording_id)
                    continue
                return self._with_copy(
                    {
                        "recording_id": recording_id,
                        "path": str(result.path),
                        "expiration": signed.expiration,
                        "duration": result.verified,
                        "size_bytes": result.size,
                        "sha256": result.sha256,
                        "content_type": result.content_type,
                        "fetched_at": pd.Timestamp.now(tz="UTC"),
                    }
                )
            raise DownloadError(
                f"signed URL expired {MAX_FRUITLESS_SIGNINGS} times in a row without progress"
            )
        except _Stopped:
            raise
        except AuthError:  # a bad token: every row would fail alike
            self.stop.set()  # before this thread takes the next id
            raise
        except OSError as exc:  # a full disk, say: the same
            self.stop.set()
            log.error(
                "%r: cannot write (%s); stopping, partial files are kept",
                recording_id,
                describe_error(exc),
            )
            raise
        except SiroDataError as exc:
            log.info("%r failed: %s", recording_id, exc)
            return _error_row(recording_id, str(exc), exc.kind, signed)
        except Exception as exc:  # an answer nobody foresaw: it costs its row, not the run
            log.exception("%r: unexpected error", recording_id)
            message = f"unexpected error: {describe_error(exc)}"
            return _error_row(recording_id, message, "unexpected", signed)

    def _copy(self, row: dict[str, Any]) -> dict[str, Any]:
        """A complete download that lacks its copy: convert it, fetching nothing."""
        self._check_stop()
        try:
            return self._with_copy(row)
        except OSError:
            self.stop.set()
            raise

    def _with_copy(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row with the copy ``convert_to`` asks for; a failed conversion is its error."""
        if self.convert_to is None:
            return row
        try:
            copy = audio.convert(row["path"], self.convert_to, overwrite=self.overwrite)
        except SiroDataError as exc:
            log.info("%r: conversion to %s failed: %s", row["recording_id"], self.convert_to, exc)
            message = f"conversion to {self.convert_to} failed: {exc}"
            return {**row, "error": message, "error_kind": "conversion"}
        return {**row, "audio_path": str(copy)}

    @staticmethod
    def _prepare(target: Path, discard: bool) -> None:
        """Discard earlier bytes, or turn a file no complete row accounts for back into a partial.

        A run killed between the rename and its journal line leaves such a
        file; resuming it costs one ranged request (416 when it is whole).
        """
        partial = partial_path(target)
        if discard:
            target.unlink(missing_ok=True)
            partial.unlink(missing_ok=True)
        elif target.exists():
            os.replace(target, partial)

    def _on_bytes(self, count: int) -> None:
        self._check_stop()
        self.reporter.add_bytes(count)

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise _Stopped
