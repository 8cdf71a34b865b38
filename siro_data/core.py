"""fetch_all: a table of recording ids in; audio files and a manifest out.

The orchestration only: it validates the input, skips what an earlier run
finished, runs sign → download → inspect for the rest on worker threads, and
records each finished row in the manifest's journal as it comes in.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import audio
from .client import SignedURL, SiroClient, TokenSource
from .download import download, partial_path
from .exceptions import AuthError, DownloadError, ExpiredURLError, SiroDataError
from .manifest import Journal, compact, read_manifest, to_frame
from .naming import file_stem, url_extension
from .sessions import DEFAULT_TIMEOUT, ThreadSessions, describe_error, retry_policy

log = logging.getLogger(__name__)

#: Fresh signed URLs in a row that bring no new byte before a recording is given up.
#: (A long download may outlive many URLs: each that makes progress is welcome.)
MAX_FRUITLESS_SIGNINGS = 3
#: A URL this close to its expiration is not worth starting a download with.
EXPIRY_MARGIN_SECONDS = 1.0

IdsLike = pd.DataFrame | pd.Series | Iterable[Any]


def fetch_all(
    ids: IdsLike,
    id_column: str = "recording_id",
    out_dir: str | os.PathLike[str] = "data/recordings",
    manifest_path: str | os.PathLike[str] = "data/manifest.parquet",
    token: TokenSource | None = None,
    api_url: str | None = None,
    workers: int = 8,
    progress: bool = True,
    overwrite: bool = False,
    *,
    client: SiroClient | None = None,
    requests_per_minute: int = 1000,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
) -> pd.DataFrame:
    """Download the audio of many recordings, resumably, and describe it in a manifest.

    Parameters
    ----------
    ids : DataFrame, Series or iterable
        Recording ids: a DataFrame's ``id_column``, or the values themselves.
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
        Recordings in flight at once (signing and downloading overlap).
    progress : bool
        Show progress bars (widgets in Jupyter).
    overwrite : bool
        Fetch every recording again, even those already complete.
    client : SiroClient, optional
        A client to use instead of one made from ``token`` and ``api_url``.
    requests_per_minute : int
        Pace of API calls; Siro allows 1000 per token per minute.
    timeout : (float, float)
        Connect and read timeouts in seconds, for every request.

    Returns
    -------
    pandas.DataFrame
        The manifest of this call: one row per distinct id, in input order,
        with the columns of :data:`siro_data.manifest.COLUMNS`. A row whose
        ``error`` is null has its complete, checked file at ``path``.

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
    keys = normalize_ids(ids, id_column)
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    out_dir = Path(out_dir).expanduser().absolute()
    manifest_path = Path(manifest_path).expanduser().absolute()
    _ensure_writable_dir(out_dir, "out_dir")
    _ensure_writable_dir(manifest_path.parent, "manifest_path's folder")

    rows: dict[str | None, dict[str, Any]] = {}
    if not overwrite:
        rows.update(_complete_rows(read_manifest(manifest_path), out_dir, set(keys)))
    todo = [key for key in keys if key not in rows and _invalid_reason(key) is None]
    own_client = bool(todo) and client is None
    if own_client:
        client = SiroClient(
            token, api_url, requests_per_minute=requests_per_minute, timeout=timeout
        )

    progress_bars = _Progress(total=len(keys), done=len(rows), enabled=progress)
    try:
        with Journal(manifest_path) as journal:

            def record(row: dict[str, Any]) -> None:
                rows[row["recording_id"]] = row
                journal.append(row)
                progress_bars.finished(row)

            for key in keys:
                reason = _invalid_reason(key)
                if reason and key not in rows:
                    record(_error_row(key, f"invalid id: {reason}", "invalid_id"))
            if todo:
                _Run(client, out_dir, workers, overwrite, timeout, progress_bars).execute(
                    todo, record
                )
    finally:
        progress_bars.close()
        if own_client:
            client.close()
        saved = compact(manifest_path)
        log.info("manifest saved to %s (%d rows)", manifest_path, len(saved))
    manifest = to_frame([rows[key] for key in keys])
    failed = int(manifest["error"].notna().sum())
    if failed:
        log.warning("%d of %d recordings failed: see the error column", failed, len(keys))
    return manifest


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
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {folder} is not writable")


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
    complete = {}
    for row in candidates.to_dict("records"):
        local = out_dir / Path(row["path"]).name
        try:
            intact = local.stat().st_size == row["size_bytes"]
        except OSError:
            intact = False
        if intact:
            complete[row["recording_id"]] = {**row, "path": str(local)}
    return complete


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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


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
    progress: _Progress
    stop: threading.Event = field(default_factory=threading.Event)

    def execute(self, todo: list[str], record: Callable[[dict[str, Any]], None]) -> None:
        """Fetch every id; record each row as it finishes; raise what stops the run."""
        sessions = ThreadSessions(retry_policy())
        pool = ThreadPoolExecutor(min(len(todo), self.workers), thread_name_prefix="siro-data")
        pending = {pool.submit(self._fetch_one, recording_id, sessions) for recording_id in todo}
        fatal: BaseException | None = None
        try:
            for future in as_completed(list(pending)):
                pending.discard(future)
                error = self._collect(future, record)
                if error is not None and fatal is None:
                    fatal = error
                    self._halt(pending)
        except BaseException:  # an interrupt: stop cleanly, keep what finished
            self._halt(pending)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for future in pending:
                self._collect(future, record)
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
                self._prepare(target, discard)
                discard = False
                held = _size(partial_path(target))
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
                    fruitless = 0 if _size(partial_path(target)) > held else fruitless + 1
                    log.info("%r: signed URL expired, asking for a fresh one", recording_id)
                    continue
                return {
                    "recording_id": recording_id,
                    "path": str(result.path),
                    "expiration": signed.expiration,
                    "duration": result.verified,
                    "size_bytes": result.size,
                    "sha256": result.sha256,
                    "content_type": result.content_type,
                    "fetched_at": pd.Timestamp.now(tz="UTC"),
                }
            raise DownloadError(
                f"signed URL expired {MAX_FRUITLESS_SIGNINGS} times in a row without progress"
            )
        except _Stopped:
            raise
        except (AuthError, OSError):  # a bad token or a full disk: every row would fail alike
            self.stop.set()  # before this thread takes the next id
            raise
        except SiroDataError as exc:
            log.info("%r failed: %s", recording_id, exc)
            return _error_row(recording_id, str(exc), exc.kind, signed)
        except Exception as exc:  # an answer nobody foresaw: it costs its row, not the run
            log.exception("%r: unexpected error", recording_id)
            message = f"unexpected error: {describe_error(exc)}"
            return _error_row(recording_id, message, "unexpected", signed)

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
        self.progress.add_bytes(count)

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise _Stopped


class _Progress:
    """Two tqdm.auto bars (widgets in Jupyter): recordings done, and bytes received."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self._lock = threading.Lock()
        self.failed = 0
        self.recordings = tqdm(
            total=total, initial=done, desc="recordings", unit="rec", disable=not enabled
        )
        self.bytes = tqdm(
            desc="downloaded", unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled
        )

    def finished(self, row: dict[str, Any]) -> None:
        with self._lock:
            if row.get("error") is not None:
                self.failed += 1
                self.recordings.set_postfix(failed=self.failed, refresh=False)
            self.recordings.update(1)

    def add_bytes(self, count: int) -> None:
        with self._lock:
            self.bytes.update(count)

    def close(self) -> None:
        self.recordings.close()
        self.bytes.close()
