"""What a sync keeps beside the manifest between runs: the listing, and one watermark per
filter set, as sync reads and changes them.

Where they live, and how they are written whole (under a lock on a disk, with conditional
writes in a bucket), is the archive's (:meth:`siro_data.archive.Archive.listing`,
:meth:`~siro_data.archive.Archive.watermark`). The listing is one row per recording a sync
listed: who, when and what, which :func:`read_recordings` joins to the manifest.
The watermark is the newest ``dateCreated`` a finished sync saw, never moved back.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import pyarrow as pa

from . import store
from .archive import Document, Manifest, Table, listing_table, open_manifest
from .exceptions import LocalFileError
from .listing import LISTING_COLUMNS, wire_date
from .rows import Kind, Status, from_arrow

#: The listing kept beside the manifest: what ``list_recordings`` returns, the team the sync
#: listed it under (Siro's listing does not say), and when this sync saw it.
LISTING_SCHEMA = store.schema_of(
    {**LISTING_COLUMNS, "team_id": "string", "listed_at": "datetime64[ns, UTC]"}
)
#: The listing's columns whose values repeat from row to row: dictionary-encoded in its file.
LISTING_REPEATING = ("user_id", "rep_first_name", "rep_last_name", "result", "trigger", "team_id")


def keep_listing(listing: Table, listed: pd.DataFrame) -> None:
    """Fold this listing into the one kept beside the manifest (a recording's latest wins)."""
    if listed.empty:
        return
    rows = pa.Table.from_pandas(listed, schema=LISTING_SCHEMA, preserve_index=False)
    try:
        listing.fold(store.latest(rows))
    except OSError as exc:
        raise LocalFileError(exc, "save the listing", listing.location) from exc


def recent_listing(listing: Table, horizon: pd.Timestamp | None) -> pd.DataFrame:
    """Ids and dates of the kept listing's recordings created at or after ``horizon``."""
    columns = ["recording_id", "date_created"]
    table = None if horizon is None else listing.read(columns, [("date_created", ">=", horizon)])
    if table is None:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    return table.to_pandas()


def listing_rows(listing: Table, ids: pa.Array | None = None) -> pd.DataFrame:
    """The kept listing (only ``ids``' rows when given), as a typed frame."""
    return store.to_pandas(listing.scan(ids))  # scanned with the listing's schema


def read_watermark(document: Document) -> pd.Timestamp | None:
    """The watermark a finished sync wrote, or None before the first."""
    try:
        state = document.read()
    except ValueError as exc:
        where = document.location
        raise ValueError(f"sync state {where} is not readable JSON ({exc}): remove it") from None
    return pd.Timestamp(state["watermark"]) if state and state.get("watermark") else None


def move_watermark(
    document: Document, newest: pd.Timestamp | None, filters: dict[str, str]
) -> None:
    """Write the new watermark whole, never behind one another sync wrote meanwhile."""
    if newest is None:
        return

    def moved(state: dict[str, Any] | None) -> dict[str, Any] | None:
        current = state.get("watermark") if state else None
        if current is not None and pd.Timestamp(current) > newest:
            return None
        return {
            "watermark": iso(newest),
            "filters": filters,
            "synced_at": iso(pd.Timestamp.now(tz="UTC")),
        }

    try:
        document.update(moved)
    except OSError as exc:
        raise LocalFileError(exc, "save the watermark", document.location) from exc


def iso(stamp: pd.Timestamp | None) -> str:
    """An instant as Siro writes dates (``2025-05-31T09:12:44.120Z``), or "none yet"."""
    return "none yet" if stamp is None or pd.isna(stamp) else wire_date(stamp, up=False)


def read_recordings(
    manifest_path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Every recording a sync listed, joined to what siro_data did with it.

    Who, when and what (the listing's columns: ``date_created``, ``title``,
    ``user_id``, the rep's names, ``team_id``, ``result``, ``duration_api``)
    beside where and how (the manifest's: ``path``, ``duration``, ``error``, ...),
    one row per recording. A listed recording no run has fetched yet says so in
    its ``error`` (``error_kind`` "stopped": run again). Tombstones (recordings
    Siro deleted, audio the retention rule removed) are left out:
    :func:`siro_data.read_manifest` shows them. ``manifest_path`` may be a bucket
    URL, read with ``storage_options``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import siro_data
    >>> from siro_data.emulator import Emulator
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with Emulator() as emu:
    ...     _ = siro_data.sync(folder / "manifest.parquet", folder / "audio",
    ...                        since="2025-05-01", token=emu.token, api_url=emu.api_url,
    ...                        progress=False)
    >>> table = read_recordings(folder / "manifest.parquet")
    >>> len(table), table["error"].isna().all(), "rep_first_name" in table
    (12, np.True_, True)
    """
    listing = listing_table(manifest_path, LISTING_SCHEMA, LISTING_REPEATING, storage_options)
    joined = listing_with_rows(open_manifest(manifest_path, storage_options), listing)
    alive = ~joined["status"].isin([Status.DELETED, Status.EXPIRED]).to_numpy(dtype=bool)
    return joined[alive].reset_index(drop=True)


def listing_with_rows(
    manifest: Manifest, listing: Table, ids: list[str] | None = None
) -> pd.DataFrame:
    """The kept listing's rows (of ``ids``, in their order) beside their manifest rows."""
    wanted = None if ids is None else store.as_ids(ids)
    rows = from_arrow(manifest.read_rows(wanted))
    joined = listing_rows(listing, wanted).merge(rows, on="recording_id", how="left")
    if ids is not None:
        joined = joined.set_index("recording_id").reindex(ids).reset_index()
    missing = joined["error"].isna() & joined["path"].isna()
    joined.loc[missing, "error"] = "not fetched yet: run sync again"
    joined.loc[missing, "error_kind"] = Kind.STOPPED
    joined.loc[missing, "status"] = Status.STOPPED
    return joined
