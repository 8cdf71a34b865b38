"""Parquet files of one row per recording id: read some ids, fold new rows in.

The manifest is such a file, and so is the listing :func:`siro_data.sync`
keeps beside it. Both grow for years, so nothing here costs more than the
rows asked for or added, plus one streaming pass: rows stay Arrow columns,
never one Python object each; reading the rows of a few ids reads the id
column first, row group by row group; folding new rows in rewrites the file a
row group at a time, only the new rows' ids hashed. Files are replaced whole
(:func:`siro_data.files.replacing`).

Such a pass holds one row group at a time: its memory is a group's, whatever
the file's size, and the file is laid out to keep that small: groups of
16,384 rows, pages of 64 KiB, a dictionary only for the columns whose values
repeat. Folding 10 rows into 300,000 or 1,000,000 takes ~25 MB at its peak
(~65 MB with Arrow's defaults: groups of 32,768 rows, 1 MiB pages,
dictionaries everywhere, read by its threads).
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .files import replacing

#: The column that names the recording of a row.
KEY = "recording_id"
#: Rows per parquet row group: a fold or a read holds one group at a time.
ROW_GROUP_ROWS = 1 << 14
#: Bytes per data page (Arrow's default is 1 MiB): a page is held whole to be written or read.
PAGE_BYTES = 1 << 16

#: A column's pandas dtype (as the tables' column dicts name it) → its Arrow type. Strings
#: are ``large_string``, what pandas' Arrow-backed strings hold: no copy either way.
ARROW_TYPES = {
    "string": pa.large_string(),
    "float64": pa.float64(),
    "Int64": pa.int64(),
    "boolean": pa.bool_(),
    "datetime64[ns, UTC]": pa.timestamp("ns", tz="UTC"),
}
#: Arrow type → the pandas dtype it reads as (others convert as pandas would).
_PANDAS_TYPES = {
    pa.large_string(): pd.StringDtype("pyarrow"),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}
#: A string column's dtype as the pandas metadata names it: with its storage, so that pandas
#: 2.x (whose plain "string" holds Python objects) reads what pandas 3 and our readers read.
_STRING_IN_METADATA = "string[pyarrow]"


def schema_of(dtypes: Mapping[str, str]) -> pa.Schema:
    """The Arrow schema of columns of these pandas dtypes, carrying pandas' own metadata.

    The metadata makes the file its own contract with readers that never import
    siro_data: ``pandas.read_parquet``, ``pyarrow``'s ``Table.to_pandas`` and
    ``dask.dataframe.read_parquet`` give back ``string``, ``Int64`` with nulls,
    ``boolean`` and UTC times, not ``object`` and ``float64``.

    Examples
    --------
    >>> schema = schema_of({"recording_id": "string", "size_bytes": "Int64"})
    >>> table = pa.table({"recording_id": ["a", None], "size_bytes": [3, None]}, schema=schema)
    >>> table.to_pandas().dtypes.astype(str).tolist()
    ['string', 'Int64']
    """
    fields = pa.schema([(name, ARROW_TYPES[dtype]) for name, dtype in dtypes.items()])
    empty = pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})
    generated = pa.Table.from_pandas(empty, schema=fields, preserve_index=False)
    metadata = json.loads(generated.schema.metadata[b"pandas"])
    for column in metadata["columns"]:
        if dtypes[column["name"]] == "string":
            column["numpy_type"] = _STRING_IN_METADATA
    return fields.with_metadata({b"pandas": json.dumps(metadata).encode()})


def as_ids(ids: Iterable[str | None] | pa.Array) -> pa.Array:
    """Ids as one Arrow array of ``large_string`` (the type of the key column)."""
    if isinstance(ids, pa.Array):
        return ids
    return pa.array(list(ids), pa.large_string())


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``: columns in order, typed, missing ones null.

    Files written before a column existed read with it empty.
    """
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Rows held in Arrow (of one of these files' schemas) as a frame of its dtypes."""
    return table.to_pandas(types_mapper=_PANDAS_TYPES.get)


def concat(schema: pa.Schema, tables: Iterable[pa.Table]) -> pa.Table:
    """Tables of ``schema`` one after another (an empty table when there are none)."""
    return pa.concat_tables([schema.empty_table(), *tables])


def write(table: pa.Table, path: Path, dictionary: Collection[str] = ()) -> None:
    """Write ``table`` to ``path`` whole or not at all, in row groups of ``ROW_GROUP_ROWS``.

    ``dictionary``: the columns whose values repeat, dictionary-encoded (see :func:`_layout`).
    """
    with replacing(path) as temporary:
        pq.write_table(table, temporary, row_group_size=ROW_GROUP_ROWS, **_layout(dictionary))


def _layout(dictionary: Collection[str]) -> dict[str, Any]:
    """The writer's settings: small pages, a dictionary only for ``dictionary``'s columns.

    Arrow would dictionary-encode every column; one of unique values (ids,
    paths, hashes) then builds a dictionary and buffers its pages until the
    dictionary outgrows its limit, for nothing: to write or read a group back
    costs more memory, and the file is larger.
    """
    return {"use_dictionary": list(dictionary), "data_page_size": PAGE_BYTES}


def _open(path: Path) -> pq.ParquetFile:
    """``path`` to be read a row group at a time, a column chunk read when it is decoded
    (pre-buffering reads all of a group's chunks first and holds them).
    """
    return pq.ParquetFile(path, pre_buffer=False)


def _read_group(file: pq.ParquetFile, group: int, columns: list[str] | None = None) -> pa.Table:
    """A row group for a pass that drops it next, decoded on this thread: decoded by Arrow's
    threads, a fold of 10 rows into 300,000 peaks ~20 MB higher.
    """
    return file.read_row_group(group, columns=columns, use_threads=False)


def scan(path: Path | None, schema: pa.Schema, wanted: pa.Array | None = None) -> pa.Table:
    """The rows of a parquet file (only those of ``wanted`` ids, when given); none if no file.

    With ``wanted``, the ids are read first, row group by row group: a group
    holding none of them is not read further, so finding ten ids among a
    million costs the id column.
    """
    if path is None or not path.exists():
        return schema.empty_table()
    file = _open(path)
    if wanted is None:
        groups = range(file.num_row_groups)
        return concat(schema, (conform(file.read_row_group(group), schema) for group in groups))
    few = len(wanted) <= ROW_GROUP_ROWS  # hashed once per group; many: once for the file
    mask = None if few else pc.is_in(file.read(columns=[KEY]).column(0), value_set=wanted)
    kept, start = [], 0
    for group in range(file.num_row_groups):
        size = file.metadata.row_group(group).num_rows
        if mask is None:
            part = pc.is_in(_read_group(file, group, [KEY]).column(0), value_set=wanted)
        else:
            part = mask.slice(start, size)
        start += size
        if pc.any(part).as_py():  # rows kept: Arrow's threads decode them faster, no larger
            rows = file.read_row_group(group)
            kept.append(conform(rows if pc.all(part).as_py() else rows.filter(part), schema))
        pa.default_memory_pool().release_unused()  # a group's buffers, not kept for the next
    return concat(schema, kept)


def latest(rows: pa.Table) -> pa.Table:
    """One row per recording: its latest, in the order recordings first appeared."""
    ids = rows.column(KEY)
    if pc.count_distinct(ids, mode="all").as_py() == rows.num_rows:
        return rows  # each recording once already: no copy
    positions = pa.table({KEY: ids, "at": np.arange(rows.num_rows)})
    groups = positions.group_by(KEY, use_threads=False).aggregate([("at", "min"), ("at", "max")])
    first_seen = pc.sort_indices(groups, sort_keys=[("at_min", "ascending")])
    return rows.take(groups.column("at_max").take(first_seen))


def merged(saved: pa.Table, new: pa.Table) -> pa.Table:
    """``saved`` rows with ``new`` ones folded in (both one row per recording), in memory."""
    folding = Folding(new)
    return pa.concat_tables([folding.into(saved), folding.rest()])


def fold(
    path: Path,
    schema: pa.Schema,
    new: pa.Table,
    order: Sequence[str | None] | pa.Array = (),
    dictionary: Collection[str] = (),
) -> int:
    """Write ``path`` again with ``new`` rows (one per recording) folded in, whole or not at
    all; its row count. See :func:`fold_into`.
    """
    with replacing(path) as temporary:
        source = path if path.exists() else None
        return fold_into(source, temporary, schema, new, order, dictionary)


def fold_into(
    source: Path | None,
    target: Path,
    schema: pa.Schema,
    new: pa.Table,
    order: Sequence[str | None] | pa.Array = (),
    dictionary: Collection[str] = (),
    time_column: str | None = None,
) -> int:
    """Write to ``target`` the rows of ``source`` with ``new`` folded in; the row count.

    ``source`` is a file, or None when there are no rows yet; ``new`` holds one
    row per recording.

    ``source`` is streamed a row group at a time: a new row replaces the row of
    its recording where that row stands; the others are appended, those named
    in ``order`` in that order within the places they take. ``dictionary``: as
    for :func:`write`. With ``time_column``, a new row replaces a saved one only if
    it is as recent (a fold that meets rows folded before is harmless).
    """
    folding = Folding(new, time_column)
    count = 0
    with pq.ParquetWriter(target, schema, **_layout(dictionary)) as writer:
        if source is not None:
            file = _open(source)
            for group in range(file.num_row_groups):
                saved = folding.into(conform(_read_group(file, group), schema))
                writer.write_table(saved, row_group_size=ROW_GROUP_ROWS)
                count += saved.num_rows
                del saved
                pa.default_memory_pool().release_unused()  # one group held at a time
        for appended in folding.rest_in_groups(order):
            writer.write_table(appended, row_group_size=ROW_GROUP_ROWS)
            count += appended.num_rows
            del appended
            pa.default_memory_pool().release_unused()
    return count


def rows_in(source: str | os.PathLike[str] | IO[bytes]) -> int:
    """How many rows a parquet file holds (read from its footer)."""
    return pq.ParquetFile(source).metadata.num_rows


class Folding:
    """New rows (one per recording) folded into saved ones, a batch at a time.

    A new row replaces the saved row of its recording where that row stands;
    the new rows no saved row had follow at the end. Only the new rows' ids
    are hashed: folding ten rows into a million costs a pass, not a table.
    """

    def __init__(self, new: pa.Table, time_column: str | None = None) -> None:
        self.new = new
        self.ids = new.column(KEY).combine_chunks()
        self.placed = np.zeros(new.num_rows, dtype=bool)
        self.time_column = time_column

    def into(self, saved: pa.Table) -> pa.Table:
        """``saved`` with the rows the new ones replace, replaced."""
        if self.new.num_rows == 0:
            return saved
        where = pc.index_in(saved.column(KEY), value_set=self.ids)
        if where.null_count == len(where):
            return saved
        self.placed[where.drop_null().to_numpy()] = True
        mask = where.is_valid()
        taken = self.new.take(where.fill_null(0))
        if self.time_column is not None:  # an older row leaves a newer one as it is
            then, now = saved.column(self.time_column), taken.column(self.time_column)
            mask = pc.and_(mask, pc.fill_null(pc.greater_equal(now, then), True))
        columns = [pc.if_else(mask, taken.column(n), saved.column(n)) for n in saved.column_names]
        return pa.Table.from_arrays(columns, schema=saved.schema)

    def rest(self, order: Sequence[str | None] | pa.Array = ()) -> pa.Table:
        """The new rows no saved row had, in their order, those named in ``order`` in its."""
        return self.new.take(self._rest(order))

    def rest_in_groups(self, order: Sequence[str | None] | pa.Array = ()) -> Iterator[pa.Table]:
        """:meth:`rest` a row group at a time: one group's copy held at once."""
        rows = self._rest(order)
        for start in range(0, len(rows), ROW_GROUP_ROWS):
            yield self.new.take(rows[start : start + ROW_GROUP_ROWS])

    def _rest(self, order: Sequence[str | None] | pa.Array) -> np.ndarray:
        return _in_call_order(self.ids, np.flatnonzero(~self.placed), order)


def _in_call_order(
    ids: pa.Array, rows: np.ndarray, order: Sequence[str | None] | pa.Array
) -> np.ndarray:
    """``rows`` (positions in ``ids``), those whose id is in ``order`` put in its order
    within the places they hold; the others stay where they are.
    """
    rank = pc.index_in(ids.take(rows), value_set=as_ids(order))
    slots = np.flatnonzero(rank.is_valid().to_numpy(zero_copy_only=False))
    by_rank = slots[np.argsort(rank.drop_null().to_numpy(), kind="stable")]
    arranged = rows.copy()
    arranged[slots] = rows[by_rank]
    return arranged
