"""A manifest row, defined once: its columns and dtypes, its error kinds, its builders.

Every row the run records is made here (:func:`ok_row`, :func:`error_row`,
:func:`stopped_row`) and read through here (:func:`is_stopped`, :func:`status_of`),
so that the columns, the ``error_kind`` vocabulary and the states a row can end in
(``ok``, ``failed``, ``stopped``, and the tombstones ``deleted`` and ``expired``) have
one home.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import store

#: Column → pandas dtype, in order.
COLUMNS: dict[str, str] = {
    "recording_id": "string",
    "status": "string",
    "path": "string",
    "expiration": "datetime64[ns, UTC]",
    "error": "string",
    "duration": "float64",
    "size_bytes": "Int64",
    "error_kind": "string",
    "sha256": "string",
    "content_type": "string",
    "fetched_at": "datetime64[ns, UTC]",
    "audio_path": "string",
    "sample_rate": "Int64",
    "channels": "Int64",
    "codec": "string",
    "md5": "string",
}

#: The same columns as an Arrow schema, with the pandas metadata that gives any reader of the
#: parquet file these dtypes: what the file holds.
SCHEMA = store.schema_of(COLUMNS)
#: The columns whose values repeat from row to row: dictionary-encoded in the file. The others
#: (ids, paths, hashes, times, sizes, durations) differ in nearly every row.
REPEATING = ("status", "error", "error_kind", "content_type", "sample_rate", "channels", "codec")

Row = Mapping[str, Any]


class Status:
    """The values of the ``status`` column: how a row ended, never null."""

    OK = "ok"
    FAILED = "failed"
    STOPPED = "stopped"
    #: Tombstones: Siro no longer serves the recording (``deleted``), or the retention rule
    #: removed its audio (``expired``). Neither is fetched again (unless ``overwrite``).
    DELETED = "deleted"
    EXPIRED = "expired"


class Kind:
    """The values of the ``error_kind`` column: what went wrong, in one word, for grouping."""

    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    INVALID = "invalid"
    BAD_REQUEST = "bad_request"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    API_ERROR = "api_error"
    CONNECTION = "connection"
    DOWNLOAD = "download"
    NOT_AUDIO = "not_audio"
    INVALID_ID = "invalid_id"
    CONVERSION = "conversion"
    UNEXPECTED = "unexpected"
    STOPPED = "stopped"
    MISSING = "missing"
    CORRUPT = "corrupt"
    DELETED = "deleted"
    EXPIRED = "expired"
    #: Errors that stop the run or are cured at once, never a row's kind.
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"
    EXPIRED_URL = "expired_url"


#: Every error kind with what it means (the README's table of errors lists the same).
KINDS: dict[str, str] = {
    Kind.NOT_FOUND: "the API does not know the id (404)",
    Kind.FORBIDDEN: "the token may not read this recording (403)",
    Kind.INVALID: "the API refused the request as malformed (422)",
    Kind.BAD_REQUEST: "the API answered 400",
    Kind.RATE_LIMITED: "the API kept answering 429 after the retries",
    Kind.SERVER_ERROR: "the API kept failing (5xx) after the retries",
    Kind.API_ERROR: "any other refusal, or an answer that is not a usable signed URL",
    Kind.CONNECTION: "no answer from the API after the retries",
    Kind.DOWNLOAD: "storage refused the URL, kept failing, or sent bytes that do not add up",
    Kind.NOT_AUDIO: "what storage sent is not audio (an error page, undecodable bytes)",
    Kind.INVALID_ID: "the id is missing or empty: nothing was asked",
    Kind.CONVERSION: "the download is complete but its WAV/FLAC copy failed",
    Kind.UNEXPECTED: "an error nobody foresaw (logged with its traceback)",
    Kind.STOPPED: "not fetched: the run was stopped before this id; run again to resume",
    Kind.MISSING: "verify found the complete file gone: the next run fetches it again",
    Kind.CORRUPT: "verify found the file's size or sha256 changed: removed, fetched again",
    Kind.DELETED: "Siro no longer serves a recording it served before: a tombstone",
    Kind.EXPIRED: "the retention rule removed the audio (older than its limit): a tombstone",
}

#: The kinds whose status has its own name (a row's status is ``failed`` for any other error).
#: A tombstone (``deleted``, ``expired``) is never fetched again, unless ``overwrite``.
OWN_STATUS: dict[str, str] = {
    Kind.STOPPED: Status.STOPPED,
    Kind.DELETED: Status.DELETED,
    Kind.EXPIRED: Status.EXPIRED,
}
TOMBSTONES = frozenset({Kind.DELETED, Kind.EXPIRED})

#: Kinds errors carry that no row ever shows: a rejected token stops the whole run
#: (``AuthError``), as does an API that stopped answering (``UnavailableError``); an expired
#: URL is signed again at once.
RUN_KINDS: dict[str, str] = {
    Kind.UNAUTHORIZED: "the token was rejected and could not be renewed: the run stops",
    Kind.UNAVAILABLE: "the API failed for many recordings in a row: the run stops, retry later",
    Kind.EXPIRED_URL: "the signed URL expired: it is signed again and the download continues",
}

#: Failures that say the API is down or overloaded, not that the recording is wrong: retried
#: by the next run, and a run whose every attempt ended so found the API unreachable.
UNAVAILABLE_KINDS = frozenset({Kind.CONNECTION, Kind.SERVER_ERROR, Kind.RATE_LIMITED})

STOPPED_MESSAGE = "not fetched: the run was stopped"


def now() -> pd.Timestamp:
    """The ``fetched_at`` of a row finished now."""
    return pd.Timestamp.now(tz="UTC")


def ok_row(
    recording_id: str,
    *,
    path: str,
    expiration: pd.Timestamp | None,
    duration: float | None,
    size_bytes: int,
    sha256: str,
    md5: str,
    content_type: str | None,
    sample_rate: int | None = None,
    channels: int | None = None,
    codec: str | None = None,
) -> dict[str, Any]:
    """The row of a recording whose complete, checked file is at ``path``."""
    return {
        "recording_id": recording_id,
        "path": path,
        "expiration": expiration,
        "duration": duration,
        "size_bytes": size_bytes,
        "sha256": sha256,
        "content_type": content_type,
        "fetched_at": now(),
        "sample_rate": sample_rate,
        "channels": channels,
        "codec": codec,
        "md5": md5,
    }


def error_row(
    recording_id: str | None, error: str, kind: str, expiration: pd.Timestamp | None = None
) -> dict[str, Any]:
    """The row of a recording that failed: ``error`` in words, ``kind`` one of :data:`KINDS`.

    Examples
    --------
    >>> error_row("rec_1", "404: Recording not found", Kind.NOT_FOUND)["error_kind"]
    'not_found'
    """
    if kind not in KINDS:
        raise ValueError(f"unknown error kind {kind!r}")
    return {
        "recording_id": recording_id,
        "error": error,
        "error_kind": kind,
        "expiration": expiration,
        "fetched_at": now(),
    }


def stopped_row(recording_id: str) -> dict[str, Any]:
    """The row of an id a stopped run did not reach."""
    return error_row(recording_id, STOPPED_MESSAGE, Kind.STOPPED)


def tombstone(row: Row, kind: str, error: str, path_kept: bool) -> dict[str, Any]:
    """``row`` (a recording's last row) as a tombstone of ``kind``, seen now.

    What the row said of the file (size, digest, duration, ...) stays, as history; ``path``
    and ``audio_path`` stay only while the audio is kept (``path_kept``).

    Examples
    --------
    >>> row = tombstone({"recording_id": "a", "path": "/data/a.m4a", "sha256": "ab"},
    ...                 Kind.DELETED, "deleted in Siro: 404: Recording not found", False)
    >>> status_of(row), row["path"], row["sha256"]
    ('deleted', None, 'ab')
    """
    if kind not in TOMBSTONES:
        raise ValueError(f"{kind!r} is no tombstone")
    kept = {} if path_kept else {"path": None, "audio_path": None}
    return {**row, **kept, "error": error, "error_kind": kind, "fetched_at": now()}


def with_error(row: Row, error: str, kind: str) -> dict[str, Any]:
    """``row`` turned into a failure, keeping what it says of the file (a failed post-step)."""
    if kind not in KINDS:
        raise ValueError(f"unknown error kind {kind!r}")
    return {**row, "error": error, "error_kind": kind}


def is_stopped(row: Row) -> bool:
    """Whether ``row`` stands for an id a stopped run did not reach."""
    return row.get("error_kind") == Kind.STOPPED


def status_of(row: Row) -> str:
    """``ok`` (the file is complete), ``stopped`` (not reached: run again), a tombstone's
    ``deleted`` or ``expired``, or ``failed``.

    Examples
    --------
    >>> status_of({"error": None}), status_of(stopped_row("a")), status_of({"error": "404: gone"})
    ('ok', 'stopped', 'failed')
    >>> status_of({"error": "deleted in Siro", "error_kind": "deleted"})
    'deleted'
    """
    if succeeded(row):
        return Status.OK
    return OWN_STATUS.get(row.get("error_kind"), Status.FAILED)  # type: ignore[arg-type]


def succeeded(row: Row) -> bool:
    """Whether ``row`` has its complete, checked file (no error)."""
    error = row.get("error")
    return error is None or error is pd.NA


def to_frame(rows: Iterable[Row] | pd.DataFrame) -> pd.DataFrame:
    """Rows (dicts or a frame) as a manifest frame: exactly the columns, in order, typed.

    Examples
    --------
    >>> to_frame([{"recording_id": "a", "error": "404: Recording not found"}]).dtypes["size_bytes"]
    Int64Dtype()
    """
    if isinstance(rows, pd.DataFrame):
        frame = rows.reset_index(drop=True)  # a filtered frame's labels would misalign
    else:
        frame = pd.DataFrame(list(rows))
    typed = {}
    for name, dtype in COLUMNS.items():
        column = frame[name] if name in frame else pd.Series([None] * len(frame), dtype=object)
        if dtype.startswith("datetime64"):
            typed[name] = pd.to_datetime(column, utc=True, format="ISO8601").astype(dtype)
        else:
            typed[name] = column.astype(dtype)
    typed["status"] = _statuses(typed["error"], typed["error_kind"])
    return pd.DataFrame(typed, index=pd.RangeIndex(len(frame)))


def _statuses(error: pd.Series, kind: pd.Series) -> pd.Series:
    """The ``status`` column, derived from ``error`` and ``error_kind`` (so never stale)."""
    failed = np.full(len(error), Status.FAILED, dtype=object)
    for own, status in OWN_STATUS.items():
        failed[kind.eq(own).fillna(False).to_numpy(dtype=bool)] = status
    values = np.where(error.isna().to_numpy(dtype=bool), Status.OK, failed)
    return pd.Series(values, index=error.index, dtype=COLUMNS["status"])


def empty_manifest() -> pd.DataFrame:
    """A manifest with no rows, with the full schema."""
    return to_frame([])


def conform(table: pa.Table) -> pa.Table:
    """``table`` with exactly :data:`SCHEMA` (manifests written before a column existed
    read with it empty), its ``status`` derived from ``error`` and ``error_kind``.
    """
    table = store.conform(table, SCHEMA)
    error, kind = table.column("error"), table.column("error_kind")
    failed: Any = pa.scalar(Status.FAILED, pa.large_string())
    for own, named in OWN_STATUS.items():  # three passes: an array from the first on
        failed = pc.if_else(pc.fill_null(pc.equal(kind, own), False), named, failed)
    status = pc.if_else(pc.is_null(error), Status.OK, failed)
    where = SCHEMA.get_field_index("status")
    return table.set_column(where, SCHEMA.field(where), status.cast(SCHEMA.field(where).type))


def from_arrow(table: pa.Table) -> pd.DataFrame:
    """Manifest rows held in Arrow as a manifest frame (strings stay Arrow-backed)."""
    return store.to_pandas(conform(table))


def to_arrow(rows: Iterable[Row] | pd.DataFrame) -> pa.Table:
    """Manifest rows (dicts or a frame) as an Arrow table of :data:`SCHEMA`."""
    table = pa.Table.from_pandas(to_frame(rows), schema=SCHEMA, preserve_index=False)
    return table.replace_schema_metadata(SCHEMA.metadata)  # ours, not the frame's


def in_order(rows: pa.Table | pd.DataFrame, keys: pa.Array) -> pd.DataFrame:
    """The manifest frame of ``keys``, in their order, from rows holding each key once."""
    frame = rows if isinstance(rows, pd.DataFrame) else None
    ids = pa.array(frame["recording_id"]) if frame is not None else rows.column("recording_id")
    where = pc.index_in(keys, value_set=ids.combine_chunks() if hasattr(ids, "chunks") else ids)
    if where.null_count:
        raise ValueError(f"{where.null_count} ids have no row")
    in_place = len(where) == len(ids) and _counts_up(where)
    if frame is not None:  # already a manifest frame: no conversion
        return frame.reset_index(drop=True) if in_place else to_frame(frame.take(where))
    return from_arrow(rows if in_place else rows.take(where))


def _counts_up(positions: pa.Array) -> bool:
    return bool((positions.to_numpy() == np.arange(len(positions))).all())
