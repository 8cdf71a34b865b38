"""The manifest: one schema, atomic parquet, an append-only journal that survives kills."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from siro_data import store
from siro_data.archive import journal_path, open_manifest
from siro_data.manifest import read_manifest, write_manifest
from siro_data.rows import COLUMNS, REPEATING, SCHEMA, empty_manifest, to_arrow, to_frame
from siro_data.summary import summarize

NOW = pd.Timestamp("2026-11-28 12:00", tz="UTC")


def ok_row(recording_id: str, **extra) -> dict:
    return {
        "recording_id": recording_id,
        "path": f"/data/{recording_id}.m4a",
        "expiration": NOW,
        "duration": 12.5,
        "size_bytes": 1000,
        "sha256": "ab" * 32,
        "content_type": "audio/mp4",
        "fetched_at": NOW,
        **extra,
    }


def test_schema_survives_parquet_round_trip_also_when_empty(tmp_path):
    path = tmp_path / "m.parquet"
    for frame in (empty_manifest(), to_frame([ok_row("a"), {"recording_id": "b", "error": "x"}])):
        write_manifest(frame, path)
        back = read_manifest(path)
        assert back.dtypes.astype(str).to_dict() == COLUMNS
        pd.testing.assert_frame_equal(back, frame)
        assert pd.read_parquet(path).dtypes.astype(str).to_dict() == COLUMNS


def test_journal_rows_are_read_back_latest_wins_in_first_seen_order(tmp_path):
    path = tmp_path / "m.parquet"
    write_manifest(to_frame([ok_row("a"), {"recording_id": "b", "error": "503: busy"}]), path)
    journal = open_manifest(path)
    journal.append([ok_row("c")])
    journal.append([ok_row("b")])
    manifest = read_manifest(path)
    assert list(manifest["recording_id"]) == ["a", "b", "c"]
    assert manifest["error"].isna().all()
    assert manifest.loc[2, "expiration"] == NOW


def test_a_torn_last_line_is_skipped_and_fenced_off(tmp_path, caplog):
    path = tmp_path / "m.parquet"
    journal = open_manifest(path)
    journal.append([ok_row("a")])
    with journal_path(path).open("ab") as raw:
        raw.write(b'{"recording_id": "b", "pa')  # killed mid-write
    journal = open_manifest(path)
    journal.append([ok_row("c")])
    assert list(read_manifest(path)["recording_id"]) == ["a", "c"]
    assert "torn line" in caplog.text


def test_compact_folds_the_journal_into_parquet(tmp_path):
    path = tmp_path / "m.parquet"
    journal = open_manifest(path)
    journal.append([ok_row("a")])
    assert open_manifest(path).save() == 1  # rows the file holds
    assert not journal_path(path).exists()
    assert list(read_manifest(path)["recording_id"]) == ["a"]


def test_a_manifest_written_before_the_md5_column_reads_and_folds_with_it_empty(tmp_path):
    path = tmp_path / "m.parquet"
    before = {name: dtype for name, dtype in COLUMNS.items() if name != "md5"}
    older = store.schema_of(before)
    pq.write_table(to_arrow([ok_row("a")]).select(list(before)).cast(older), path)
    open_manifest(path).append([ok_row("b", md5="cd" * 16)])

    for folded in (False, True):
        if folded:
            assert open_manifest(path).save() == 2
            assert pq.read_schema(path).names == list(COLUMNS)
        manifest = read_manifest(path)
        assert manifest.dtypes.astype(str).to_dict() == COLUMNS
        assert list(manifest["recording_id"]) == ["a", "b"]
        assert manifest.loc[0, "md5"] is pd.NA and manifest.loc[1, "md5"] == "cd" * 16
        assert manifest.loc[0, "sha256"] == "ab" * 32  # the older row's own values kept


def test_write_is_atomic_no_temporary_left(tmp_path):
    path = tmp_path / "m.parquet"
    write_manifest(to_frame([ok_row("a")]), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet"]


def test_append_cost_does_not_grow_with_rows(tmp_path):
    """Each row is one short line: the journal grows linearly, never rewritten."""
    path = tmp_path / "m.parquet"
    sizes = []
    journal = open_manifest(path)
    for i in range(2000):
        journal.append([ok_row(f"id{i:05d}")])
        if i in (999, 1999):
            sizes.append(journal_path(path).stat().st_size)
    assert sizes[1] == pytest.approx(2 * sizes[0], rel=0.01)


def test_summarize_counts_errors_by_kind_and_hours():
    manifest = to_frame(
        [
            ok_row("a", duration=1800.0),
            ok_row("b", duration=1800.0),
            {"recording_id": "c", "error": "404: Recording not found", "error_kind": "not_found"},
        ]
    )
    assert summarize(manifest) == (
        "3 recordings: 2 ok, 1 failed\n"
        "  not_found: 1 (e.g. 'c': 404: Recording not found)\n"
        "audio: 1.00 hours in 2.0 kB"
    )


def test_compact_with_nothing_journaled_leaves_the_file_alone(tmp_path):
    path = tmp_path / "m.parquet"
    write_manifest(to_frame([ok_row("a")]), path)
    before = path.stat().st_mtime_ns
    open_manifest(path).append([])  # a run that finished nothing new
    assert open_manifest(path).save() == 1
    assert path.stat().st_mtime_ns == before
    assert not journal_path(path).exists()


def test_compact_saves_new_rows_in_the_calls_order_and_keeps_the_others_in_place(tmp_path):
    """Rows are journaled as they finish; the saved file lists a call's new ids as given."""
    path = tmp_path / "m.parquet"
    write_manifest(to_frame([ok_row("old-1"), ok_row("old-2")]), path)
    journal = open_manifest(path)
    for key in ["c", "old-2", "other-process", "a", "b"]:
        journal.append([ok_row(key)])

    assert open_manifest(path).save(order=["a", "b", "old-2", "c"]) == 6

    saved = read_manifest(path)
    assert list(saved["recording_id"]) == ["old-1", "old-2", "a", "other-process", "b", "c"]
    assert pd.read_parquet(path)["recording_id"].tolist() == saved["recording_id"].tolist()


def test_a_fold_rewrites_the_file_in_row_groups_with_dictionaries_only_where_values_repeat(
    tmp_path, monkeypatch
):
    """What keeps a pass over the file to one small row group at a time, kept through folds."""
    monkeypatch.setattr(store, "ROW_GROUP_ROWS", 2)
    path = tmp_path / "m.parquet"
    write_manifest(to_frame([ok_row(f"old-{n}") for n in range(5)]), path)
    journal = open_manifest(path)
    journal.append([ok_row("old-3", size_bytes=7)])
    journal.append([ok_row("new")])

    assert open_manifest(path).save() == 6

    file = pq.ParquetFile(path)
    assert file.schema_arrow.equals(SCHEMA)
    groups = [file.metadata.row_group(group) for group in range(file.num_row_groups)]
    assert max(group.num_rows for group in groups) == 2
    encoded = {
        chunk.path_in_schema: chunk.has_dictionary_page
        for chunk in map(groups[0].column, range(groups[0].num_columns))
    }
    assert encoded == {name: name in REPEATING for name in COLUMNS}
    saved = read_manifest(path)
    assert list(saved["recording_id"]) == [*(f"old-{n}" for n in range(5)), "new"]
    assert saved["size_bytes"].tolist() == [1000, 1000, 1000, 7, 1000, 1000]
