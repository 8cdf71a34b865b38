"""What an archive lets go of: recordings Siro no longer serves, and audio past a retention limit.

Nothing here removes anything unless asked. A recording that is gone leaves a *tombstone*: its
row stays in the manifest, with the status ``deleted`` (Siro no longer serves it) or
``expired`` (the retention rule removed its audio), what it said of the file kept as history,
and neither :func:`siro_data.fetch_all` nor :func:`siro_data.sync` asks for it again.

- **Reconcile** (:func:`tombstone_unlisted`, ``sync(reconcile=True)``): the whole history is
  listed again; the recordings a sync listed before and Siro lists no more are marked
  ``deleted``. Their audio stays.
- **Prune** (:func:`prune_deleted`, ``sync(prune=True)``): the audio of ``deleted`` rows is
  removed, with its WAV/FLAC copy and any partial download.
- **Retention** (:func:`prune`, ``sync(keep=...)``): the audio of recordings created, by
  Siro's dates (the listing a sync keeps), before now less a limit is removed; their rows
  become ``expired``.

A recording whose lock another process holds (it is fetching it) is left as it is, and said.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .archive import Archive, Table
from .locks import held_if_free
from .naming import file_stem
from .rows import Kind, Row, Status, from_arrow, status_of, to_frame, tombstone
from .summary import human_bytes
from .sync_state import LISTING_REPEATING, LISTING_SCHEMA, iso

log = logging.getLogger(__name__)

#: The error of a recording a reconciling sync no longer found in Siro's listing.
UNLISTED = "deleted in Siro: no longer in its listing"
#: Added to a ``deleted`` row's error once its audio is removed.
AUDIO_REMOVED = "audio removed"
#: The short units a retention limit takes (``90d``, ``12h``, ``2w``, ``30min``, ``45s``).
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "min": "minutes", "m": "minutes", "s": "seconds"}


@dataclass(frozen=True)
class Removal:
    """What a prune or a retention run did.

    Attributes
    ----------
    what : str
        Which recordings it was about, in words ("deleted in Siro", "created before ...").
    rows : pandas.DataFrame
        The tombstones it wrote (manifest rows), one per recording let go.
    files : int
        Files (or objects) removed: downloads, their WAV/FLAC copies, partial downloads.
    bytes : int
        Bytes of the downloads removed (as their rows said).
    busy : list of str
        Recordings left as they were: another process held their lock. The next run
        removes them.
    """

    what: str
    rows: pd.DataFrame = field(default_factory=lambda: to_frame([]))
    files: int = 0
    bytes: int = 0
    busy: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line, two when some recordings were in use.

        Examples
        --------
        >>> print(Removal("deleted in Siro", files=2, bytes=1_500_000, busy=["a"]).summary())
        removed the audio of 0 recordings deleted in Siro: 2 files, 1.5 MB
        left 1 recording in use by another process (its lock is held): run again to remove it
        """
        line = (
            f"removed the audio of {len(self.rows)} recordings {self.what}:"
            f" {self.files} files, {human_bytes(self.bytes)}"
        )
        if not self.busy:
            return line
        noun = "recording" if len(self.busy) == 1 else "recordings"
        return (
            f"{line}\nleft {len(self.busy)} {noun} in use by another process"
            f" (its lock is held): run again to remove {'it' if len(self.busy) == 1 else 'them'}"
        )


def parse_age(name: str, value: str | pd.Timedelta) -> pd.Timedelta:
    """A retention limit: ``"90d"``, ``"12h"``, ``"2w"``, ``"30min"``, any text pandas reads
    as a duration (``"90 days"``), or a Timedelta.

    Raises
    ------
    ValueError
        Not a positive duration with a unit, named.

    Examples
    --------
    >>> parse_age("keep", "90d"), parse_age("keep", "12h")
    (Timedelta('90 days 00:00:00'), Timedelta('0 days 12:00:00'))
    """
    if isinstance(value, str) and not re.search(r"[a-zA-Z]", value):
        raise ValueError(f"{name} needs a unit, as in 90d or 12h: got {value!r}")
    short = (
        re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*", value)
        if isinstance(value, str)
        else None
    )
    try:
        if short and short.group(2).lower() in _UNITS:
            age = pd.Timedelta(**{_UNITS[short.group(2).lower()]: float(short.group(1))})
        else:
            age = pd.Timedelta(value)
    except (ValueError, TypeError):
        raise ValueError(f"{name} is not a duration (90d, 12h, 2w): {value!r}") from None
    if pd.isna(age) or age <= pd.Timedelta(0):
        raise ValueError(f"{name} must be a positive duration, got {value!r}")
    return age


def reconcile_start(listing: Table, start: pd.Timestamp) -> pd.Timestamp:
    """Where listing the whole history starts: just before the earliest recording the kept
    listing holds (or ``start``, if earlier)."""
    older = listing.read(["date_created"], [("date_created", "<=", start)])
    earliest = None if older is None else pc.min(older.column("date_created")).as_py()
    if earliest is None:
        return start
    return min(start, pd.Timestamp(earliest) - pd.Timedelta(milliseconds=1))


def tombstone_unlisted(
    archive: Archive,
    listing: Table,
    listed: pd.DataFrame,
    since: pd.Timestamp,
    teams: Sequence[str | None],
) -> pd.DataFrame:
    """Mark ``deleted`` the recordings the kept listing holds (created after ``since``, of
    ``teams``) that ``listed``, the whole history listed again, no longer holds.

    Only what a sync listed is reconciled: rows that ``fetch_all`` added from a table of ids
    may be another user's, whom this token's listing does not show. The audio stays.
    Returns the tombstones written.
    """
    kept = listing.read(["recording_id", "team_id"], [("date_created", ">", since)])
    if kept is None or kept.num_rows == 0:
        return to_frame([])
    if list(teams) != [None]:
        team = kept.column("team_id")
        kept = kept.filter(pc.is_in(team, value_set=pa.array(list(teams), team.type)))
    ids = kept.column("recording_id").combine_chunks()
    seen = pa.array(listed["recording_id"].dropna().tolist(), ids.type)
    missing = pc.unique(ids.filter(pc.invert(pc.is_in(ids, value_set=seen))))
    if not len(missing):
        return to_frame([])
    known = {row["recording_id"]: row for row in _records(archive.rows(missing))}
    rows = []
    for key in missing.to_pylist():
        row = known.get(key, {"recording_id": key})
        if status_of(row) != Status.DELETED:
            rows.append(tombstone(row, Kind.DELETED, UNLISTED, _has_audio(row)))
    _write(archive, rows)
    if rows:
        log.warning(
            "reconcile: %d recordings are no longer in Siro's listing: marked deleted"
            " (their audio stays unless pruned)",
            len(rows),
        )
    return to_frame(rows)


def prune_deleted(archive: Archive) -> Removal:
    """Remove the audio of every ``deleted`` row (its copy, its partial); the rows stay."""
    ids = archive.manifest.table.read(["recording_id"], [("error_kind", "=", Kind.DELETED)])
    found = [] if ids is None else ids.column("recording_id").to_pylist()
    rows = [
        row
        for row in _records(archive.rows(found))
        if status_of(row) == Status.DELETED and _has_audio(row)
    ]
    return _remove(archive, rows, "deleted in Siro", lambda row: f"{row['error']}; {AUDIO_REMOVED}")


def expire(archive: Archive, listing: Table, older_than: pd.Timedelta) -> Removal:
    """The retention rule: the audio of recordings created before now less ``older_than``
    (by the kept listing's ``date_created``) removed, their rows ``expired``.

    A recording listed but never fetched gets its ``expired`` row too, so that no sync
    fetches it. A ``deleted`` row stays ``deleted`` (its audio removed all the same).
    """
    cutoff = pd.Timestamp.now(tz="UTC") - older_than
    old = listing.read(["recording_id"], [("date_created", "<", cutoff)])
    ids = pa.array([], pa.large_string()) if old is None else old.column("recording_id")
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    rows = _records(archive.rows(ids))
    tombstones = (Status.EXPIRED, Status.DELETED)
    todo = [row for row in rows if status_of(row) not in tombstones or _has_audio(row)]
    unknown = set(ids.to_pylist()) - {row["recording_id"] for row in rows}
    todo += [{"recording_id": key} for key in sorted(unknown, key=str)]
    reason = f"expired: audio removed by the retention rule (created before {iso(cutoff)})"

    def error(row: Row) -> str:
        deleted = status_of(row) == Status.DELETED
        return f"{row['error']}; {AUDIO_REMOVED}" if deleted else reason

    return _remove(archive, todo, f"created before {iso(cutoff)}", error, Kind.EXPIRED)


def prune(
    manifest_path: str | os.PathLike[str] = "data/manifest.parquet",
    out_dir: str | os.PathLike[str] = "data/recordings",
    *,
    older_than: str | pd.Timedelta,
    storage_options: dict[str, Any] | None = None,
) -> Removal:
    """Apply a retention rule: remove the audio of recordings created before now less
    ``older_than``, and keep their rows as ``expired`` tombstones that no sync fetches again.

    Creation dates are Siro's (``date_created`` in the listing a :func:`siro_data.sync`
    keeps beside the manifest), so only synced archives have them. The downloads go, with
    their WAV/FLAC copies and partial downloads, on a disk or in a bucket; a recording
    another process is fetching (its lock is held) is left, and said, for the next run.
    What was removed is logged (a WARNING line) and returned.

    Parameters
    ----------
    manifest_path, out_dir : path-like or str
        As for :func:`siro_data.sync`: local paths or bucket URLs.
    older_than : str or pandas.Timedelta
        The limit: ``"90d"``, ``"12h"``, ``"2w"``, or a Timedelta.
    storage_options : dict, optional
        For a bucket: what its fsspec filesystem takes.

    Returns
    -------
    Removal
        The tombstones written, the files and bytes removed, the recordings left in use.

    Raises
    ------
    ValueError
        A limit that is not a positive duration, or no listing beside the manifest.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import siro_data
    >>> from siro_data.emulator import Emulator
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with Emulator() as emu:
    ...     _ = siro_data.sync(folder / "manifest.parquet", folder / "audio", since="2025-05-01",
    ...                        token=emu.token, api_url=emu.api_url, progress=False)
    >>> removed = prune(folder / "manifest.parquet", folder / "audio", older_than="90d")
    >>> len(removed.rows), list(folder.joinpath("audio").glob("*.m4a"))
    (12, [])
    >>> siro_data.read_manifest(folder / "manifest.parquet")["status"].unique().tolist()
    ['expired']
    """
    limit = parse_age("older_than", older_than)
    archive = Archive(out_dir, manifest_path, storage_options)
    listing = archive.listing(LISTING_SCHEMA, LISTING_REPEATING)
    if not listing.exists():
        raise ValueError(
            f"no listing beside the manifest ({listing.location}): the retention rule reads"
            " the creation dates a sync keeps there; run siro-data sync first"
        )
    archive.check()
    return expire(archive, listing, limit)


def _remove(
    archive: Archive,
    rows: list[Row],
    what: str,
    error: Any,
    kind: str = Kind.DELETED,
) -> Removal:
    """Each recording's files removed under its lock, then its tombstone journaled (a kill
    in between leaves a row whose file is gone: the next run takes it again)."""
    if not rows:
        return Removal(what)
    log.warning(
        "removing the audio of %d recordings %s (downloads, WAV/FLAC copies, partial"
        " downloads); their rows stay as tombstones",
        len(rows),
        what,
    )
    files = archive.audio
    written, busy, removed, size = [], [], 0, 0
    for row in rows:
        key = row["recording_id"]
        with held_if_free(files.lock(file_stem(key))) as free:
            if not free:
                busy.append(key)
                continue
            for path in dict.fromkeys(_paths(row)):
                if files.remove(path):
                    removed += 1
                    log.info("removed %s", path)
            partial = files.partial(file_stem(key))
            if partial.exists():
                partial.unlink()
                removed += 1
            if _has_audio(row) and not pd.isna(row.get("size_bytes")):
                size += int(row["size_bytes"])
            buried = status_of(row) == Status.DELETED
            done = tombstone(row, Kind.DELETED if buried else kind, error(row), False)
            archive.manifest.append([done])
            written.append(done)
    archive.manifest.save()
    if busy:
        log.warning("%d recordings left in use by another process: %s", len(busy), busy[:10])
    return Removal(what, to_frame(written), removed, size, busy)


def _write(archive: Archive, rows: Iterable[Row]) -> None:
    rows = list(rows)
    if rows:
        archive.manifest.append(rows)
        archive.manifest.save()


def _paths(row: Row) -> list[str]:
    return [row[name] for name in ("path", "audio_path") if isinstance(row.get(name), str)]


def _has_audio(row: Row) -> bool:
    return bool(_paths(row))


def _records(rows: pa.Table) -> list[dict[str, Any]]:
    """Manifest rows as dicts, missing values None (as the row builders make them)."""
    return [
        {name: (None if value is pd.NA else value) for name, value in record.items()}
        for record in from_arrow(rows).to_dict("records")
    ]
