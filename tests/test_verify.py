"""``verify`` tells a whole archive from a damaged one, kind by kind, and its repair lets the
next run make the damaged recordings whole again.

Each archive is made by a real run against the emulator (and, for buckets, into moto's S3 and
fake-gcs-server), then damaged as disks and people damage them: bytes changed in place, a file
cut short, a file removed, a stray file, a partial a killed run left.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from pathlib import Path

import fsspec.asyn
import pandas as pd
import pytest
from support import TOKEN, assert_identical, cli, fetch, final_path, finish

import siro_data
from siro_data.archive import Archive
from siro_data.naming import file_stem
from siro_data.verify import TEMPORARY_GRACE_SECONDS


def damage(manifest: pd.DataFrame, out_dir: Path) -> dict[str, object]:
    """Bytes changed (same size), a file cut short, one removed, a stray file, a killed run's
    partial: what each is, by kind."""
    corrupt, truncated, missing = manifest["recording_id"][:3]
    paths = dict(zip(manifest["recording_id"], manifest["path"], strict=True))
    data = bytearray(Path(paths[corrupt]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(paths[corrupt]).write_bytes(bytes(data))
    with open(paths[truncated], "r+b") as file:
        file.truncate(os.path.getsize(paths[truncated]) - 100)
    Path(paths[missing]).unlink()
    orphan = out_dir / "copied-by-hand.m4a"
    orphan.write_bytes(b"not from any row")
    part = out_dir / f"{file_stem('never-finished')}.part"
    part.write_bytes(b"half a download")
    return {
        "wrong_hash": (corrupt,),
        "wrong_size": (truncated,),
        "missing": (missing,),
        "orphans": (str(orphan),),
        "leftovers": (str(part),),
    }


def verify_command(out_dir: Path, manifest_path: Path, *flags: str) -> tuple[int, str, str]:
    args = ["verify", "--out-dir", str(out_dir), "--manifest", str(manifest_path), "-q"]
    return finish(cli([*args, *flags]))


def test_a_whole_archive_is_ok(emulator, out_dir, manifest_path):
    fetch(emulator, list(emulator.recordings), out_dir, manifest_path)

    report = siro_data.verify(manifest_path, out_dir, progress=False)

    assert report.ok, report.summary()
    assert report.checked == len(emulator.recordings)
    assert report.bad == report.leftovers == report.orphans == ()


def test_each_kind_of_damage_is_found_under_its_kind(emulator, out_dir, manifest_path):
    manifest = fetch(emulator, list(emulator.recordings), out_dir, manifest_path)
    expected = damage(manifest, out_dir)
    before = sorted(path.name for path in out_dir.iterdir())

    report = siro_data.verify(manifest_path, out_dir, progress=False)

    assert not report.ok
    assert report.checked == len(manifest)
    for kind, found in expected.items():
        assert getattr(report, kind) == found, kind
    assert sorted(path.name for path in out_dir.iterdir()) == before  # nothing touched


def test_a_wrong_size_is_known_without_reading_the_file(emulator, out_dir, manifest_path):
    manifest = fetch(emulator, list(emulator.recordings), out_dir, manifest_path)
    bigger = Path(manifest.loc[0, "path"])
    bigger.write_bytes(bigger.read_bytes() + b"tail")
    whole = sum(manifest["size_bytes"][1:])
    read = []

    class Counting(siro_data.LogProgress):
        def add_bytes(self, count: int) -> None:
            read.append(count)

    report = siro_data.verify(manifest_path, out_dir, progress=Counting())

    assert report.wrong_size == (manifest.loc[0, "recording_id"],)
    assert report.missing == report.wrong_hash == ()
    assert sum(read) == whole  # each other file read once, that one not at all


def test_the_command_says_each_kind_on_a_line_and_repair_lets_the_next_run_make_them_whole(
    emulator, out_dir, manifest_path
):
    ids = list(emulator.recordings)
    manifest = fetch(emulator, ids, out_dir, manifest_path)
    expected = damage(manifest, out_dir)
    orphan, part = Path(expected["orphans"][0]), Path(expected["leftovers"][0])

    code, out, err = verify_command(out_dir, manifest_path, "--repair")

    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == f"{len(ids)} complete recordings checked: {len(ids) - 3} whole, 3 bad"
    for label, kind in [("missing", "missing"), ("wrong size", "wrong_size")]:
        assert f"{label}: 1 ({expected[kind][0]})" in lines
    assert f"wrong hash: 1 ({expected['wrong_hash'][0]})" in lines
    assert f"leftovers: 1 ({part})" in lines and f"orphans: 1 ({orphan})" in lines
    rows = siro_data.read_manifest(manifest_path).set_index("recording_id")
    for kind, found in [
        ("corrupt", "wrong_hash"),
        ("corrupt", "wrong_size"),
        ("missing", "missing"),
    ]:
        [recording_id] = expected[found]
        assert rows.loc[recording_id, "status"] == "failed"
        assert rows.loc[recording_id, "error_kind"] == kind
        assert rows.loc[recording_id, "error"].startswith("verify: ")
        assert not Path(manifest.set_index("recording_id").loc[recording_id, "path"]).exists()
    assert not part.exists()
    assert orphan.exists()  # listed, not deleted without --delete-orphans

    emulator.stats.reset()
    again = fetch(emulator, ids, out_dir, manifest_path)

    assert again["status"].eq("ok").all(), again["error"]
    assert_identical(again, emulator)
    assert sorted(emulator.stats.api_calls) == sorted(sum(expected.values(), ())[:3])
    code, out, _ = verify_command(out_dir, manifest_path)
    assert code == 1 and "orphans: 1" in out and "missing: 0" in out
    code, out, _ = verify_command(out_dir, manifest_path, "--delete-orphans")
    assert code == 1 and not orphan.exists()
    code, out, err = verify_command(out_dir, manifest_path)
    assert code == 0, out + err
    assert "wrong hash: 0" in out.splitlines()


def test_a_partial_whose_recording_is_being_fetched_is_no_leftover(
    emulator, out_dir, manifest_path
):
    fetch(emulator, list(emulator.recordings), out_dir, manifest_path)
    stem = file_stem("in-flight")
    part = out_dir / f"{stem}.part"
    part.write_bytes(b"a download at work")
    lock = Archive(out_dir, manifest_path).audio.lock(stem)
    lock.acquire()  # as a run fetching that recording holds it
    try:
        report = siro_data.verify(manifest_path, out_dir, repair=True, progress=False)
    finally:
        lock.release()

    assert report.ok, report.summary()
    assert part.exists()
    assert siro_data.verify(manifest_path, out_dir, progress=False).leftovers == (str(part),)


def test_a_temporary_file_is_a_leftover_once_nothing_writes_to_it(emulator, out_dir, manifest_path):
    manifest = fetch(emulator, list(emulator.recordings), out_dir, manifest_path)
    name = Path(manifest.loc[0, "path"]).with_suffix(".wav").name
    temporary = out_dir / f"{name}.0123456789ab.tmp"  # a WAV copy being written
    temporary.write_bytes(b"RIFF")

    assert siro_data.verify(manifest_path, out_dir, progress=False).ok

    long_ago = time.time() - TEMPORARY_GRACE_SECONDS - 60
    os.utime(temporary, (long_ago, long_ago))
    report = siro_data.verify(manifest_path, out_dir, repair=True, progress=False)
    assert report.leftovers == (str(temporary),) and not temporary.exists()


def test_the_archives_own_files_and_claimed_copies_are_no_orphans(emulator, tmp_path, out_dir):
    """The manifest kept inside the audio folder, its journal, lock and listing; WAV copies
    the rows name in ``audio_path``."""
    manifest_path = out_dir / "manifest.parquet"
    fetch(emulator, list(emulator.recordings)[:3], out_dir, manifest_path, convert_to="wav")
    (out_dir / "manifest.listing.parquet").write_bytes(b"")

    report = siro_data.verify(manifest_path, out_dir, progress=False)

    assert report.ok, report.summary()
    assert any(path.suffix == ".wav" for path in out_dir.iterdir())


def test_a_sync_fetches_again_what_verify_marked(emulator, out_dir, manifest_path):
    options = {"token": TOKEN, "api_url": emulator.api_url, "progress": False}
    first = siro_data.sync(manifest_path, out_dir, since="2020-01-01", **options)
    assert first.failed == 0
    manifest = siro_data.read_manifest(manifest_path)
    Path(manifest.loc[0, "path"]).unlink()
    siro_data.verify(manifest_path, out_dir, repair=True, progress=False)
    emulator.stats.reset()

    siro_data.sync(manifest_path, out_dir, retry_for=pd.Timedelta(days=3650), **options)

    assert list(emulator.stats.api_calls) == [manifest.loc[0, "recording_id"]]
    assert siro_data.verify(manifest_path, out_dir, progress=False).ok


def test_a_bucket_archive_is_checked_by_its_listing_and_its_bytes(bucket, emulator, staging):
    places = {
        "out_dir": f"{bucket.url}/audio",
        "manifest_path": f"{bucket.url}/manifest.parquet",
        "storage_options": bucket.storage_options,
    }
    ids = list(emulator.recordings)
    manifest = fetch(emulator, ids, **places)
    fs = bucket.filesystem()
    corrupt, truncated, missing = manifest["path"][:3]
    data = bytearray(fs.cat_file(corrupt))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(corrupt, bytes(data))
    fs.pipe_file(truncated, fs.cat_file(truncated)[:-100])
    fs.rm_file(missing)
    orphan = f"{bucket.url}/audio/copied-by-hand.m4a"
    fs.pipe_file(orphan, b"not from any row")
    archive = Archive(places["out_dir"], places["manifest_path"], bucket.storage_options)
    part = archive.staging / f"{file_stem('never-finished')}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(b"half a download")
    arguments = {"storage_options": bucket.storage_options, "progress": False}

    report = siro_data.verify(places["manifest_path"], places["out_dir"], repair=True, **arguments)

    by_path = dict(zip(manifest["path"], manifest["recording_id"], strict=True))
    assert report.wrong_hash == (by_path[corrupt],)
    assert report.wrong_size == (by_path[truncated],)
    assert report.missing == (by_path[missing],)
    assert report.orphans == (orphan,) and report.leftovers == (str(part),)
    assert not part.exists() and not fs.exists(corrupt) and fs.exists(orphan)

    again = fetch(emulator, ids, **places)
    assert again["status"].eq("ok").all(), again["error"]
    for row in again.itertuples():
        digest = hashlib.sha256(bucket.filesystem().cat_file(row.path)).hexdigest()
        assert digest == emulator.recordings[row.recording_id].sha256 == row.sha256
    cleaned = siro_data.verify(
        places["manifest_path"], places["out_dir"], delete_orphans=True, **arguments
    )
    assert cleaned.orphans == (orphan,) and not bucket.filesystem().exists(orphan)
    assert siro_data.verify(places["manifest_path"], places["out_dir"], **arguments).ok


def object_requests(bucket) -> int:
    """Requests the bucket's server has logged for one object of the audio (a read, a stat),
    listings of the prefix aside."""
    if bucket.protocol == "s3":
        return bucket.server.requests(f"/{bucket.name}/{bucket.prefix}/audio/")
    return bucket.server.requests(
        f"/b/{bucket.name}/o/{bucket.prefix.replace('/', '%2F')}%2Faudio%2F"
    )


class CountingBytes(siro_data.LogProgress):
    """Counts the bytes verify reads."""

    read = 0

    def add_bytes(self, count: int) -> None:
        self.read += count


def bucket_archive(bucket, emulator) -> tuple[dict[str, object], pd.DataFrame]:
    """A run's archive in the bucket: where it is, and its manifest."""
    places = {
        "out_dir": f"{bucket.url}/audio",
        "manifest_path": f"{bucket.url}/manifest.parquet",
        "storage_options": bucket.storage_options,
    }
    return places, fetch(emulator, list(emulator.recordings), **places)


def test_a_bucket_archive_is_checked_by_the_stores_md5s_without_reading_an_object(
    bucket, emulator, staging
):
    places, manifest = bucket_archive(bucket, emulator)
    expected = [
        hashlib.md5(emulator.recordings[key].data).hexdigest() for key in manifest.recording_id
    ]
    assert list(manifest["md5"]) == expected
    before, counting = object_requests(bucket), CountingBytes()

    report = siro_data.verify(
        places["manifest_path"],
        places["out_dir"],
        storage_options=bucket.storage_options,
        progress=counting,
    )

    assert report.ok and report.checked == len(manifest), report.summary()
    assert object_requests(bucket) - before == 0 and counting.read == 0


def test_an_object_of_other_bytes_of_the_same_size_is_told_by_its_md5_alone(
    bucket, emulator, staging, caplog
):
    places, manifest = bucket_archive(bucket, emulator)
    path, recording_id = manifest.loc[0, "path"], manifest.loc[0, "recording_id"]
    fs = bucket.filesystem()
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(path, bytes(data))
    before, counting = object_requests(bucket), CountingBytes()

    with caplog.at_level(logging.INFO, logger="siro_data.verify"):
        report = siro_data.verify(
            places["manifest_path"],
            places["out_dir"],
            storage_options=bucket.storage_options,
            progress=counting,
        )

    assert report.wrong_hash == (recording_id,) and report.missing == report.wrong_size == ()
    assert object_requests(bucket) - before == 0 and counting.read == 0
    found = f"verify: wrong bytes: md5 {hashlib.md5(data).hexdigest()[:16]}..., the row says"
    assert found in caplog.text


def test_rows_without_an_md5_have_their_objects_read_and_hashed(bucket, emulator, staging):
    """Rows written before the ``md5`` column: the objects are downloaded, as before it."""
    places, manifest = bucket_archive(bucket, emulator)
    options = bucket.storage_options
    siro_data.write_manifest(manifest.assign(md5=pd.NA), places["manifest_path"], options)
    path, recording_id = manifest.loc[0, "path"], manifest.loc[0, "recording_id"]
    fs = bucket.filesystem()
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(path, bytes(data))
    before, counting = object_requests(bucket), CountingBytes()

    report = siro_data.verify(
        places["manifest_path"], places["out_dir"], storage_options=options, progress=counting
    )

    assert report.wrong_hash == (recording_id,) and report.checked == len(manifest)
    assert counting.read == manifest["size_bytes"].sum()  # every object read once
    assert object_requests(bucket) - before >= len(manifest)


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_an_s3_object_uploaded_in_parts_is_read_and_hashed(bucket, emulator, staging):
    """A multipart upload's ETag (``"<hex>-<parts>"``) is no MD5 of the object."""
    places, manifest = bucket_archive(bucket, emulator)
    path = manifest.loc[0, "path"]
    fs = bucket.filesystem()
    data = fs.cat_file(path)
    name, key = path.split("://", 1)[1].split("/", 1)
    where = {"Bucket": name, "Key": key}
    call = functools.partial(fsspec.asyn.sync, fs.loop, fs._call_s3)
    upload = call("create_multipart_upload", **where)["UploadId"]
    part = call("upload_part", **where, UploadId=upload, PartNumber=1, Body=data)
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    call("complete_multipart_upload", **where, UploadId=upload, MultipartUpload=parts)
    assert fs.info(path)["ETag"].strip('"').endswith("-1")
    before, counting = object_requests(bucket), CountingBytes()

    report = siro_data.verify(
        places["manifest_path"],
        places["out_dir"],
        storage_options=bucket.storage_options,
        progress=counting,
    )

    assert report.ok and report.checked == len(manifest), report.summary()
    assert counting.read == len(data) and object_requests(bucket) > before


def test_no_manifest_is_one_sentence_and_exit_2(tmp_path):
    code, out, err = verify_command(tmp_path / "audio", tmp_path / "none.parquet")
    assert code == 2 and out == ""
    assert err == f"siro-data: error: there is no manifest at {tmp_path / 'none.parquet'}\n"


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_below_one_are_refused(tmp_path, workers):
    with pytest.raises(ValueError, match="workers must be"):
        siro_data.verify(tmp_path / "m.parquet", tmp_path, workers=workers)


def test_the_log_lines_of_a_pipeline_say_what_is_checked(emulator, out_dir, manifest_path):
    fetch(emulator, list(emulator.recordings), out_dir, manifest_path)
    args = ["verify", "--out-dir", str(out_dir), "--manifest", str(manifest_path)]

    code, _, err = finish(cli([*args, "--progress", "log"]))

    assert code == 0, err
    assert f"checking {len(emulator.recordings)} recordings" in err
    total = sum(recording.size for recording in emulator.recordings.values())
    assert f"{total / 1e6:.1f} MB received" in err


def test_repair_leaves_a_row_another_run_finished_since_it_was_checked(
    emulator, out_dir, manifest_path
):
    """A run that fetches the missing recording again between the check and the repair: its
    fresh row and file stay."""
    manifest = fetch(emulator, list(emulator.recordings), out_dir, manifest_path)
    gone, path = manifest.loc[0, "recording_id"], Path(manifest.loc[0, "path"])
    path.unlink()

    class FetchWhenChecked(siro_data.LogProgress):
        def close(self) -> None:  # the check is over, the repair not begun
            super().close()
            fetch(emulator, [gone], out_dir, manifest_path)

    report = siro_data.verify(manifest_path, out_dir, repair=True, progress=FetchWhenChecked())

    assert report.missing == (gone,)  # what the check saw
    rows = siro_data.read_manifest(manifest_path).set_index("recording_id")
    assert rows.loc[gone, "status"] == "ok" and path.exists()
    assert siro_data.verify(manifest_path, out_dir, progress=False).ok


def test_a_folder_of_manifests_is_refused_in_a_sentence(tmp_path):
    (tmp_path / "manifests").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        siro_data.verify(tmp_path / "manifests", tmp_path / "audio", progress=False)


def test_stop_ends_the_check_and_the_report_says_so(emulator, out_dir, manifest_path):
    fetch(emulator, list(emulator.recordings), out_dir, manifest_path)

    class StopAfterOne(siro_data.LogProgress):
        def start(self, total, done, stop) -> None:
            super().start(total, done, stop)
            self.stop = stop

        def finished(self, row) -> None:  # the panel's Stop, pressed once a row is checked
            super().finished(row)
            self.stop()

    report = siro_data.verify(manifest_path, out_dir, workers=1, progress=StopAfterOne())

    assert report.stopped and not report.ok
    assert 1 <= report.checked < len(emulator.recordings)
    assert "(stopped before the end)" in report.summary().splitlines()[0]


def test_an_orphan_a_run_claims_before_the_deletion_is_kept(emulator, out_dir, manifest_path):
    """A file no row named when the folder was listed, whose row a run writes before the
    orphans are deleted (as a run killed between the rename and its row, then resumed): kept."""
    ids = list(emulator.recordings)
    fetch(emulator, ids[:-1], out_dir, manifest_path)
    late = emulator.recordings[ids[-1]]
    path = final_path(out_dir, late)
    path.write_bytes(late.data)

    class FetchWhenChecked(siro_data.LogProgress):
        def close(self) -> None:  # the folder listed, the orphans not yet deleted
            super().close()
            fetch(emulator, [late.id], out_dir, manifest_path)

    report = siro_data.verify(
        manifest_path, out_dir, delete_orphans=True, progress=FetchWhenChecked()
    )

    assert report.orphans == (str(path),) and report.deleted == ()
    assert path.exists() and siro_data.verify(manifest_path, out_dir, progress=False).ok
