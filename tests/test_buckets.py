"""An archive in a bucket (``s3://`` on moto, ``gs://`` on fake-gcs-server) keeps every promise a
local folder keeps: objects whole and checked, a manifest every reader reads, re-runs that ask
nothing, kills that cost only the work in flight, two writers that lose no row.

The buckets are real servers on 127.0.0.1 started by the tests (``conftest.py``); nothing is
mocked. Each test runs on both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import signal
import threading
import time

import dask.dataframe as dd
import duckdb
import fsspec
import pandas as pd
import pytest
from support import TOKEN, cli, fetch, finish

import siro_data
from siro_data.archive import STAGING_ENV, open_manifest
from siro_data.rows import COLUMNS, to_frame

#: More than the archive asks one by one: a re-run over them confirms presence by listing.
MANY = 80


def copies(recordings, count: int) -> dict:
    """``count`` recordings made of the sample ones under new ids (no new audio to make)."""
    samples = list(recordings.values())
    made = [
        dataclasses.replace(samples[n % len(samples)], id=f"{samples[n % len(samples)].id}-{n}")
        for n in range(count)
    ]
    return {rec.id: rec for rec in made}


def places(bucket) -> dict:
    """fetch_all's arguments for an archive in ``bucket``."""
    return {
        "out_dir": f"{bucket.url}/audio",
        "manifest_path": f"{bucket.url}/manifest.parquet",
        "storage_options": bucket.storage_options,
    }


def object_bytes(bucket, url: str) -> bytes:
    fs = bucket.filesystem()
    fs.invalidate_cache()  # a listing this test made earlier is not the bucket now
    return fs.cat_file(url)


def assert_objects_identical(bucket, manifest: pd.DataFrame, emu) -> None:
    """Every ok row's object holds the server's bytes, and the manifest says so."""
    for row in manifest[manifest["status"] == "ok"].itertuples():
        recording = emu.recordings[row.recording_id]
        assert row.path.startswith(f"{bucket.url}/audio/")
        assert hashlib.sha256(object_bytes(bucket, row.path)).hexdigest() == recording.sha256
        assert row.sha256 == recording.sha256 and row.size_bytes == recording.size


def requests_to(bucket, what: str) -> int:
    """Requests the bucket's server has logged: one object of the audio, a listing of the
    audio, or any listing."""
    if bucket.protocol == "s3":
        fragment = {
            "object": f"/{bucket.name}/prefix/audio/",
            "audio listing": f"/{bucket.name}?list-type=2&prefix=prefix/audio/&",
            "listing": f"/{bucket.name}?list",
        }
    else:
        fragment = {
            "object": f"/b/{bucket.name}/o/prefix%2Faudio%2F",
            "audio listing": f"/b/{bucket.name}/o?delimiter=/&prefix=prefix/audio/&",
            "listing": f"/b/{bucket.name}/o?",
        }
    # The write check of each run (a probe object, made and removed) is no recording's.
    probes = bucket.server.requests(".siro-data-probe-") if what == "object" else 0
    return bucket.server.requests(fragment[what]) - probes


def test_a_run_into_a_bucket_leaves_checked_objects_and_a_manifest_every_reader_reads(
    bucket, emulator, staging
):
    ids = list(emulator.recordings)
    manifest = fetch(emulator, ids, **places(bucket))

    assert manifest["status"].eq("ok").all(), manifest["error"]
    assert_objects_identical(bucket, manifest, emulator)
    url, options = f"{bucket.url}/manifest.parquet", bucket.storage_options
    pd.testing.assert_frame_equal(pd.read_parquet(url, storage_options=options), manifest)
    pd.testing.assert_frame_equal(siro_data.read_manifest(url, options), manifest)
    read = dd.read_parquet(url, storage_options=options).compute().reset_index(drop=True)
    assert read.dtypes.astype(str).to_dict() == COLUMNS
    connection = duckdb.connect()
    connection.register_filesystem(fsspec.filesystem(bucket.protocol, **options))
    [(count,)] = connection.sql(f"SELECT count(*) FROM '{url}' WHERE status = 'ok'").fetchall()
    assert count == len(ids)
    # Nothing left on this machine once the objects are in place: no partial, no lock.
    assert [path for path in staging.rglob("*") if path.is_file()] == []
    # Nothing under the journal's folder once the run saved: the chunks were folded.
    assert bucket.filesystem().find(f"{bucket.url}/.manifest.parquet.journal") == []


def test_a_rerun_asks_siro_nothing_and_the_bucket_no_object_one_by_one(
    bucket, start_emulator, recordings, staging
):
    emulator = start_emulator(copies(recordings, MANY))
    ids = list(emulator.recordings)
    fetch(emulator, ids, **places(bucket), workers=8)
    emulator.stats.reset()
    before = {what: requests_to(bucket, what) for what in ("object", "audio listing", "listing")}

    manifest = fetch(emulator, ids, **places(bucket))

    made = {what: requests_to(bucket, what) - count for what, count in before.items()}
    assert manifest["status"].eq("ok").all()
    assert emulator.stats.api_requests == 0 and emulator.stats.total_bytes_served == 0
    assert made["object"] == 0  # no HEAD, no GET of any recording's object
    assert made["audio listing"] == 1  # one page of up to 1,000 keys
    # The manifest's: its journal looked at twice, and (gcsfs) whether the manifest it opens
    # is a folder: a few, whatever the number of recordings.
    assert made["listing"] - made["audio listing"] <= 6


def test_an_object_that_went_missing_is_fetched_again(bucket, emulator, staging):
    ids = list(emulator.recordings)
    first = fetch(emulator, ids, **places(bucket))
    gone = first.loc[2, "path"]
    bucket.filesystem().rm_file(gone)
    emulator.stats.reset()

    manifest = fetch(emulator, ids, **places(bucket))

    assert manifest["status"].eq("ok").all()
    assert list(emulator.stats.api_calls) == [ids[2]]
    assert_objects_identical(bucket, manifest, emulator)


def test_a_killed_run_costs_only_the_bytes_in_flight(bucket, emulator, staging, tmp_path):
    """SIGKILL mid-download, then again: the partials staged on this machine are continued,
    no object is ever half there, and the bytes asked of storage stay near the files'."""
    emulator.faults.bandwidth = 100_000  # a few seconds of downloading
    pd.DataFrame({"recording_id": list(emulator.recordings)}).to_csv(tmp_path / "ids.csv")
    args = command(bucket, "--workers", "3")
    environment = {**bucket.env, STAGING_ENV: str(staging)}
    for _ in range(2):
        process = cli(args, emulator, cwd=tmp_path, env_extra=environment)
        deadline = time.monotonic() + 60
        start = emulator.stats.total_bytes_served
        while emulator.stats.total_bytes_served - start < 120_000:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        sizes = bucket.filesystem().find(f"{bucket.url}/audio", detail=True)
        whole = {rec.size for rec in emulator.recordings.values()}
        assert all(info["size"] in whole for info in sizes.values())  # never half an object
    emulator.faults.bandwidth = None

    code, _, err = finish(cli(args, emulator, cwd=tmp_path, env_extra=environment))

    assert code == 0, err
    manifest = siro_data.read_manifest(f"{bucket.url}/manifest.parquet", bucket.storage_options)
    assert manifest["recording_id"].is_unique and len(manifest) == len(emulator.recordings)
    assert_objects_identical(bucket, manifest, emulator)
    total = sum(rec.size for rec in emulator.recordings.values())
    assert emulator.stats.total_bytes_served <= 1.25 * total


def command(bucket, *extra: str) -> list[str]:
    """``siro-data fetch ids.csv`` into ``bucket``, its storage options as flags."""
    args = ["fetch", "ids.csv", "-q", "--out-dir", f"{bucket.url}/audio"]
    args += ["--manifest", f"{bucket.url}/manifest.parquet", *extra]
    return args + [
        f"--storage-option={key}={value}"
        for key, value in bucket.storage_options.items()
        if isinstance(value, str)
    ]


@pytest.mark.parametrize("machines", ["one machine", "two machines"])
def test_two_writers_on_one_prefix_lose_no_row(bucket, emulator, tmp_path, machines):
    """Two runs at once over overlapping ids, into one bucket prefix and one manifest: every
    row once, every object whole. A recording both reach at once may be fetched by both (on
    one machine they share the staging folder, whose locks keep their partials apart; on two
    they do not): never more than twice, and only those in flight together."""
    emulator.faults.bandwidth = 400_000
    ids = list(emulator.recordings)
    halves = {"first": ids[:4], "second": ids[2:]}
    running = []
    for name, half in halves.items():
        folder = tmp_path / name
        folder.mkdir()
        pd.DataFrame({"recording_id": half}).to_csv(folder / "ids.csv", index=False)
        stage = tmp_path / ("staging" if machines == "one machine" else f"staging-{name}")
        environment = {**bucket.env, STAGING_ENV: str(stage)}
        running.append(
            cli(command(bucket, "--workers", "2"), emulator, cwd=folder, env_extra=environment)
        )
    for process in running:
        code, _, err = finish(process)
        assert code == 0, err

    manifest = siro_data.read_manifest(f"{bucket.url}/manifest.parquet", bucket.storage_options)
    assert sorted(manifest["recording_id"]) == sorted(ids)
    assert manifest["status"].eq("ok").all(), manifest["error"]
    assert_objects_identical(bucket, manifest, emulator)
    shared = set(halves["first"]) & set(halves["second"])
    assert all(emulator.stats.api_calls[rec_id] <= 2 for rec_id in shared)


def test_manifest_writers_meeting_at_a_save_lose_no_row(bucket, staging):
    """Many writers add rows and save at once: conditional writes make the losers fold again,
    and a chunk another writer folded meanwhile is not missed."""
    url = f"{bucket.url}/manifest.parquet"
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            manifest = open_manifest(url, bucket.storage_options, staging / str(n))
            manifest.append([{"recording_id": f"w{n}-{k}", "error": "x"} for k in range(5)])
            manifest.save()
        except BaseException as error:  # shown below, not lost in a thread
            failures.append(error)

    for _ in range(3):  # rounds: the later ones fold into a manifest that exists
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    assert failures == []
    saved = pd.read_parquet(url, storage_options=bucket.storage_options)
    assert sorted(saved["recording_id"]) == sorted(f"w{n}-{k}" for n in range(6) for k in range(5))
    assert bucket.filesystem().find(f"{bucket.url}/.manifest.parquet.journal") == []


def test_a_bucket_that_does_not_exist_is_one_sentence_before_any_request(
    bucket, emulator, tmp_path
):
    missing = dataclasses.replace(bucket, url=bucket.url.replace(bucket.name, "no-such-bucket"))
    pd.DataFrame({"recording_id": list(emulator.recordings)}).to_csv(tmp_path / "ids.csv")
    args = command(missing)
    code, _, err = finish(cli(args, emulator, cwd=tmp_path, env_extra=bucket.env))
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"siro-data: error: out_dir {missing.url}/audio cannot be written: ")
    assert emulator.stats.api_requests == 0


def test_sync_into_a_bucket_keeps_its_listing_and_watermark_there(bucket, emulator, staging):
    options = {"token": TOKEN, "api_url": emulator.api_url, "progress": False}
    first = siro_data.sync(
        f"{bucket.url}/manifest.parquet",
        f"{bucket.url}/audio",
        since="2025-01-01",
        storage_options=bucket.storage_options,
        **options,
    )
    again = siro_data.sync(
        f"{bucket.url}/manifest.parquet",
        f"{bucket.url}/audio",
        storage_options=bucket.storage_options,
        **options,
    )
    assert first.fetched == len(emulator.recordings) and first.failed == 0
    assert (again.new, again.fetched, again.list_calls) == (0, 0, 1)
    names = {url.rsplit("/", 1)[-1] for url in bucket.filesystem().ls(bucket.url, detail=False)}
    assert {"manifest.parquet", "manifest.listing.parquet"} <= names
    assert any(name.startswith(".manifest.parquet.sync-") for name in names)
    table = siro_data.read_recordings(f"{bucket.url}/manifest.parquet", bucket.storage_options)
    assert len(table) == len(emulator.recordings) and table["status"].eq("ok").all()


def test_audio_and_exports_read_bucket_urls(bucket, emulator, staging, tmp_path):
    manifest = fetch(emulator, list(emulator.recordings)[:2], **places(bucket), convert_to="wav")
    row = manifest.iloc[0]
    assert row.audio_path.startswith(f"{bucket.url}/audio/") and row.audio_path.endswith(".wav")
    samples, rate = siro_data.load_audio(row.audio_path, storage_options=bucket.storage_options)
    assert len(samples) / rate == pytest.approx(row.duration, abs=0.05)
    assert siro_data.duration(row.path, bucket.storage_options) == pytest.approx(row.duration)
    written = siro_data.to_nemo_manifest(manifest, tmp_path / "train.json")
    assert f'"audio_filepath": "{row.audio_path}"' in written.read_text()


def test_storage_options_never_show(bucket, emulator, staging, caplog):
    """A secret in the storage options stays out of logs, reprs and the manifest."""
    secret = "storage-SECRET-9c1e2a"
    options = {**bucket.storage_options}
    if bucket.protocol == "s3":
        options["secret"] = secret  # moto accepts any
    else:
        options["default_location"] = secret  # an option gcsfs takes, as sensitive stand-in
    caplog.set_level("DEBUG")
    arguments = {**places(bucket), "storage_options": options}
    manifest = fetch(emulator, list(emulator.recordings)[:2], **arguments)
    archive = siro_data.archive.Archive(arguments["out_dir"], arguments["manifest_path"], options)
    shown = caplog.text + repr(archive) + repr(archive.audio) + manifest.to_string()
    assert secret not in shown


def test_a_manifest_written_straight_to_a_bucket_reads_back(bucket, staging):
    rows = to_frame([{"recording_id": "a", "error": "404: Recording not found"}])
    siro_data.write_manifest(rows, f"{bucket.url}/m.parquet", bucket.storage_options)
    back = siro_data.read_manifest(f"{bucket.url}/m.parquet", bucket.storage_options)
    pd.testing.assert_frame_equal(back, rows)
