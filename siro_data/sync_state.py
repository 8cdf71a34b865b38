"""What a sync keeps beside the manifest between runs: the listing, and one watermark per
filter set.

The listing (``<stem>.listing.parquet`` beside ``<stem>.parquet``) is one row per recording a
sync listed: who, when and what, which :func:`siro_data.read_recordings` joins to the
manifest. The watermark (``.<manifest name>.sync-<hash of the filters>.json``) is the newest
``dateCreated`` a finished sync saw, never moved back. Both are written whole or not at all,
under their lock, with the mode the umask gives.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import store
from .exceptions import LocalFileError
from .files import replacing
from .listing import LISTING_COLUMNS, wire_date
from .locks import manifest_lock

#: The listing kept beside the manifest: what ``list_recordings`` returns, the team the sync
#: listed it under (Siro's listing does not say), and when this sync saw it.
LISTING_SCHEMA = store.schema_of(
    {**LISTING_COLUMNS, "team_id": "string", "listed_at": "datetime64[ns, UTC]"}
)
#: The listing's columns whose values repeat from row to row: dictionary-encoded in its file.
LISTING_REPEATING = ("user_id", "rep_first_name", "rep_last_name", "result", "trigger", "team_id")


def listing_path(manifest_path: str | os.PathLike[str]) -> Path:
    """The listing kept beside a manifest: ``manifest.parquet`` → ``manifest.listing.parquet``."""
    path = Path(manifest_path)
    return path.with_name(f"{path.stem}.listing.parquet")


def keep_listing(path: Path, listed: pd.DataFrame) -> None:
    """Fold this listing into the one kept beside the manifest (a recording's latest wins)."""
    if listed.empty:
        return
    rows = pa.Table.from_pandas(listed, schema=LISTING_SCHEMA, preserve_index=False)
    try:
        with manifest_lock(path):
            store.fold(path, LISTING_SCHEMA, store.latest(rows), dictionary=LISTING_REPEATING)
    except OSError as exc:
        raise LocalFileError(exc, "save the listing", path) from exc


def recent_listing(path: Path, horizon: pd.Timestamp | None) -> pd.DataFrame:
    """Ids and dates of the kept listing's recordings created at or after ``horizon``."""
    columns = ["recording_id", "date_created"]
    if horizon is None or not path.exists():
        return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    with manifest_lock(path, optional=True):
        table = pq.read_table(path, columns=columns, filters=[("date_created", ">=", horizon)])
    return table.to_pandas()


def listing_rows(path: Path, ids: pa.Array | None = None) -> pd.DataFrame:
    """The kept listing (only ``ids``' rows when given), as a typed frame."""
    with manifest_lock(path, optional=True):
        table = store.scan(path, LISTING_SCHEMA, ids)
    return store.to_pandas(table)  # scanned with the listing's schema


def watermark_path(manifest_path: Path, filters: dict[str, str]) -> Path:
    """The watermark of one filter set: a dot file beside the manifest."""
    digest = hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:12]
    return manifest_path.with_name(f".{manifest_path.name}.sync-{digest}.json")


def read_watermark(path: Path) -> pd.Timestamp | None:
    """The watermark a finished sync wrote at ``path``, or None before the first."""
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ValueError(f"sync state {path} is not readable JSON ({exc}): remove it") from None
    return pd.Timestamp(state["watermark"]) if state.get("watermark") else None


def move_watermark(path: Path, newest: pd.Timestamp | None, filters: dict[str, str]) -> None:
    """Write the new watermark whole, never behind one another sync wrote meanwhile."""
    if newest is None:
        return
    with manifest_lock(path):
        current = read_watermark(path)
        if current is not None and current > newest:
            return
        state = {
            "watermark": iso(newest),
            "filters": filters,
            "synced_at": iso(pd.Timestamp.now(tz="UTC")),
        }
        try:
            with replacing(path) as temporary:
                temporary.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise LocalFileError(exc, "save the watermark", path) from exc


def iso(stamp: pd.Timestamp | None) -> str:
    """An instant as Siro writes dates (``2025-05-31T09:12:44.120Z``), or "none yet"."""
    return "none yet" if stamp is None or pd.isna(stamp) else wire_date(stamp, up=False)
