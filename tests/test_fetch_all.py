"""fetch_all end to end, against the emulator (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import email.utils
import errno
import logging
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from support import TOKEN, assert_identical, fetch

import siro_data
from siro_data import AuthError, fetch_all, read_manifest
from siro_data.archive import LOCKS_FOLDER, journal_path
from siro_data.download import Downloader, partial_path
from siro_data.emulator import Recording, make_recording
from siro_data.naming import file_stem
from siro_data.rows import COLUMNS


def files_in(out_dir: Path) -> list[Path]:
    """What a run left in out_dir, but for the folder of per-recording locks."""
    return [path for path in out_dir.iterdir() if path.name != LOCKS_FOLDER]


def test_fetches_every_recording_byte_identical_with_durations(emulator, out_dir, manifest_path):
    """The happy path: files identical to the source, durations within 1%, typed manifest."""
    ids = list(emulator.recordings)
    manifest = fetch(emulator, pd.DataFrame({"recording_id": ids}), out_dir, manifest_path)

    assert list(manifest.columns) == list(COLUMNS)
    assert manifest.dtypes.astype(str).to_dict() == COLUMNS
    assert list(manifest["recording_id"]) == ids
    assert manifest["error"].isna().all()
    assert_identical(manifest, emulator)
    for row in manifest.itertuples():
        truth = emulator.recordings[row.recording_id].duration
        assert row.duration == pytest.approx(truth, rel=0.01)
        assert Path(row.path).parent == out_dir.absolute()
        assert row.expiration > pd.Timestamp.now(tz="UTC")
    assert sorted(p.suffix for p in files_in(out_dir)) == sorted(
        f".{r.extension}" for r in emulator.recordings.values()
    )
    pd.testing.assert_frame_equal(read_manifest(manifest_path), manifest)
    pd.testing.assert_frame_equal(pd.read_parquet(manifest_path), manifest)  # no siro_data
    assert not journal_path(manifest_path).exists()


def test_rerun_makes_no_request(emulator, out_dir, manifest_path, caplog):
    """A second run over complete rows neither signs nor downloads anything."""
    ids = list(emulator.recordings)
    first = fetch(emulator, ids, out_dir, manifest_path)
    emulator.stats.reset()
    second = fetch(emulator, ids, out_dir, manifest_path)
    assert "failed" not in caplog.text
    assert emulator.stats.api_requests == 0
    assert sum(emulator.stats.storage_requests.values()) == 0
    pd.testing.assert_frame_equal(first, second)


def test_rerun_needs_no_token_when_everything_is_complete(
    emulator, out_dir, manifest_path, monkeypatch
):
    ids = list(emulator.recordings)
    fetch(emulator, ids, out_dir, manifest_path)
    monkeypatch.delenv("SIRO_AUTH_TOKEN", raising=False)
    manifest = fetch_all(ids, out_dir=out_dir, manifest_path=manifest_path, progress=False)
    assert manifest["error"].isna().all()


def test_rerun_refetches_only_missing_or_damaged_files(emulator, out_dir, manifest_path):
    ids = list(emulator.recordings)
    first = fetch(emulator, ids, out_dir, manifest_path)
    deleted, truncated = first["path"].iloc[0], first["path"].iloc[1]
    Path(deleted).unlink()
    Path(truncated).write_bytes(Path(truncated).read_bytes()[:100])
    emulator.stats.reset()

    second = fetch(emulator, ids, out_dir, manifest_path)

    assert dict(emulator.stats.api_calls) == {ids[0]: 1, ids[1]: 1}
    assert second["error"].isna().all()
    assert_identical(second, emulator)


def test_failed_rows_are_retried_on_the_next_run(emulator, out_dir, manifest_path):
    ids = list(emulator.recordings)
    emulator.faults.api_status[ids[2]] = 404
    first = fetch(emulator, ids, out_dir, manifest_path)
    assert first.loc[2, "error"] == "404: Recording not found"
    assert first.loc[2, "error_kind"] == "not_found"
    assert pd.isna(first.loc[2, "path"])

    emulator.faults.api_status.clear()
    emulator.stats.reset()
    second = fetch(emulator, ids, out_dir, manifest_path)
    assert dict(emulator.stats.api_calls) == {ids[2]: 1}
    assert second["error"].isna().all()
    assert len(read_manifest(manifest_path)) == len(ids)


def test_partial_file_is_continued_with_range(emulator, out_dir, manifest_path):
    rec_id, recording = next(iter(emulator.recordings.items()))
    target = out_dir / f"{file_stem(rec_id)}.{recording.extension}"
    out_dir.mkdir(parents=True)
    partial_path(target).write_bytes(recording.data[:5000])

    manifest = fetch(emulator, [rec_id], out_dir, manifest_path)

    assert manifest.loc[0, "error"] is pd.NA
    assert emulator.stats.bytes_served[rec_id] == recording.size - 5000
    assert emulator.stats.storage_headers[0]["range"] == "bytes=5000-"
    assert_identical(manifest, emulator)
    assert not partial_path(target).exists()


def test_finished_file_missing_from_manifest_is_checked_not_downloaded(
    emulator, out_dir, manifest_path
):
    """A kill between rename and journal line: the file is checked with one ranged request."""
    rec_id, recording = next(iter(emulator.recordings.items()))
    out_dir.mkdir(parents=True)
    (out_dir / f"{file_stem(rec_id)}.{recording.extension}").write_bytes(recording.data)

    manifest = fetch(emulator, [rec_id], out_dir, manifest_path)

    assert manifest.loc[0, "error"] is pd.NA
    assert emulator.stats.bytes_served[rec_id] == 0
    assert emulator.stats.storage_requests[rec_id] == 1
    assert_identical(manifest, emulator)


def test_url_expiring_mid_download_is_signed_again_and_continued(emulator, out_dir, manifest_path):
    rec_id, recording = next(iter(emulator.recordings.items()))
    emulator.faults.url_ttl = 2.0
    emulator.faults.bandwidth = 25_000  # the first piece (100 kB) outlives the URL
    emulator.faults.cut_after[rec_id] = 100_000

    manifest = fetch(emulator, [rec_id], out_dir, manifest_path, timeout=(5, 5))

    assert manifest.loc[0, "error"] is pd.NA, manifest.loc[0, "error"]
    assert emulator.stats.api_calls[rec_id] == 2
    assert emulator.stats.bytes_served[rec_id] <= 1.1 * recording.size
    assert_identical(manifest, emulator)


def test_an_expiry_after_progress_does_not_count_against_the_recording(
    emulator, out_dir, manifest_path
):
    """A long download may outlive many URLs: only expiries in a row without progress count."""
    one_expiry_allowed = Downloader(timeout=(5, 5), max_fruitless_urls=1)
    rec_id, recording = next(iter(emulator.recordings.items()))
    emulator.faults.url_ttl = 2.0  # lives 2 to 3 s
    emulator.faults.bandwidth = 25_000
    emulator.faults.cut_after[rec_id] = 80_000  # 3.2 s in: the resume meets an expired URL
    assert recording.size > 80_000

    manifest = fetch(emulator, [rec_id], out_dir, manifest_path, downloader=one_expiry_allowed)

    assert manifest.loc[0, "error"] is pd.NA, manifest.loc[0, "error"]
    assert emulator.stats.api_calls[rec_id] == 2
    assert_identical(manifest, emulator)


@pytest.mark.parametrize("says_why", [True, False])
def test_url_refused_after_its_expiration_is_signed_again(
    emulator, out_dir, manifest_path, says_why
):
    """Some stores answer an expired URL with a bare 403: its known expiration tells why."""
    rec_id, recording = next(iter(emulator.recordings.items()))
    emulator.faults.url_ttl = 2.0
    emulator.faults.expired_status = 403
    assert recording.size > 100_000  # the cut falls inside the file
    emulator.faults.expired_says_why = says_why
    emulator.faults.bandwidth = 25_000
    emulator.faults.cut_after[rec_id] = 100_000

    manifest = fetch(emulator, [rec_id], out_dir, manifest_path, timeout=(5, 5))

    assert manifest.loc[0, "error"] is pd.NA, manifest.loc[0, "error"]
    assert emulator.stats.api_calls[rec_id] == 2
    assert_identical(manifest, emulator)


def test_url_already_expired_is_tried_then_given_up(emulator, out_dir, manifest_path):
    """Storage, not our clock, says a fresh URL expired: each is tried once, and the row ends."""
    rec_id = next(iter(emulator.recordings))
    emulator.faults.url_ttl = -5  # the API hands out URLs that have already expired
    manifest = fetch(emulator, [rec_id], out_dir, manifest_path)
    assert manifest.loc[0, "error"] == (
        "download: signed URL expired 3 times in a row without progress"
    )
    assert emulator.stats.api_calls[rec_id] == 3
    assert emulator.stats.storage_requests[rec_id] == 3


@pytest.mark.parametrize("offset", [-3600.0, 3600.0])
def test_an_api_clock_an_hour_off_loses_nothing_and_is_said_once(
    emulator, out_dir, manifest_path, caplog, offset
):
    """Tried as a user on a laptop an hour off: every row ok at one signing call each, one
    warning for the run, and the manifest's expiration the API's instant.
    """
    caplog.set_level(logging.WARNING)
    emulator.faults.clock_offset = offset
    manifest = fetch(emulator, list(emulator.recordings), out_dir, manifest_path, workers=3)

    assert manifest["error"].isna().all(), manifest["error"].tolist()
    assert_identical(manifest, emulator)
    assert all(emulator.stats.api_calls[rec_id] == 1 for rec_id in emulator.recordings)
    said = [r.getMessage() for r in caplog.records if r.name == "siro_data.clock"]
    assert len(said) == 1 and "clock is 1 h 00 min" in said[0], said
    on_the_apis_clock = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=offset + 900)
    assert ((manifest["expiration"] - on_the_apis_clock).abs() < pd.Timedelta(seconds=30)).all()


def test_mixed_errors_each_land_in_their_row(emulator, out_dir, manifest_path):
    ids = list(emulator.recordings)
    emulator.faults.api_status[ids[0]] = 403
    emulator.faults.api_status[ids[1]] = 422
    emulator.faults.api_error_payload.add(ids[2])
    emulator.faults.storage_html.add(ids[3])
    emulator.faults.transient[ids[4]] = [503, 502]

    manifest = fetch(emulator, ids, out_dir, manifest_path).set_index("recording_id")

    assert manifest.loc[ids[0], "error"].startswith("403: ")
    assert manifest.loc[ids[1], "error"] == "422: ZodError: id: Required"
    assert manifest.loc[ids[2], "error"] == (
        "200: signedUrl error: Recording audio is not available yet"
    )
    assert manifest.loc[ids[3], "error_kind"] == "not_audio"
    assert pd.isna(manifest.loc[ids[4], "error"])
    assert pd.isna(manifest.loc[ids[5], "error"])
    assert list(manifest["error_kind"].fillna("ok")) == [
        "forbidden",
        "invalid",
        "api_error",
        "not_audio",
        "ok",
        "ok",
    ]
    failed_files = [p for p in files_in(out_dir) if p.name.startswith(tuple(ids[:4]))]
    assert failed_files == []


def test_garbage_served_as_audio_is_an_error_not_a_file(emulator, out_dir, manifest_path):
    fake = Recording(id="fake-one", data=b"<html>gateway</html>" * 500, extension="m4a", duration=1)
    emulator.add_recording(fake)
    manifest = fetch(emulator, ["fake-one"], out_dir, manifest_path)
    assert manifest.loc[0, "error_kind"] == "not_audio"
    assert manifest.loc[0, "error"].startswith("not readable audio")
    assert files_in(out_dir) == []


def test_an_unforeseen_error_costs_its_row_not_the_run(
    emulator, out_dir, manifest_path, monkeypatch
):
    ids = list(emulator.recordings)
    real_probe = siro_data.audio.probe

    def probe(path):
        if path.stat().st_size == emulator.recordings[ids[1]].size:
            raise KeyError("surprise")
        return real_probe(path)

    monkeypatch.setattr(siro_data.audio, "probe", probe)
    manifest = fetch(emulator, ids, out_dir, manifest_path)
    assert manifest.loc[1, "error"] == "unexpected error: KeyError: 'surprise'"
    assert manifest.loc[1, "error_kind"] == "unexpected"
    assert manifest["error"].notna().sum() == 1


def test_a_disk_error_stops_the_run_and_keeps_the_manifest(
    emulator, out_dir, manifest_path, monkeypatch
):
    ids = list(emulator.recordings)
    fetch(emulator, ids[:1], out_dir, manifest_path)

    def full_disk(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(siro_data.audio, "probe", full_disk)
    emulator.stats.reset()
    with pytest.raises(OSError, match="No space left"):
        fetch(emulator, ids, out_dir, manifest_path, workers=1)
    assert emulator.stats.api_requests == 1  # the first id was complete; the second stopped all
    saved = read_manifest(manifest_path)
    assert list(saved["recording_id"]) == ids[:1]


def test_bad_ids_are_rows_duplicates_once_numbers_as_strings(emulator, out_dir, manifest_path):
    emulator.add_recording(make_recording("12345", 1.0))
    ids = pd.Series([12345, "12345", None, "", "   ", float("nan"), 12345.0])
    manifest = fetch(emulator, ids, out_dir, manifest_path)

    assert list(manifest["recording_id"].fillna("<null>")) == ["12345", "<null>", "", "   "]
    assert list(manifest["error"].fillna("ok")) == [
        "ok",
        "invalid id: missing (null)",
        "invalid id: empty",
        "invalid id: empty",
    ]
    assert emulator.stats.api_calls == {"12345": 1}


@pytest.mark.parametrize(
    "hostile",
    ["../escape", "a/b", "..", ".", "x" * 300, "é🎧中", "tab\there\nnewline", "CON", "trail. "],
)
def test_hostile_ids_stay_inside_out_dir(emulator, out_dir, manifest_path, hostile):
    emulator.add_recording(make_recording(hostile, 1.0))
    manifest = fetch(emulator, [hostile], out_dir, manifest_path)
    assert manifest.loc[0, "error"] is pd.NA, manifest.loc[0, "error"]
    assert manifest.loc[0, "recording_id"] == hostile
    path = Path(manifest.loc[0, "path"])
    assert path.parent == out_dir.absolute()
    assert len(path.name) < 100
    assert [p.name for p in files_in(out_dir)] == [path.name]
    assert emulator.stats.api_calls == {hostile: 1}


def test_ids_differing_only_in_case_get_distinct_files(emulator, out_dir, manifest_path):
    for rec_id in ("AbCd", "abcd"):
        emulator.add_recording(make_recording(rec_id, 1.0, seed=len(emulator.recordings)))
    manifest = fetch(emulator, ["AbCd", "abcd"], out_dir, manifest_path)
    names = {Path(p).name.lower() for p in manifest["path"]}
    assert len(names) == 2
    assert_identical(manifest, emulator)


def test_bad_input_fails_before_any_request(emulator, out_dir, manifest_path, monkeypatch):
    with pytest.raises(ValueError, match=r"no column 'recording_id'.*\['id', 'title'\]"):
        fetch(emulator, pd.DataFrame({"id": ["a"], "title": ["t"]}), out_dir, manifest_path)
    monkeypatch.delenv("SIRO_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="SIRO_AUTH_TOKEN"):
        fetch(emulator, ["a"], out_dir, manifest_path, token=None)
    with pytest.raises(ValueError, match="workers"):
        fetch(emulator, ["a"], out_dir, manifest_path, workers=0)
    blocker = out_dir.parent / "a-file"
    blocker.write_text("in the way")
    with pytest.raises(ValueError, match="out_dir"):
        fetch(emulator, ["a"], blocker / "sub", manifest_path)
    assert emulator.stats.api_requests == 0


def test_rejected_token_stops_the_run_and_keeps_the_manifest(emulator, out_dir, manifest_path):
    ids = list(emulator.recordings)
    fetch(emulator, ids[:2], out_dir, manifest_path)
    emulator.tokens.clear()
    emulator.stats.reset()

    with pytest.raises(AuthError, match="401"):
        fetch(emulator, ids, out_dir, manifest_path, workers=8)

    assert emulator.stats.api_requests == 1  # the others waited for their pacing slot
    saved = read_manifest(manifest_path)
    assert list(saved["recording_id"]) == ids[:2]
    assert saved["error"].isna().all()


def test_token_provider_is_asked_again_after_a_401(emulator, out_dir, manifest_path):
    """Tokens expire mid-run (Siro's last 16 hours): the provider mints a fresh one."""
    ids = list(emulator.recordings)
    emulator.tokens.clear()
    emulator.tokens.add(f"{TOKEN}-0")
    issued = []

    def provider() -> str:
        issued.append(f"{TOKEN}-{len(issued)}")
        return issued[-1]

    def expire_token_after_two_calls() -> None:
        deadline = time.monotonic() + 10
        while emulator.stats.api_requests < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        emulator.tokens.clear()
        emulator.tokens.add(f"{TOKEN}-1")

    emulator.faults.api_latency = 0.05
    expiry = threading.Thread(target=expire_token_after_two_calls)
    expiry.start()
    manifest = fetch(emulator, ids, out_dir, manifest_path, token=provider, workers=1)
    expiry.join()

    assert manifest["error"].isna().all()
    assert issued == [f"{TOKEN}-0", f"{TOKEN}-1"]
    assert emulator.stats.api_requests == len(ids) + 1  # one call was answered 401


def test_renewed_token_rejected_too_stops_the_run(emulator, out_dir, manifest_path):
    emulator.tokens.clear()
    calls = []

    def provider() -> str:
        calls.append(1)
        return f"{TOKEN}-never-valid-{len(calls)}"

    with pytest.raises(AuthError, match="401"):
        fetch(emulator, list(emulator.recordings), out_dir, manifest_path, token=provider)
    assert len(calls) == 2
    assert read_manifest(manifest_path).empty


@pytest.mark.parametrize("retry_after", ["2", "http-date"])
def test_transient_failures_and_rate_limits_are_retried(
    emulator, out_dir, manifest_path, retry_after
):
    ids = list(emulator.recordings)
    emulator.faults.transient[ids[0]] = [429, 500]
    emulator.faults.storage_transient[ids[1]] = [503]
    if retry_after == "http-date":
        retry_after = email.utils.formatdate(time.time() + 3, usegmt=True)
    emulator.faults.retry_after = retry_after
    manifest = fetch(emulator, ids[:2], out_dir, manifest_path, workers=1)
    assert manifest["error"].isna().all()
    assert emulator.stats.api_calls[ids[0]] == 3
    assert emulator.stats.storage_requests[ids[1]] == 2
    first, second = sorted(emulator.stats.api_request_times)[:2]
    assert second - first >= 1.5  # Retry-After was honoured, not the short backoff


def test_paces_under_the_rate_limit_without_429(emulator, out_dir, manifest_path):
    ids = list(emulator.recordings)
    emulator.faults.rate_limit = 5
    emulator.faults.rate_window = 1.0
    manifest = fetch(emulator, ids, out_dir, manifest_path, requests_per_minute=270)
    assert manifest["error"].isna().all()
    assert emulator.stats.rate_limited == 0
    times = sorted(emulator.stats.api_request_times)
    assert times[-1] - times[0] >= (len(times) - 1) * 60 / 270 * 0.9  # paced, not bunched


def test_workers_overlap_and_reuse_connections(emulator, out_dir, manifest_path):
    ids = list(emulator.recordings)
    emulator.faults.api_latency = 0.3
    started = time.monotonic()
    manifest = fetch(emulator, ids, out_dir, manifest_path, workers=6)
    elapsed = time.monotonic() - started
    assert manifest["error"].isna().all()
    assert elapsed < 0.3 * len(ids) * 0.6  # serial would take len(ids) x 0.3 s at least
    assert emulator.stats.connections_opened["api"] <= 6


def test_secrets_never_reach_manifest_logs_or_storage(
    emulator, out_dir, manifest_path, caplog, capsys
):
    ids = list(emulator.recordings)
    emulator.faults.api_status[ids[0]] = 404
    emulator.faults.cut_after[ids[1]] = 3000
    with caplog.at_level(logging.DEBUG):
        manifest = fetch(emulator, ids, out_dir, manifest_path, progress="bars")
        signed = siro_data.SiroClient(emulator.token, emulator.api_url).sign(ids[2])
    signature = signed.url.split("X-Goog-Signature=")[1].split("&")[0]
    captured = capsys.readouterr()
    texts = [
        caplog.text,
        captured.out,
        captured.err,
        manifest.to_csv(),
        Path(manifest_path).read_bytes().decode("latin-1"),
        repr(signed),
    ]
    for text in texts:
        assert TOKEN not in text
        assert "X-Goog-Signature=" not in text
        assert signature not in text
    assert "recordings" in captured.err  # the progress bar was shown
    assert all("x-siro-auth-token" not in h for h in emulator.stats.storage_headers)


def test_empty_input_writes_an_empty_typed_manifest(emulator, out_dir, manifest_path):
    manifest = fetch(emulator, [], out_dir, manifest_path)
    assert manifest.empty
    assert manifest.dtypes.astype(str).to_dict() == COLUMNS
    assert read_manifest(manifest_path).dtypes.astype(str).to_dict() == COLUMNS
    pd.testing.assert_frame_equal(pd.read_parquet(manifest_path), manifest)


def test_manifest_on_disk_accumulates_across_calls(emulator, out_dir, manifest_path):
    """The returned frame answers this call; the file describes everything fetched so far."""
    ids = list(emulator.recordings)
    fetch(emulator, ids[:3], out_dir, manifest_path)
    second = fetch(emulator, ids[3:], out_dir, manifest_path)
    assert list(second["recording_id"]) == ids[3:]
    assert list(read_manifest(manifest_path)["recording_id"]) == ids


def test_overwrite_downloads_again(emulator, out_dir, manifest_path):
    ids = list(emulator.recordings)[:2]
    fetch(emulator, ids, out_dir, manifest_path)
    emulator.stats.reset()
    manifest = fetch(emulator, ids, out_dir, manifest_path, overwrite=True)
    assert sum(emulator.stats.bytes_served.values()) == sum(
        emulator.recordings[i].size for i in ids
    )
    assert_identical(manifest, emulator)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_convert_to_writes_readable_copies_and_resumes_them(emulator, out_dir, manifest_path, fmt):
    """Copies soundfile reads, beside the downloads; made again only where missing."""
    import soundfile

    ids = list(emulator.recordings)
    fetch(emulator, ids[:3], out_dir, manifest_path)  # downloaded before, with no copies
    emulator.stats.reset()

    manifest = fetch(emulator, ids, out_dir, manifest_path, convert_to=fmt)

    assert manifest["error"].isna().all(), manifest["error"]
    assert sorted(emulator.stats.api_calls) == sorted(ids[3:])  # the first three: converted only
    for row in manifest.itertuples():
        copy = Path(row.audio_path)
        assert copy.parent == out_dir.absolute() and copy.suffix == f".{fmt}"
        info = soundfile.info(copy)
        assert info.duration == pytest.approx(row.duration, abs=0.05)
    pd.testing.assert_frame_equal(read_manifest(manifest_path), manifest)
    pd.testing.assert_frame_equal(pd.read_parquet(manifest_path), manifest)

    lost = Path(manifest.loc[1, "audio_path"])
    kept = Path(manifest.loc[2, "audio_path"])
    if lost != Path(manifest.loc[1, "path"]):  # a copy, not the download itself
        lost.unlink()
    before = kept.stat()
    emulator.stats.reset()
    again = fetch(emulator, ids, out_dir, manifest_path, convert_to=fmt)

    assert emulator.stats.api_requests == 0 and emulator.stats.total_bytes_served == 0
    assert Path(again.loc[1, "audio_path"]).exists()
    after = kept.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)


def test_convert_to_is_checked_before_any_request(emulator, out_dir, manifest_path):
    with pytest.raises(ValueError, match="convert_to must be one of"):
        fetch(emulator, list(emulator.recordings), out_dir, manifest_path, convert_to="mp3")
    assert emulator.stats.api_requests == 0


def test_paths_in_the_manifest_are_absolute_without_dot_dot(
    emulator, tmp_path, monkeypatch, manifest_path
):
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    rec_id = next(iter(emulator.recordings))
    manifest = fetch(emulator, [rec_id], Path("../data/recordings"), Path("../data/m.parquet"))
    assert manifest.loc[0, "path"].startswith(str(tmp_path / "data" / "recordings") + "/")
    assert (tmp_path / "data" / "m.parquet").exists()


def test_the_manifest_carries_rate_channels_and_codec(emulator, out_dir, manifest_path):
    """Read during the decode check: 8 kHz phone audio told apart, null where a row failed."""
    emulator.add_recording(make_recording("phone-call", 2.0, "wav", samplerate=8_000))
    failing = next(iter(emulator.recordings))
    emulator.faults.api_status[failing] = 404
    ids = list(emulator.recordings)
    manifest = fetch(emulator, ids, out_dir, manifest_path)

    codecs = {"m4a": "aac", "mp3": "mp3", "wav": "pcm_s16le", "flac": "flac", "ogg": "opus"}
    for row in manifest.itertuples():
        if row.recording_id == failing:
            assert pd.isna(row.sample_rate) and pd.isna(row.channels) and pd.isna(row.codec)
            continue
        recording = emulator.recordings[row.recording_id]
        expected_rate = 8_000 if row.recording_id == "phone-call" else 16_000
        assert (row.sample_rate, row.channels) == (expected_rate, 1)
        assert row.codec == codecs[recording.extension]
    back = read_manifest(manifest_path)
    assert back.dtypes[["sample_rate", "channels", "codec"]].astype(str).tolist() == [
        "Int64",
        "Int64",
        "string",
    ]
    by_id = back.set_index("recording_id")
    assert by_id.loc["phone-call", "sample_rate"] == 8_000
