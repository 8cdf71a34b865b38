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
   rows that may succeed now (:data:`siro_data.sync.RETRIED_KINDS`: not ready yet, passing
   trouble) while the recording is younger than ``retry_for``; a row that
   cannot succeed (not found, forbidden) is not asked again.
4. **Move the watermark**, atomically, once the fetch is over: a sync killed at
   any moment lists again from where the last finished one left, and resumes.

On request, what the archive lets go of (:mod:`siro_data.retention`): ``reconcile``
lists the whole history and marks ``deleted`` what Siro lists no more, ``prune``
removes their audio, ``keep`` applies a retention rule. By default nothing is removed.

Listing and signing go through one client, so together they stay under the
token's rate limit. Ages are measured on Siro's own dates, never on this
machine's clock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from . import core, processors, store
from .archive import Archive, Table
from .client import SiroClient, opened
from .download import Downloader
from .inputs import check_settings
from .listing import DateLike, as_utc, recording_query, recordings_frame
from .progress import ProgressChoice, Reporter, reporter_for
from .retention import (
    Removal,
    expire,
    parse_age,
    prune_deleted,
    reconcile_start,
    tombstone_unlisted,
)
from .rows import Kind, Status
from .sessions import DEFAULT_TIMEOUT
from .summary import summarize
from .sync_state import (
    LISTING_REPEATING,
    LISTING_SCHEMA,
    iso,
    keep_listing,
    listing_with_rows,
    move_watermark,
    read_watermark,
    recent_listing,
)
from .tokens import TokenSource

log = logging.getLogger(__name__)

#: Recordings created this long before the watermark are listed again: one may appear in
#: the listing late (a phone that uploads after a weekend offline, processing that lags).
DEFAULT_OVERLAP = pd.Timedelta(days=3)
#: Failed rows of a kind in :data:`siro_data.sync.RETRIED_KINDS` are asked again while their
#: recording is younger than this (by Siro's dates); then they keep their last error.
DEFAULT_RETRY_FOR = pd.Timedelta(days=7)
#: Failures a later sync may cure: audio not ready yet (a 200 with ``data.error``), storage
#: or network trouble, a server's bad hour, a stop, a file :func:`siro_data.verify` found
#: gone or changed. Not found, forbidden and malformed requests are final: not asked again.
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
        Kind.MISSING,
        Kind.CORRUPT,
    }
)


@dataclass(frozen=True)
class SyncResult:
    """What one sync did.

    Its figures speak of this sync: a recording whose failure is final (not
    found, forbidden) and known from an earlier sync is not asked again, and is
    counted apart (``known_failed``), not as a failure of this one.

    Attributes
    ----------
    recordings : pandas.DataFrame
        The listed window (and the failed rows retried): listing columns
        joined to their manifest row (``path``, ``duration``, ``error``, ...).
    tried : pandas.DataFrame
        The rows of ``recordings`` this sync fetched or tried again (new ones,
        retried failures, complete rows whose file had gone), as they ended.
    known_failed : pandas.DataFrame
        The listed recordings whose failure an earlier sync found final: not
        asked again.
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
    deleted : pandas.DataFrame or None
        With ``reconcile``: the rows it marked ``deleted`` (no longer listed by Siro).
    removed : tuple of Removal
        With ``keep`` and ``prune``: the audio each removed.
    """

    recordings: pd.DataFrame
    tried: pd.DataFrame
    known_failed: pd.DataFrame
    listed: int
    list_calls: int
    new: int
    retried: int
    since: pd.Timestamp
    watermark: pd.Timestamp | None
    deleted: pd.DataFrame | None = None
    removed: tuple[Removal, ...] = ()

    @property
    def fetched(self) -> int:
        """Recordings this sync made complete."""
        return int(self.tried["status"].eq(Status.OK).sum())

    @property
    def failed(self) -> int:
        """Recordings this sync tried that failed (``tried``'s failed rows)."""
        return int(self.tried["status"].eq(Status.FAILED).sum())

    def summary(self) -> str:
        """A few lines for people: what was listed, fetched, retried, how this sync ended.

        The counts, failures and audio are this sync's; known final failures get a line
        of their own.
        """
        *outcome, audio = summarize(self.tried).splitlines()
        lines = [
            f"listed {self.listed} recordings created after {iso(self.since)}"
            f" ({self.list_calls} list calls)",
            f"fetched {self.new} new, retried {self.retried} that had failed",
            *outcome,
        ]
        if len(self.known_failed):
            lines.append(known_failures_line(self.known_failed))
        if self.deleted is not None:
            lines.append(f"reconciled: {len(self.deleted)} no longer listed by Siro, now deleted")
        lines += [removal.summary() for removal in self.removed]
        lines += [audio, f"watermark: {iso(self.watermark)}"]
        return "\n".join(lines)


def known_failures_line(rows: pd.DataFrame) -> str:
    """``2 known failures, not asked again: forbidden 1, not_found 1``.

    Examples
    --------
    >>> known_failures_line(pd.DataFrame({"error_kind": ["not_found"]}))
    '1 known failure, not asked again: not_found'
    """
    kinds = rows["error_kind"].fillna("error").value_counts().sort_index()
    named = [kind if len(kinds) == 1 else f"{kind} {count}" for kind, count in kinds.items()]
    noun = "failure" if len(rows) == 1 else "failures"
    return f"{len(rows)} known {noun}, not asked again: {', '.join(named)}"


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
    storage_options: dict[str, Any] | None = None,
    reconcile: bool = False,
    prune: bool = False,
    keep: str | pd.Timedelta | None = None,
    dask_client: Any = None,
) -> SyncResult:
    """Fetch the recordings that appeared since the last sync into ``out_dir``.

    Parameters
    ----------
    manifest_path, out_dir : path-like or str
        As for :func:`siro_data.fetch_all`: local paths or bucket URLs. The
        watermark and the listing are kept beside the manifest.
    since : datetime-like, optional
        List recordings created after this. Needed by the first sync of a
        manifest and filter set; later syncs start from their watermark less
        ``overlap``, or from ``since`` when it is earlier (to list again).
    team_id, organization_id, conversation_type, result : optional
        The filters of :func:`siro_data.list_recordings`; each filter set has
        its own watermark. With ``team_id``, each team is listed on its own, so
        that the kept listing says the team of each recording.
    token, api_url, workers, progress, convert_to, requests_per_minute, timeout, storage_options
        As for :func:`siro_data.fetch_all`. One client lists and signs: both
        stay under ``requests_per_minute`` together.
    overlap : pandas.Timedelta
        How far before the watermark to list again (:data:`siro_data.sync.DEFAULT_OVERLAP`).
    retry_for : pandas.Timedelta
        How long after its creation a recording's failed row is retried
        (:data:`siro_data.sync.DEFAULT_RETRY_FOR`, for the kinds in
        :data:`siro_data.sync.RETRIED_KINDS`).
    client : SiroClient, optional
        A client to list and sign with instead of one made from ``token``.
    dask_client : distributed.Client, optional
        Fetch on this cluster's workers: the listing, the plan and the watermark stay
        here; each worker adds its rows to the manifest. ``out_dir`` and
        ``manifest_path`` must be reachable from every worker: a bucket (workers need
        no shared disk: each stages its partials in its own scratch space), or a
        shared file system. One schedule keeps the listing here and the signing on
        the workers under ``requests_per_minute`` together.
    reconcile : bool
        List the whole history again (from just before the earliest recording the kept
        listing holds) and mark ``deleted`` the recordings a sync listed before that Siro
        lists no more: tombstones, never fetched again, their audio kept unless ``prune``.
        It costs a list call per 100 recordings (10,000 calls for 1,000,000: about 10
        minutes at the token's 1000 requests a minute) and a ``stat`` of each complete
        file. Filters other than ``team_id`` are refused: what they leave out would look
        deleted.
    prune : bool
        After the fetch, remove the audio of every ``deleted`` row, its WAV/FLAC copy and
        partial download; the rows stay as tombstones. Off by default; a WARNING says what
        it removes.
    keep : str or pandas.Timedelta, optional
        A retention rule (``"90d"``), applied once the listing is kept and before the
        fetch, so that nothing past it is downloaded: :func:`siro_data.prune`.

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
    if dask_client is not None and client is not None:
        raise ValueError("a sync on a Dask cluster signs on its workers: pass token=, not client=")
    limit = None if keep is None else parse_age("keep", keep)
    archive = Archive(out_dir, manifest_path, storage_options)
    # The filters, checked before anything else; each set has its own watermark.
    query = recording_query(since, None, team_id, organization_id, conversation_type, result)
    filters = {key: value for key, value in query.items() if not key.startswith(("limit", "date"))}
    if reconcile and set(filters) - {"teamId"}:
        raise ValueError("reconcile takes no filter but team_id: what one leaves out looks deleted")
    listing, state = archive.listing(LISTING_SCHEMA, LISTING_REPEATING), archive.watermark(filters)
    watermark = read_watermark(state)
    start = _start(since, watermark, overlap)
    archive.check()
    listing.check("listing")
    state.check("sync state")

    pacer = None
    if dask_client is not None:
        from . import dask as on_cluster

        pacer = on_cluster.ClusterPacer(requests_per_minute, 60.0, client=dask_client)
    settings = {"requests_per_minute": requests_per_minute, "timeout": timeout}
    limiter = None if pacer is None else pacer.bound(dask_client)
    teams, first = _teams(team_id), reconcile_start(listing, start) if reconcile else start
    with opened(client, token, api_url, rate_limiter=limiter, **settings) as api:
        listed, calls = _list(api, first, teams, filters)
        keep_listing(listing, listed)
        deleted = tombstone_unlisted(archive, listing, listed, first, teams) if reconcile else None
        removed = () if limit is None else (expire(archive, listing, limit),)
        newest = _newest(listed, watermark)
        horizon = None if newest is None else newest - retry_for
        plan = _to_fetch(archive, listing, listed, horizon)
        if pacer is not None:
            on_cluster.fetch_planned(
                dask_client,
                plan.todo,
                archive,
                token=token,
                api_url=api.api_url,
                pacer=pacer,
                workers=workers,
                timeout=timeout,
                convert_to=convert_to,
            )
        else:
            with Downloader(timeout=timeout) as downloader:
                core.run(
                    plan.todo,
                    archive,
                    connect=lambda: opened(api),  # one client: listing and signing share its pace
                    downloader=downloader,
                    reporter=reporter_for(progress, archive.manifest_path),
                    workers=workers,
                    steps=processors.for_settings(convert_to, archive.audio),
                )
    removed += (prune_deleted(archive),) if prune else ()
    move_watermark(state, newest, filters)
    # Every listed recording, final failures included (not asked again, still failed), and
    # every retried one, as the manifest now has it.
    ids = list(dict.fromkeys([*listed["recording_id"], *plan.todo]))
    recordings = listing_with_rows(archive.manifest, listing, ids)
    asked = recordings["recording_id"].isin(plan.todo).to_numpy(dtype=bool)
    before = recordings["recording_id"].map(plan.finished_at).astype(recordings["fetched_at"].dtype)
    rewritten = recordings["fetched_at"].ne(before).to_numpy(dtype=bool)
    failed = recordings["status"].eq(Status.FAILED).to_numpy(dtype=bool)
    result = SyncResult(
        recordings,
        tried=recordings[asked & rewritten].reset_index(drop=True),
        known_failed=recordings[~asked & failed].reset_index(drop=True),
        listed=len(listed),
        list_calls=calls,
        new=plan.new,
        retried=plan.retried,
        since=first,
        watermark=newest,
        deleted=deleted,
        removed=removed,
    )
    log.info(
        "sync: listed %d, fetched %d new, retried %d, %d failed, %d known failures",
        result.listed,
        result.new,
        result.retried,
        result.failed,
        len(result.known_failed),
    )
    return result


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


def _newest(listed: pd.DataFrame, watermark: pd.Timestamp | None) -> pd.Timestamp | None:
    """The newest creation date seen: Siro's clock, never this machine's."""
    dates = [date for date in (listed["date_created"].max(), watermark) if not pd.isna(date)]
    return max(dates) if dates else None


@dataclass(frozen=True)
class _Plan:
    """What a sync asks for, and what the manifest said of it before."""

    todo: list[str]  # new ids, failed rows retried, listed complete rows (a stat each)
    new: int
    retried: int
    finished_at: dict[str, pd.Timestamp]  # ``fetched_at`` of the rows known: unchanged, untried


def _to_fetch(
    archive: Archive, listing: Table, listed: pd.DataFrame, horizon: pd.Timestamp | None
) -> _Plan:
    """The ids to run: every listed recording (complete ones cost a ``stat``), and the
    recent recordings of the kept listing whose row failed in a way a retry may cure.
    """
    recent = recent_listing(listing, horizon)
    created = dict(zip(recent["recording_id"], recent["date_created"], strict=True))
    created.update(zip(listed["recording_id"], listed["date_created"], strict=True))
    ids = [*listed["recording_id"].dropna(), *recent["recording_id"].dropna()]
    candidates = list(dict.fromkeys(ids))
    rows = archive.manifest.read_rows(store.as_ids(candidates))
    columns = ("recording_id", "error", "error_kind", "fetched_at")
    known = {
        key: (error is None, kind, finished)
        for key, error, kind, finished in zip(
            *(rows.column(name).to_pylist() for name in columns), strict=True
        )
    }
    listed_now = set(listed["recording_id"])
    todo, new, retried = [], 0, 0
    for key in candidates:
        if key not in known:
            new += 1
            todo.append(key)
            continue
        complete, kind, _ = known[key]
        young = horizon is None or (not pd.isna(created[key]) and created[key] >= horizon)
        if complete:
            if key in listed_now:
                todo.append(key)
        elif kind in RETRIED_KINDS and young:
            retried += 1
            todo.append(key)
    finished_at = {key: pd.Timestamp(finished) for key, (_, _, finished) in known.items()}
    return _Plan(todo, new, retried, finished_at)
