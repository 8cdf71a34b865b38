"""The manifest file is its own contract: whatever reads it, with no siro_data code, gets the
README's columns and dtypes.

Every kind of manifest a run leaves (one run with failures, a Dask run's folder of parts, an
empty one, the command's, a sync's, and the listing kept beside it) is read by pandas, by
pyarrow, by Dask and by DuckDB, and compared with the documented tables.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import dask.dataframe as dd
import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support import TOKEN, cli, fetch, finish, markdown_table

import siro_data
from siro_data.emulator import Emulator, sample_recordings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REFERENCE = ROOT / "docs" / "reference" / "manifest.md"

#: How a SQL engine (DuckDB) names each of the README's dtypes.
SQL_TYPES = {
    "string": {"VARCHAR"},
    "Int64": {"BIGINT"},
    "float64": {"DOUBLE"},
    "boolean": {"BOOLEAN"},
    "datetime64[ns, UTC]": {"TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ_NS"},
}


def documented_dtypes(page: Path, heading: str) -> dict[str, str]:
    """Column → dtype, from the table under ``heading`` in ``page``."""
    return {row[0].strip("`"): row[1] for row in markdown_table(page, heading)}


MANIFEST = documented_dtypes(README, "The manifest")
LISTING = documented_dtypes(REFERENCE, "The listing")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """Each kind of file a run writes, by name: its path (a file, or a Dask run's folder)."""
    folder = tmp_path_factory.mktemp("readers")
    with Emulator(recordings=sample_recordings(n=6), token=TOKEN) as emu:
        ids = list(emu.recordings)
        emu.faults.api_status[ids[0]] = 404
        emu.faults.storage_html.add(ids[1])
        paths = {}

        paths["run"] = folder / "run" / "manifest.parquet"
        fetch(emu, [*ids, None, ""], folder / "run" / "audio", paths["run"])

        paths["dask"] = folder / "dask" / "manifest"
        frame = dd.from_pandas(pd.DataFrame({"recording_id": ids}), npartitions=3, sort=False)
        fetch(emu, frame, folder / "dask" / "audio", paths["dask"], workers=2)

        paths["empty"] = folder / "empty" / "manifest.parquet"
        fetch(emu, [], folder / "empty" / "audio", paths["empty"])

        paths["command"] = folder / "command" / "data" / "manifest.parquet"
        (folder / "command").mkdir()
        pd.DataFrame({"recording_id": ids}).to_csv(folder / "command" / "ids.csv", index=False)
        code, _, err = finish(cli(["fetch", "ids.csv", "-q"], emu, cwd=folder / "command"))
        assert code == 1, err  # the 404 and the HTML page

        emu.faults.api_status.clear()
        emu.faults.storage_html.clear()
        paths["sync"] = folder / "sync" / "manifest.parquet"
        siro_data.sync(
            paths["sync"],
            folder / "sync" / "audio",
            since="2025-01-01",
            token=emu.token,
            api_url=emu.api_url,
            progress=False,
        )
        paths["listing"] = folder / "sync" / "manifest.listing.parquet"
    yield paths


MANIFESTS = ["run", "dask", "empty", "command", "sync"]


def with_pandas(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def with_pyarrow(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def with_dask(path: Path) -> pd.DataFrame:
    return dd.read_parquet(path).compute().reset_index(drop=True)


READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "pandas": with_pandas,
    "pyarrow": with_pyarrow,
    "dask": with_dask,
}


def by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("recording_id", ignore_index=True)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_every_manifest_reads_with_the_readme_dtypes(written, name, reader):
    frame = READERS[reader](written[name])
    assert frame.dtypes.astype(str).to_dict() == MANIFEST
    assert list(frame.columns) == list(MANIFEST)
    assert isinstance(frame.index, pd.RangeIndex)
    # The same rows and values as siro_data's own reader gives.
    pd.testing.assert_frame_equal(by_id(frame), by_id(siro_data.read_manifest(written[name])))


def test_the_manifests_hold_what_the_dtypes_are_for(written):
    """Failures and bad ids leave nulls in Int64, string and time columns: still those dtypes."""
    frame = pd.read_parquet(written["run"]).set_index("recording_id")
    assert frame["status"].value_counts().to_dict() == {"ok": 4, "failed": 4}
    failed = frame[frame["status"] == "failed"]
    assert failed["size_bytes"].isna().all() and failed["path"].isna().all()
    assert failed["md5"].isna().all()
    for row in frame[frame["status"] == "ok"].itertuples():
        assert row.md5 == hashlib.md5(Path(row.path).read_bytes()).hexdigest()
    assert frame.index.isna().sum() == 1  # the null id's row
    assert pd.read_parquet(written["empty"]).empty


@pytest.mark.parametrize("reader", READERS)
def test_the_listing_reads_with_the_readme_dtypes(written, reader):
    frame = READERS[reader](written["listing"])
    assert frame.dtypes.astype(str).to_dict() == LISTING
    assert len(frame) == 6


@pytest.mark.parametrize("name", [*MANIFESTS, "listing"])
def test_a_sql_engine_reads_the_readme_types(written, name):
    path = written[name]
    source = f"{path}/*.parquet" if path.is_dir() else str(path)
    described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{source}')").fetchall()
    expected = LISTING if name == "listing" else MANIFEST
    assert [column for column, *_ in described] == list(expected)
    for column, sql_type, *_ in described:
        assert sql_type in SQL_TYPES[expected[column]], (column, sql_type)
    [(counted,)] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{source}')").fetchall()
    assert counted == len(pd.read_parquet(path))


def test_the_readme_join_of_manifest_and_listing_runs_on_the_files(written, tmp_path, monkeypatch):
    """The README's first query, as it is written there, on a sync's two files in ``data/``."""
    block = README.read_text(encoding="utf-8").split("import duckdb\n", 1)[1].split("```")[0]
    (tmp_path / "data").symlink_to(written["sync"].parent)
    monkeypatch.chdir(tmp_path)
    scope: dict = {"duckdb": duckdb}
    exec(block, scope)
    table = scope["table"]
    assert len(table) == 6
    assert list(table.columns) == [
        *("date_created", "rep_first_name", "rep_last_name", "title", "result"),
        *("status", "path", "duration", "error"),
    ]
    assert set(table["status"]) == {"ok"}
    assert table["date_created"].is_monotonic_decreasing
