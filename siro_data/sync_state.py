"""What a sync keeps beside the manifest between runs: the listing, and one watermark per
filter set, as sync reads and changes them.

Where they live, and how they are written whole (under a lock on a disk, with conditional
writes in a bucket), is the archive's (:meth:`siro_data.archive.Archive.listing`,
:meth:`~siro_data.archive.Archive.watermark`). The listing is one row per recording a sync
listed: who, when and what, which :func:`siro_data.read_recordings` joins to the manifest.
The watermark is the newest ``dateCreated`` a finished sync saw, never moved back.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa

from . import store
from .archive import Document, Table
from .exceptions import LocalFileError
from .listing import LISTING_COLUMNS, wire_date

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
