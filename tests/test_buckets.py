"""An archive in a bucket (``s3://`` on moto, ``gs://`` on fake-gcs-server) keeps every promise a
local folder keeps: objects whole and checked, a manifest every reader reads, re-runs that ask
nothing, kills that cost only the work in flight, two writers that lose no row.

The buckets are real servers on 127.0.0.1 started by the tests (``conftest.py``); nothing is
mocked. Each test runs on both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import dask.dataframe as dd
import duckdb
import fsspec
import pandas as pd
import pytest
from support import TOKEN, cli, fetch, finish

import siro_data
from siro_data.archive import STAGING_ENV, open_manifest, staging_folder
from siro_data.filesystems import Bucket
from siro_data.naming import file_stem
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


@pytest.mark.parametrize("batch", [1 << 14, 16], ids=["one batch", "five batches"])
def test_a_rerun_asks_siro_nothing_and_the_bucket_no_object_one_by_one(
    bucket, start_emulator, recordings, staging, monkeypatch, batch
):
    """However many batches the rows are looked at in, the prefix is listed once."""
    monkeypatch.setattr(siro_data.archive, "PRESENCE_BATCH", batch)
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


def written_at(bucket, url: str) -> str:
    """When the object under ``url`` was last written, as its store says."""
    info = bucket.filesystem().info(url)
    return str(info["generation"] if bucket.protocol == "gs" else info["LastModified"])


def test_objects_whose_rows_were_lost_are_confirmed_not_fetched_again(bucket, emulator, staging):
    """A writer killed after its uploads and before its rows reached the bucket: the next run
    copies each object back, confirms it with one ranged request (no audio byte from Siro's
    storage) and leaves the object as it was."""
    ids = list(emulator.recordings)
    first = fetch(emulator, ids, **places(bucket))
    fs = bucket.filesystem()
    fs.rm_file(f"{bucket.url}/manifest.parquet")  # the rows are gone, the objects are not
    before = {path: written_at(bucket, path) for path in first["path"]}
    time.sleep(1.1)  # S3 says when an object was written to the second
    emulator.stats.reset()

    manifest = fetch(emulator, ids, **places(bucket))

    assert manifest["status"].eq("ok").all(), manifest["error"]
    assert emulator.stats.total_bytes_served == 0
    assert {path: written_at(bucket, path) for path in manifest["path"]} == before
    assert_objects_identical(bucket, manifest, emulator)
    assert files_under(staging) == []


def test_a_partial_another_machine_finished_is_removed_by_the_next_run(bucket, emulator, staging):
    """Partials wait on the machine that started them; one whose object another machine
    committed meanwhile is removed by this machine's next run, one still wanted is kept."""
    done, wanted = list(emulator.recordings)[:2]
    fetch(emulator, [done], **places(bucket))
    folder = staging_folder(f"{bucket.url}/audio")
    for rec_id in (done, wanted):
        (folder / f"{file_stem(rec_id)}.part").write_bytes(b"\0" * 1000)

    fetch(emulator, [done], **places(bucket))

    assert [path.name for path in folder.glob("*.part")] == [f"{file_stem(wanted)}.part"]


def test_a_folder_of_parts_includes_the_rows_of_a_part_never_saved(bucket, staging):
    """A Dask partition whose worker died after writing chunks, before saving its part: its
    rows are read with the folder's, so the next run resumes them."""
    folder = f"{bucket.url}/manifest"
    saved = open_manifest(f"{folder}/part-00000.parquet", bucket.storage_options, staging)
    saved.append([{"recording_id": "a", "error": "x"}])
    saved.save()
    unsaved = open_manifest(f"{folder}/part-00001.parquet", bucket.storage_options, staging)
    unsaved.append([{"recording_id": "b", "error": "x"}])
    unsaved.flush()

    manifest = siro_data.read_manifest(folder, bucket.storage_options)

    assert sorted(manifest["recording_id"]) == ["a", "b"]


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


def readme_pipeline() -> list[list[str]]:
    """The README's pipeline commands (``siro-data fetch ids.csv``, ``siro-data sync``), as
    words after ``siro-data``."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith("The same in a pipeline"))
    commands = re.findall(r"`siro-data ([^`]+)`", line)
    assert [words.split()[0] for words in commands] == ["fetch", "sync"], line
    return [words.split() for words in commands]


def test_the_readmes_pipeline_runs_into_a_bucket(bucket, emulator, staging, tmp_path):
    """The README's commands with a bucket's URLs, its credentials and endpoint from the
    environment as a pipeline's container gets them (no flag), each ending 0."""
    pd.DataFrame({"recording_id": list(emulator.recordings)[:3]}).to_csv(tmp_path / "ids.csv")
    places = ["--out-dir", f"{bucket.url}/audio", "--manifest", f"{bucket.url}/manifest.parquet"]
    first = {"sync": ["--since", "2025-01-01"]}  # a first sync says where to start
    environment = {**bucket.env, STAGING_ENV: str(staging)}
    for words in readme_pipeline():
        args = [*words, *places, *first.get(words[0], []), "-q"]
        code, _, err = finish(cli(args, emulator, cwd=tmp_path, env_extra=environment))
        assert code == 0, (words, err)

    recordings = siro_data.read_recordings(f"{bucket.url}/manifest.parquet", bucket.storage_options)
    assert sorted(recordings["recording_id"]) == sorted(emulator.recordings)
    assert recordings["status"].eq("ok").all()
    assert all(emulator.stats.api_calls[rec_id] == 1 for rec_id in emulator.recordings)


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


@pytest.fixture
def machines(bucket, tmp_path):
    """A Dask cluster of two worker processes, each with a local directory of its own, as two
    machines with no shared disk (and the bucket's environment, as their shells would give)."""
    from distributed import Client, Nanny, Scheduler, SpecCluster

    workers = {
        name: {"cls": Nanny, "options": {"nthreads": 2, "local_directory": str(tmp_path / name)}}
        for name in ("machine-a", "machine-b")
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers, scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


def files_under(folder) -> list:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_a_dask_cluster_with_no_shared_disk_fetches_into_the_bucket(
    bucket, emulator, staging, machines, tmp_path
):
    """Each worker stages its partials in its own directory, and one of them killed mid-run
    costs only its recordings in flight: audio and manifest parts end whole in the bucket."""
    emulator.faults.bandwidth = 60_000  # seconds per file: the kill lands mid-download
    ids = list(emulator.recordings)
    frame = dd.from_pandas(pd.DataFrame({"recording_id": ids}), npartitions=4, sort=False)
    where = {**places(bucket), "manifest_path": f"{bucket.url}/manifest"}
    result: dict[str, pd.DataFrame] = {}
    runner = threading.Thread(
        target=lambda: result.update(manifest=fetch(emulator, frame, **where, workers=2))
    )
    runner.start()
    deadline = time.monotonic() + 60
    while emulator.stats.total_bytes_served < 100_000:
        assert runner.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    pids = machines.run(os.getpid)
    os.kill(pids[next(iter(pids))], signal.SIGKILL)  # its nanny starts it again
    runner.join(timeout=180)
    assert not runner.is_alive()

    manifest = result["manifest"]
    assert manifest["status"].eq("ok").all(), manifest["error"]
    assert_objects_identical(bucket, manifest, emulator)
    saved = siro_data.read_manifest(where["manifest_path"], bucket.storage_options)
    assert saved["recording_id"].is_unique and sorted(saved["recording_id"]) == sorted(ids)
    read = pd.read_parquet(where["manifest_path"], storage_options=bucket.storage_options)
    assert sorted(read["recording_id"]) == sorted(ids)
    # Partials were staged on the workers' own disks, none on this one, and none is left.
    assert files_under(staging) == []
    assert [tmp_path / name for name in ("machine-a", "machine-b") if (tmp_path / name).exists()]
    # What a worker killed mid-download leaves on its machine: partials of recordings another
    # worker finished, removed by that machine's next run (a test below), nothing else.
    staged = [path for path in tmp_path.glob("machine-*/*/siro-data-staging")]
    left = [path for folder in staged for path in files_under(folder)]
    assert staged and len(left) <= 4 and all(path.suffix == ".part" for path in left), left
    # The killed worker's recordings in flight (its 2 partitions of 2 threads) are all that
    # may have been fetched twice.
    sizes = sorted((rec.size for rec in emulator.recordings.values()), reverse=True)
    assert emulator.stats.total_bytes_served <= sum(sizes) + sum(sizes[:4])


def test_sync_runs_its_fetch_on_a_dask_cluster(bucket, emulator, staging, machines):
    """The listing and the watermark on this machine, the signing and downloads on the
    workers, their rows in the one manifest in the bucket."""
    from distributed import get_task_stream

    options = {"token": TOKEN, "api_url": emulator.api_url, "progress": False}
    where = {"storage_options": bucket.storage_options, "dask_client": machines}
    url, audio = f"{bucket.url}/manifest.parquet", f"{bucket.url}/audio"
    with get_task_stream(machines) as tasks:
        first = siro_data.sync(url, audio, since="2025-01-01", **where, **options)
    again = siro_data.sync(url, audio, **where, **options)

    assert first.fetched == len(emulator.recordings) and first.failed == 0
    ran = [task for task in tasks.data if str(task["key"]).startswith("siro-data-fetch-")]
    assert len(ran) >= 2  # the fetch ran as partitions on the workers
    assert (again.new, again.fetched, again.list_calls) == (0, 0, 1)
    assert all(emulator.stats.api_calls[rec_id] == 1 for rec_id in emulator.recordings)
    manifest = siro_data.read_manifest(url, bucket.storage_options)
    assert sorted(manifest["recording_id"]) == sorted(emulator.recordings)
    assert_objects_identical(bucket, manifest, emulator)
    assert bucket.filesystem().find(f"{bucket.url}/.manifest.parquet.journal") == []
    assert files_under(staging) == []


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


@pytest.mark.parametrize("url", ["s3://team/siro", "gs://team/siro"])
def test_a_missing_storage_library_names_the_extra(url, monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as in an install without the extra
    with pytest.raises(ValueError, match=r"needs \w+: pip install 'siro-data\[buckets\]'$"):
        _ = Bucket(url).fs
