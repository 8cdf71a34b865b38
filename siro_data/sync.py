"""sync: fetch what appeared in Siro since the last sync, for an archive that grows daily.

One call a day (cron, Airflow, a notebook) keeps a folder up to date, at a cost
that follows what is new:

1. **List** the recordings created since the *watermark* (the newest
   ``dateCreated`` an earlier sync saw, kept beside the manifest, one per
   filter set) minus an *overlap*, since a recording may show up in Siro's
   listing after others created later than it.
2. **Keep the listing** beside the manifest (``<manifest>.listing.parquet``, one
   row per recording: when, title, rep, result, Siro's duration, the team when
   the sync filtered by team), so that :func:`read_recordings` joins who, when
   and what to where the file is and what went wrong.
3. **Fetch** the listed recordings that are not complete, and retry the failed
   rows that may succeed now (:data:`RETRIED_KINDS`: not ready yet, passing
   trouble) while the recording is younger than ``retry_for``; a row that
   cannot succeed (not found, forbidden) is not asked again.
4. **Move the watermark**, atomically, once the fetch is over: a sync killed at
   any moment lists again from where the last finished one left, and resumes.

Listing and signing go through one client, so together they stay under the
token's rate limit. Ages are measured on Siro's own dates, never on this
machine's clock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import core, processors, store
from .client import SiroClient, TokenSource, opened
from .download import Downloader
from .exceptions import LocalFileError
from .files import replacing
from .inputs import absolute, check_manifest_files, check_settings, ensure_writable_dir
from .listing import (
    LISTING_COLUMNS,
    DateLike,
    as_utc,
    recording_query,
    recordings_frame,
    wire_date,
)
from .locks import manifest_lock
from .manifest import read_rows
from .progress import ProgressChoice, Reporter, reporter_for
from .rows import Kind, Status, from_arrow
from .sessions import DEFAULT_TIMEOUT
from .summary import summarize

log = logging.getLogger(__name__)

#: Recordings created this long before the watermark are listed again: one may appear in
#: the listing late (a phone that uploads after a weekend offline, processing that lags).
DEFAULT_OVERLAP = pd.Timedelta(days=3)
#: Failed rows of a kind in :data:`RETRIED_KINDS` are asked again while their recording is
#: younger than this (by Siro's dates); then they keep their last error.
DEFAULT_RETRY_FOR = pd.Timedelta(days=7)
#: Failures a later sync may cure: audio not ready yet (a 200 with ``data.error``), storage
#: or network trouble, a server's bad hour, a stop. Not found, forbidden and malformed
#: requests are final: not asked again.
RETRIED_KINDS = frozenset(
    {
        Kind.API_ERROR,
        Kind.DOWNLOAD,
        Kind.NOT_AUDIO,
        Kind.CONNECTION,
        Kind.SERVER_ERROR,
        Kind.RATE_LIMITED,
        Kind.CONVERSION,
        Kind.UNEXPECTED,
        Kind.STOPPED,
    }
)

#: The listing kept beside the manifest: what ``list_recordings`` returns, the team the sync
#: listed it under (Siro's listing does not say), and when this sync saw it.
LISTING_SCHEMA = pa.schema(
    [
        (name, store.ARROW_TYPES[dtype])
        for name, dtype in {**LISTING_COLUMNS, "team_id": "string"}.items()
    ]
    + [("listed_at", pa.timestamp("ns", tz="UTC"))]
)
#: The listing's columns whose values repeat from row to row: dictionary-encoded in its file.
LISTING_REPEATING = ("user_id", "rep_first_name", "rep_last_name", "result", "trigger", "team_id")


def listing_path(manifest_path: str | os.PathLike[str]) -> Path:
    """The listing kept beside a manifest: ``manifest.parquet`` → ``manifest.listing.parquet``."""
    path = Path(manifest_path)
    return path.with_name(f"{path.stem}.listing.parquet")


@dataclass(frozen=True)
class SyncResult:
    """What one sync did.

    Attributes
    ----------
    recordings : pandas.DataFrame
        The recordings this sync fetched or retried: their listing columns
        joined to their manifest row (``path``, ``duration``, ``error``, ...).
    listed : int
        Recordings the listing returned (the overlap's included).
    list_calls : int
        Listing requests made.
    new : int
        Listed recordings the manifest did not know.
    retried : int
        Failed rows asked again.
    since : pandas.Timestamp
        The listing's lower bound (exclusive).
    watermark : pandas.Timestamp or None
        The newest ``dateCreated`` seen: where the next sync starts, less the overlap.
    """

    recordings: pd.DataFrame
    listed: int
    list_calls: int
    new: int
    retried: int
    since: pd.Timestamp
    watermark: pd.Timestamp | None

    def summary(self) -> str:
        """A few lines for people: what was listed, fetched, retried, how it ended."""
        lines = [
            f"listed {self.listed:,} recordings created after {_iso(self.since)}"
            f" ({self.list_calls:,} list calls)",
            f"fetched {self.new:,} new, retried {self.retried:,} that had failed",
            summarize(self.recordings),
            f"watermark: {_iso(self.watermark)}",
        ]
        return "\n".join(lines)


def sync(
    manifest_path: str | os.PathLike[str] = "data/manifest.parquet",
    out_dir: str | os.PathLike[str] = "data/recordings",
    since: DateLike | None = None,
    *,
    team_id: str | Iterable[str] | None = None,
    organization_id: str | None = None,
    conversation_type: str | Iterable[str] | None = None,
    result: str | None = None,
    token: TokenSource | None = None,
    api_url: str | None = None,
    workers: int = 16,
    progress: bool | ProgressChoice | Reporter = "auto",
    convert_to: str | None = None,
    overlap: pd.Timedelta = DEFAULT_OVERLAP,
    retry_for: pd.Timedelta = DEFAULT_RETRY_FOR,
    client: SiroClient | None = None,
    requests_per_minute: int = 1000,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
) -> SyncResult:
    """Fetch the recordings that appeared since the last sync into ``out_dir``.

    Parameters
    ----------
    manifest_path, out_dir : path-like
        As for :func:`siro_data.fetch_all`. The watermark and the listing are
        kept beside the manifest.
    since : datetime-like, optional
        List recordings created after this. Needed by the first sync of a
        manifest and filter set; later syncs start from their watermark less
        ``overlap``, or from ``since`` when it is earlier (to list again).
    team_id, organization_id, conversation_type, result : optional
        The filters of :func:`siro_data.list_recordings`; each filter set has
        its own watermark. With ``team_id``, each team is listed on its own, so
        that the kept listing says the team of each recording.
    token, api_url, workers, progress, convert_to, requests_per_minute, timeout
        As for :func:`siro_data.fetch_all`. One client lists and signs: both
        stay under ``requests_per_minute`` together.
    overlap : pandas.Timedelta
        How far before the watermark to list again (:data:`DEFAULT_OVERLAP`).
    retry_for : pandas.Timedelta
        How long after its creation a recording's failed row is retried
        (:data:`DEFAULT_RETRY_FOR`, for the kinds in :data:`RETRIED_KINDS`).
    client : SiroClient, optional
        A client to list and sign with instead of one made from ``token``.

    Returns
    -------
    SyncResult

    Raises
    ------
    ValueError
        Bad arguments, or no ``since`` for a first sync, before any request.
    AuthError
        The token was rejected: the watermark stays, the manifest keeps every
        row finished before; run again.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from siro_data.emulator import Emulator
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with Emulator() as emu:
    ...     first = sync(folder / "manifest.parquet", folder / "audio", since="2025-05-01",
    ...                  token=emu.token, api_url=emu.api_url, progress=False)
    ...     again = sync(folder / "manifest.parquet", folder / "audio",
    ...                  token=emu.token, api_url=emu.api_url, progress=False)
    >>> first.new, again.new, again.list_calls
    (12, 0, 1)
    """
    check_settings(workers, convert_to)
    manifest_path, out_dir = absolute(manifest_path), absolute(out_dir)
    # The filters, checked before anything else; each set has its own watermark.
    query = recording_query(since, None, team_id, organization_id, conversation_type, result)
    filters = {key: value for key, value in query.items() if not key.startswith(("limit", "date"))}
    state = _state_path(manifest_path, filters)
    watermark = _read_watermark(state)
    start = _start(since, watermark, overlap)
    ensure_writable_dir(out_dir, "out_dir")
    check_manifest_files(manifest_path)
    check_manifest_files(listing_path(manifest_path), "listing")
    check_manifest_files(state, "sync state")

    settings = {"requests_per_minute": requests_per_minute, "timeout": timeout}
    with opened(client, token, api_url, **settings) as api:
        listed, calls = _list(api, start, _teams(team_id), filters)
        _keep(listing_path(manifest_path), listed)
        newest = _newest(listed, watermark)
        horizon = None if newest is None else newest - retry_for
        todo, new, retried = _to_fetch(manifest_path, listed, horizon)
        with Downloader(timeout=timeout) as downloader:
            core.run(
                todo,
                out_dir,
                manifest_path,
                connect=lambda: opened(api),  # the one client: listing and signing share its pace
                downloader=downloader,
                reporter=reporter_for(progress, manifest_path),
                workers=workers,
                steps=processors.for_settings(convert_to),
            )
    _move_watermark(state, newest, filters)
    # Every listed recording, final failures included (not asked again, still failed), and
    # every retried one, as the manifest now has it.
    recordings = _joined(manifest_path, list(dict.fromkeys([*listed["recording_id"], *todo])))
    log.info("sync: listed %d, fetched %d new, retried %d", len(listed), new, retried)
    return SyncResult(recordings, len(listed), calls, new, retried, start, newest)


def read_recordings(manifest_path: str | os.PathLike[str]) -> pd.DataFrame:
    """Every recording a sync listed, joined to what siro_data did with it.

    Who, when and what (the listing's columns: ``date_created``, ``title``,
    ``user_id``, the rep's names, ``team_id``, ``result``, ``duration_api``)
    beside where and how (the manifest's: ``path``, ``duration``, ``error``, ...),
    one row per recording. A listed recording no run has fetched yet says so in
    its ``error`` (``error_kind`` "stopped": run again).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from siro_data.emulator import Emulator
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with Emulator() as emu:
    ...     _ = sync(folder / "manifest.parquet", folder / "audio", since="2025-05-01",
    ...              token=emu.token, api_url=emu.api_url, progress=False)
    >>> table = read_recordings(folder / "manifest.parquet")
    >>> len(table), table["error"].isna().all(), "rep_first_name" in table
    (12, np.True_, True)
    """
    return _joined(Path(manifest_path))


def _joined(manifest_path: Path, ids: list[str] | None = None) -> pd.DataFrame:
    """The kept listing's rows (of ``ids``, in their order) beside their manifest rows."""
    wanted = None if ids is None else store.as_ids(ids)
    listing = _listing_rows(listing_path(manifest_path), wanted)
    rows = from_arrow(read_rows(manifest_path, wanted))
    joined = listing.merge(rows, on="recording_id", how="left")
    if ids is not None:
        joined = joined.set_index("recording_id").reindex(ids).reset_index()
    missing = joined["error"].isna() & joined["path"].isna()
    joined.loc[missing, "error"] = "not fetched yet: run sync again"
    joined.loc[missing, "error_kind"] = Kind.STOPPED
    joined.loc[missing, "status"] = Status.STOPPED
    return joined


def _start(
    since: DateLike | None, watermark: pd.Timestamp | None, overlap: pd.Timedelta
) -> pd.Timestamp:
    """Where the listing starts: the watermark less the overlap, or ``since`` if earlier."""
    if watermark is None and since is None:
        raise ValueError(
            "the first sync of this manifest and these filters needs since=... "
            "(the date to list recordings from)"
        )
    candidates = [] if watermark is None else [watermark - overlap]
    if since is not None:
        candidates.append(as_utc("since", since))
    return min(candidates)


def _list(
    api: SiroClient, start: pd.Timestamp, teams: list[str | None], filters: dict[str, str]
) -> tuple[pd.DataFrame, int]:
    """The recordings created after ``start``, each team's on its own; and the calls made."""
    frames, calls = [], 0
    for team in teams:
        params = {**recording_query(since=start), **filters}
        if team is not None:
            params["teamId"] = team
        items = []
        for page in api.list_pages(params):
            calls += 1
            items.extend(page)
        frame = recordings_frame(items)
        frame["team_id"] = pd.array([team] * len(frame), "string")
        frames.append(frame)
    listed = pd.concat(frames, ignore_index=True)
    listed = listed.drop_duplicates("recording_id", ignore_index=True)
    listed["listed_at"] = pd.Timestamp.now(tz="UTC")
    return listed, calls


def _teams(team_id: str | Iterable[str] | None) -> list[str | None]:
    if team_id is None:
        return [None]
    return [team_id] if isinstance(team_id, str) else list(dict.fromkeys(team_id))


def _keep(path: Path, listed: pd.DataFrame) -> None:
    """Fold this listing into the one kept beside the manifest (a recording's latest wins)."""
    if listed.empty:
        return
    rows = pa.Table.from_pandas(listed, schema=LISTING_SCHEMA, preserve_index=False)
    try:
        with manifest_lock(path):
            store.fold(path, LISTING_SCHEMA, store.latest(rows), dictionary=LISTING_REPEATING)
    except OSError as exc:
        raise LocalFileError(exc, "save the listing", path) from exc


def _newest(listed: pd.DataFrame, watermark: pd.Timestamp | None) -> pd.Timestamp | None:
    """The newest creation date seen: Siro's clock, never this machine's."""
    dates = [date for date in (listed["date_created"].max(), watermark) if not pd.isna(date)]
    return max(dates) if dates else None


def _to_fetch(
    manifest_path: Path, listed: pd.DataFrame, horizon: pd.Timestamp | None
) -> tuple[list[str], int, int]:
    """The ids to run, and how many are new and how many failed rows are asked again.

    Every listed recording (complete ones cost a ``stat``), and the recent
    recordings of the kept listing whose row failed in a way a retry may cure.
    """
    recent = _recent(listing_path(manifest_path), horizon)
    created = dict(zip(recent["recording_id"], recent["date_created"], strict=True))
    created.update(zip(listed["recording_id"], listed["date_created"], strict=True))
    ids = [*listed["recording_id"].dropna(), *recent["recording_id"].dropna()]
    candidates = list(dict.fromkeys(ids))
    rows = read_rows(manifest_path, candidates)
    complete = rows.column("error").is_null().to_pylist()
    kinds = rows.column("error_kind").to_pylist()
    known = dict(
        zip(rows.column("recording_id").to_pylist(), zip(complete, kinds, strict=True), strict=True)
    )
    listed_now = set(listed["recording_id"])
    todo, new, retried = [], 0, 0
    for key in candidates:
        if key not in known:
            new += 1
            todo.append(key)
            continue
        complete, kind = known[key]
        young = horizon is None or (not pd.isna(created[key]) and created[key] >= horizon)
        if complete:
            if key in listed_now:
                todo.append(key)
        elif kind in RETRIED_KINDS and young:
            retried += 1
            todo.append(key)
    return todo, new, retried


def _recent(path: Path, horizon: pd.Timestamp | None) -> pd.DataFrame:
    """Ids and dates of the kept listing's recordings created at or after ``horizon``."""
    columns = ["recording_id", "date_created"]
    if horizon is None or not path.exists():
        return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    with manifest_lock(path, optional=True):
        table = pq.read_table(path, columns=columns, filters=[("date_created", ">=", horizon)])
    return table.to_pandas()


def _listing_rows(path: Path, ids: pa.Array | None = None) -> pd.DataFrame:
    """The kept listing (only ``ids``' rows when given), as a typed frame."""
    with manifest_lock(path, optional=True):
        table = store.scan(path, LISTING_SCHEMA, ids)
    return store.to_pandas(table)  # scanned with the listing's schema


def _state_path(manifest_path: Path, filters: dict[str, str]) -> Path:
    """The watermark of one filter set: a dot file beside the manifest."""
    digest = hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:12]
    return manifest_path.with_name(f".{manifest_path.name}.sync-{digest}.json")


def _read_watermark(path: Path) -> pd.Timestamp | None:
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ValueError(f"sync state {path} is not readable JSON ({exc}): remove it") from None
    return pd.Timestamp(state["watermark"]) if state.get("watermark") else None


def _move_watermark(path: Path, newest: pd.Timestamp | None, filters: dict[str, str]) -> None:
    """Write the new watermark whole, never behind one another sync wrote meanwhile."""
    if newest is None:
        return
    with manifest_lock(path):
        current = _read_watermark(path)
        if current is not None and current > newest:
            return
        state = {
            "watermark": _iso(newest),
            "filters": filters,
            "synced_at": _iso(pd.Timestamp.now(tz="UTC")),
        }
        try:
            with replacing(path) as temporary:
                temporary.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise LocalFileError(exc, "save the watermark", path) from exc


def _iso(stamp: pd.Timestamp | None) -> str:
    return "none yet" if stamp is None or pd.isna(stamp) else wire_date(stamp, up=False)
