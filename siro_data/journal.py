"""Finished rows on their way into the manifest, as bytes and back as Arrow.

On a disk, the journal beside the manifest is a file of JSON lines, one per finished row,
appended as rows finish: a line torn by a kill is skipped on reading. In a bucket, where
nothing is appended to, a writer's rows go in chunks, each a small parquet object written
whole. Either way, what is read back is the latest row of each recording.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

from . import store
from .rows import COLUMNS, SCHEMA, Row, conform, to_arrow

log = logging.getLogger(__name__)

#: How journal lines are read: the manifest's columns, typed; anything else ignored.
_LINES = pj.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore")
#: A block of lines at a time, on this thread: the parser's buffers stay a block's size.
_BLOCKS = pj.ReadOptions(use_threads=False, block_size=1 << 20)


def encode_lines(rows: Iterable[Row]) -> bytes:
    """Rows as JSON lines, one each, every column of the manifest named."""
    return b"".join(
        json.dumps({name: _jsonable(row.get(name)) for name in COLUMNS}).encode("utf-8") + b"\n"
        for row in rows
    )


def read_lines(path: Path) -> pa.Table:
    """A file of journal lines, latest row per recording; a line torn by a kill is skipped."""
    try:
        if not path.stat().st_size:
            return SCHEMA.empty_table()
        rows = store.concat(SCHEMA, (conform(batch) for batch in _stream_lines(path)))
    except FileNotFoundError:
        return SCHEMA.empty_table()
    except pa.ArrowInvalid:
        rows = _read_lines_one_by_one(path.read_bytes())
    return store.latest(rows)


def encode_chunk(rows: Iterable[Row]) -> bytes:
    """Rows as one parquet object of the manifest's schema (a bucket journal's chunk)."""
    sink = io.BytesIO()
    pq.write_table(to_arrow(rows), sink)
    return sink.getvalue()


def read_chunk(data: bytes) -> pa.Table:
    """A chunk's rows, typed as the manifest's."""
    return conform(pq.read_table(io.BytesIO(data)))


def _stream_lines(path: Path) -> Iterator[pa.Table]:
    """The journal's lines as Arrow, a block at a time, no Python object per row."""
    for batch in pj.open_json(path, read_options=_BLOCKS, parse_options=_LINES):
        yield pa.Table.from_batches([batch])
        pa.default_memory_pool().release_unused()  # the block's parsing buffers, not kept


def _read_lines_one_by_one(data: bytes, batch_rows: int = 4096) -> pa.Table:
    """The journal line by line, as after a kill: a torn line is reported and skipped."""
    tables, batch = [], []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            batch.append(json.loads(line))
        except ValueError:
            log.warning("skipping a torn line %d of the manifest journal", number)
        if len(batch) >= batch_rows:
            tables.append(to_arrow(batch))
            batch = []
    return pa.concat_tables([*tables, to_arrow(batch)])


def _jsonable(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value
