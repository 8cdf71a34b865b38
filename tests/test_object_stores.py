"""The local object stores are real servers, enforcing what the manifest's writes will rely on,
and no test's cloud client leaves 127.0.0.1.

Both servers (moto for S3, fake-gcs-server for GCS) are reached the way siro_data will reach a
bucket: fsspec (s3fs, gcsfs) from ``storage_options``, and for a conditional replace on GCS
google-cloud-storage from ``STORAGE_EMULATOR_HOST``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import dask.dataframe as dd
import duckdb
import pandas as pd
import pytest
from support import (
    LOOPBACK_ENV,
    UNSET_FOR_TESTS,
    connections,
    is_loopback,
    object_version,
    replace_if_unchanged,
)

MiB = 2**20


def test_objects_put_are_got_back_and_listed(bucket):
    fs = bucket.filesystem()
    objects = {f"{bucket.url}/audio/{n}.m4a": os.urandom(1000 + n) for n in range(5)}
    objects[f"{bucket.url}/manifest.parquet"] = b"PAR1"
    fs.pipe(objects)

    assert {url: fs.cat_file(url) for url in objects} == objects
    assert sorted(fs.find(bucket.url)) == sorted(fs._strip_protocol(url) for url in objects)
    assert len(fs.ls(f"{bucket.url}/audio", detail=False)) == 5


def test_a_large_object_is_streamed_up_in_parts(bucket):
    """Written a MiB at a time, as a recording would be while it downloads: S3 gets a
    multipart upload, GCS a resumable one, and the bytes arrive whole."""
    fs = bucket.filesystem()
    url = f"{bucket.url}/audio/large.wav"
    data = os.urandom(12 * MiB)
    with fs.open(url, "wb", block_size=5 * MiB) as remote:
        for offset in range(0, len(data), MiB):
            remote.write(data[offset : offset + MiB])

    assert fs.size(url) == len(data)
    assert fs.cat_file(url) == data


def test_create_if_absent_is_refused_once_the_object_exists(bucket):
    """S3's ``If-None-Match: *``, GCS's ``ifGenerationMatch=0``: the second writer loses."""
    fs = bucket.filesystem()
    url = f"{bucket.url}/manifest.parquet"
    fs.pipe_file(url, b"first", mode="create")

    with pytest.raises(FileExistsError):
        fs.pipe_file(url, b"second", mode="create")
    assert fs.cat_file(url) == b"first"


def test_replace_is_refused_once_the_object_changed(bucket):
    """S3's ``If-Match: ETag``, GCS's ``ifGenerationMatch=N``: a writer holding an old version
    cannot overwrite a newer one; one holding the current version can."""
    fs = bucket.filesystem()
    url = f"{bucket.url}/manifest.parquet"
    fs.pipe_file(url, b"first")
    first = object_version(bucket, url)

    assert replace_if_unchanged(bucket, url, b"second", first)
    assert fs.cat_file(url) == b"second"
    assert not replace_if_unchanged(bucket, url, b"stale", first)
    assert fs.cat_file(url) == b"second"
    assert replace_if_unchanged(bucket, url, b"third", object_version(bucket, url))
    assert fs.cat_file(url) == b"third"


def test_a_parquet_manifest_in_the_bucket_reads_with_pandas_dask_and_duckdb(bucket):
    """The readers users have, straight from the bucket URL, with ``storage_options``. DuckDB
    reads through the fsspec filesystem registered into it: its own httpfs extension is not
    in the wheel, and the connection is told not to fetch it."""
    frame = pd.DataFrame(
        {"recording_id": ["a", "b", "c"], "size_bytes": pd.array([1, 2, None], dtype="Int64")}
    )
    url = f"{bucket.url}/manifest.parquet"
    frame.to_parquet(url, storage_options=bucket.storage_options)

    read_by_pandas = pd.read_parquet(url, storage_options=bucket.storage_options)
    pd.testing.assert_frame_equal(read_by_pandas, frame)
    read_by_dask = dd.read_parquet(url, storage_options=bucket.storage_options).compute()
    assert read_by_dask["recording_id"].tolist() == ["a", "b", "c"]
    offline = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    with duckdb.connect(config=offline) as sql:
        sql.register_filesystem(bucket.filesystem())
        rows = sql.sql(f"SELECT recording_id FROM read_parquet('{url}') ORDER BY 1").fetchall()
    assert rows == [("a",), ("b",), ("c",)]


def test_the_test_run_pins_every_credential_lookup_to_loopback():
    for name, value in LOOPBACK_ENV.items():
        assert os.environ.get(name) == value, name
    assert not set(UNSET_FOR_TESTS) & set(os.environ)


def test_a_process_a_test_starts_is_pinned_too():
    done = subprocess.run(
        [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    environ = json.loads(done.stdout)
    assert {name: environ.get(name) for name in LOOPBACK_ENV} == LOOPBACK_ENV
    assert not set(UNSET_FOR_TESTS) & set(environ)


def test_credential_lookups_fail_fast_without_leaving_loopback():
    """With no credentials given, Google's and AWS's default chains give up within seconds,
    and whatever they tried to reach was on this machine."""
    import botocore.session
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    started = time.monotonic()
    with connections() as seen:
        with pytest.raises(DefaultCredentialsError):
            google.auth.default()
        assert botocore.session.get_session().get_credentials() is None
    assert time.monotonic() - started < 10
    assert all(is_loopback(address) for kind, address in seen if kind == "connect"), seen
    assert all(is_loopback((host, 0)) for kind, host in seen if kind == "resolve"), seen


def test_no_connection_of_a_round_trip_leaves_loopback(bucket):
    """A new client's every connection and name lookup, through a write, a conditional
    replace, a listing and a read, is to 127.0.0.1."""
    import fsspec

    url = f"{bucket.url}/manifest.parquet"
    with connections() as seen:
        fs = fsspec.filesystem(bucket.protocol, skip_instance_cache=True, **bucket.storage_options)
        fs.pipe_file(url, b"first", mode="create")
        assert replace_if_unchanged(bucket, url, b"second", object_version(bucket, url))
        assert fs.ls(bucket.url, detail=False)
        assert fs.cat_file(url) == b"second"
    assert any(kind == "connect" for kind, _ in seen)
    assert all(is_loopback(address) for kind, address in seen if kind == "connect"), seen
    assert all(is_loopback((host, 0)) for kind, host in seen if kind == "resolve"), seen
