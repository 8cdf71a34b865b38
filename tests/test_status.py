"""A row's status: ``ok``, ``failed`` or ``stopped``, never null, and stopped is no failure."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from siro_data import read_manifest, summarize
from siro_data.rows import COLUMNS, Kind, error_row, status_of, stopped_row, to_frame


def rows() -> list[dict]:
    done = {"recording_id": "a", "path": "/data/a.m4a", "duration": 60.0, "size_bytes": 1_840_000}
    return [done, error_row("b", "403: Forbidden", Kind.FORBIDDEN), stopped_row("c")]


def test_the_status_column_says_how_each_row_ended():
    frame = to_frame(rows())
    assert list(frame["status"]) == ["ok", "failed", "stopped"]
    assert frame["status"].dtype == COLUMNS["status"]
    assert frame["status"].notna().all()
    assert [status_of(row) for row in rows()] == ["ok", "failed", "stopped"]


def test_status_masks_have_no_missing_values_to_trip_on():
    """``error_kind == "stopped"`` is <NA> on ok rows, and ``~`` of it drops them silently."""
    frame = to_frame(rows())
    assert list(frame[~(frame["status"] == "stopped")]["recording_id"]) == ["a", "b"]
    assert frame["status"].value_counts().to_dict() == {"ok": 1, "failed": 1, "stopped": 1}


def test_a_manifest_saved_before_the_column_existed_reads_back_with_it(tmp_path):
    path = tmp_path / "manifest.parquet"
    old = to_frame(rows()).drop(columns="status")
    pq.write_table(pa.Table.from_pandas(old, preserve_index=False), path)
    back = read_manifest(path)
    assert list(back["status"]) == ["ok", "failed", "stopped"]
    assert back.dtypes.astype(str).to_dict() == COLUMNS


def test_the_status_follows_the_error_whatever_a_row_claims():
    claimed = [
        {"recording_id": "a", "status": "ok", "error": "404: gone", "error_kind": "not_found"}
    ]
    assert to_frame(claimed)["status"].tolist() == ["failed"]
    assert to_frame(pd.DataFrame(claimed))["status"].tolist() == ["failed"]


def test_summarize_counts_stopped_rows_apart_from_failures():
    text = summarize(to_frame(rows()))
    assert text == (
        "3 recordings: 1 ok, 1 failed, 1 stopped (not fetched: run again to resume)\n"
        "  forbidden: 1 (e.g. 'b': 403: Forbidden)\n"
        "audio: 0.02 hours in 1.8 MB"
    )
    only_stopped = summarize(to_frame([stopped_row(f"s{n}") for n in range(10)]))
    assert only_stopped.startswith("10 recordings: 0 ok, 0 failed, 10 stopped")
    assert "stopped:" not in only_stopped  # not listed among the failures by kind
