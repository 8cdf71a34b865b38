"""The emulator, exercised over real sockets with requests: every switch must act on the wire."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import av
import numpy as np
import pytest
import requests
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from siro_data.emulator import (
    CONTENT_TYPES,
    Emulator,
    Faults,
    Recording,
    encode,
    make_recording,
    sample_recordings,
    speech_like,
)
from siro_data.emulator.samples import (
    ORGANIZATION_ID,
    SAMPLE_DATES_DAYS,
    SAMPLE_DATES_END,
    TEAMS,
)

TOKEN = "test-token"
TOKEN_HEADER = "x-siro-auth-token"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recs() -> dict[str, Recording]:
    return sample_recordings()


@pytest.fixture
def emu(recs: dict[str, Recording]):
    with Emulator(recordings=recs, token=TOKEN) as emulator:
        yield emulator


@pytest.fixture
def rid(recs: dict[str, Recording]) -> str:
    """The first sample recording's id (an .m4a)."""
    return next(iter(recs))


def endpoint(emu: Emulator, rec_id: str) -> str:
    segment = quote(rec_id, safe="")
    if segment in (".", ".."):  # as literal dot segments, URL normalisation would drop them
        segment = segment.replace(".", "%2E")
    return f"{emu.api_url}/v1/core/recordings/{segment}/signedUrl"


def sign(emu: Emulator, rec_id: str, token: str | None = TOKEN, **kwargs) -> requests.Response:
    headers = {} if token is None else {TOKEN_HEADER: token}
    return requests.post(endpoint(emu, rec_id), headers=headers, timeout=5, **kwargs)


def signed_url(emu: Emulator, rec_id: str) -> str:
    response = sign(emu, rec_id)
    assert response.status_code == 200, response.text
    return response.json()["data"]["url"]


def read_duration(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        return container.duration / 1e6


# --- sample recordings -------------------------------------------------------------------------


def test_samples_are_deterministic_varied_and_stable(recs: dict[str, Recording]) -> None:
    assert sample_recordings() == recs
    assert sample_recordings() is not recs  # a fresh dict: mutating it cannot poison the cache
    assert list(sample_recordings(n=2)) == list(recs)[:2]  # the first ids do not depend on n
    assert list(sample_recordings(n=2, seed=1)) != list(recs)[:2]
    extensions = [rec.extension for rec in recs.values()]
    assert extensions.count("m4a") == 8
    assert sorted(e for e in extensions if e != "m4a") == ["flac", "mp3", "ogg", "wav"]
    for rec_id, rec in recs.items():
        assert rec.id == rec_id and len(rec_id) == 20 and rec_id.isalnum() and rec_id.isascii()
        assert rec.content_type == CONTENT_TYPES[rec.extension]
        assert 3.0 <= rec.duration <= 40.0
        assert abs(rec.duration_ms_api - rec.duration * 1000) <= 4
        assert rec.data and len(rec.sha256) == 64 and rec.size == len(rec.data)
    assert len({rec.duration for rec in recs.values()}) == len(recs)


def test_sample_durations_read_back_within_one_percent(recs: dict[str, Recording]) -> None:
    for rec in recs.values():
        assert read_duration(rec.data) == pytest.approx(rec.duration, rel=0.01), rec.extension
        if rec.extension in ("wav", "flac", "ogg"):
            info = sf.info(io.BytesIO(rec.data))
            assert info.duration == pytest.approx(rec.duration, rel=0.01), rec.extension


def test_m4a_decodes_to_the_signal_length(recs: dict[str, Recording]) -> None:
    rec = next(r for r in recs.values() if r.extension == "m4a" and r.duration < 10)
    with av.open(io.BytesIO(rec.data)) as container:
        assert container.format.name.startswith("mov")
        decoded = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    assert abs(decoded.size - round(rec.duration * 16_000)) <= 1024  # at most one AAC frame
    assert 0.05 < np.abs(decoded).max() <= 1.0


def test_speech_like_has_syllables_and_pauses() -> None:
    samples = speech_like(6.0, 16_000, seed=3)
    assert samples.dtype == np.float32 and samples.shape == (96_000,)
    assert np.array_equal(samples, speech_like(6.0, 16_000, seed=3))
    assert not np.array_equal(samples, speech_like(6.0, 16_000, seed=4))
    envelope = np.abs(samples).reshape(-1, 160).max(axis=1)  # 10 ms frames
    assert envelope.max() == pytest.approx(0.5, abs=0.01)
    assert (envelope < 0.1).mean() > 0.1  # gaps between syllables and phrases
    assert (envelope > 0.2).mean() > 0.3


@pytest.mark.parametrize("extension", sorted(CONTENT_TYPES))
def test_encode_every_format(extension: str) -> None:
    data = encode(speech_like(2.0, 16_000, seed=1), 16_000, extension)
    assert read_duration(data) == pytest.approx(2.0, rel=0.01)


def test_make_recording_builds_megabytes_quickly() -> None:
    started = time.monotonic()
    rec = make_recording("big one", 60.0, "wav", seed=5, duration_ms_api=60_123)
    assert time.monotonic() - started < 2.0
    assert rec.size > 1_900_000 and rec.content_type == "audio/wav"
    assert rec.duration == 60.0 and rec.duration_ms_api == 60_123


# --- API: authentication, errors ---------------------------------------------------------------


def test_missing_or_wrong_token_is_401(emu: Emulator, rid: str) -> None:
    for token in (None, "wrong", ""):
        response = sign(emu, rid, token=token)
        assert response.status_code == 401
        assert isinstance(response.json()["error"], str)


def test_tokens_can_be_rotated_at_run_time(emu: Emulator, rid: str) -> None:
    emu.tokens.add("fresh")
    emu.tokens.discard(TOKEN)
    assert sign(emu, rid).status_code == 401
    assert sign(emu, rid, token="fresh").status_code == 200


def test_unknown_id_unknown_path_wrong_method_and_empty_id(emu: Emulator) -> None:
    response = sign(emu, "no-such-recording")
    assert (response.status_code, response.json()) == (404, {"error": "Recording not found"})
    response = requests.post(f"{emu.api_url}/v1/core/nothing", timeout=5)
    assert response.status_code == 404 and "error" in response.json()
    response = requests.get(endpoint(emu, "x"), headers={TOKEN_HEADER: TOKEN}, timeout=5)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    response = requests.post(
        f"{emu.api_url}/v1/core/recordings//signedUrl", headers={TOKEN_HEADER: TOKEN}, timeout=5
    )
    assert response.status_code == 422 and response.json()["name"] == "ZodError"


def test_request_body_is_ignored_and_connection_reused(emu: Emulator, rid: str) -> None:
    with requests.Session() as session:
        for body in (b"", b'{"ignored": true}', b"x" * 10_000):
            response = session.post(
                endpoint(emu, rid), data=body, headers={TOKEN_HEADER: TOKEN}, timeout=5
            )
            assert response.status_code == 200
    assert emu.stats.connections_opened["api"] == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 502, 503, 504])
def test_api_status_fault_answers_the_documented_error_body(
    emu: Emulator, rid: str, status: int
) -> None:
    emu.faults.api_status[rid] = status
    response = sign(emu, rid)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert list(response.json()) == ["error"] and isinstance(response.json()["error"], str)


def test_api_status_422_is_a_zod_error(emu: Emulator, rid: str) -> None:
    emu.faults.api_status[rid] = 422
    response = sign(emu, rid)
    assert response.status_code == 422
    assert response.json() == {
        "name": "ZodError",
        "issues": [
            {
                "code": "invalid_type",
                "expected": "string",
                "received": "undefined",
                "path": ["id"],
                "message": "Required",
            }
        ],
    }


def test_error_payload_in_a_200(emu: Emulator, rid: str) -> None:
    emu.faults.api_error_payload.add(rid)
    response = sign(emu, rid)
    assert response.status_code == 200
    assert response.json() == {
        "data": {"error": True, "errorMessage": "Recording audio is not available yet"}
    }


def test_malformed_200s(emu: Emulator, rid: str) -> None:
    emu.faults.api_malformed[rid] = "html"
    response = sign(emu, rid)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")
    emu.faults.api_malformed[rid] = "not_json"
    response = sign(emu, rid)
    assert response.headers["Content-Type"] == "application/json"
    with pytest.raises(requests.JSONDecodeError):
        response.json()
    emu.faults.api_malformed[rid] = "no_url"
    assert sign(emu, rid).json() == {"data": {"error": False}}


def test_transient_queue_then_success(emu: Emulator, rid: str) -> None:
    emu.faults.transient[rid] = [503, 502]
    assert [sign(emu, rid).status_code for _ in range(3)] == [503, 502, 200]
    assert rid not in emu.faults.transient
    assert emu.stats.api_calls[rid] == 3


def test_rate_limit_429_with_and_without_retry_after(emu: Emulator, rid: str) -> None:
    emu.faults.rate_limit = 3
    emu.faults.rate_window = 0.5
    assert [sign(emu, rid).status_code for _ in range(4)] == [200, 200, 200, 429]
    limited = sign(emu, rid)
    assert limited.json() == {"error": "Too Many Requests"}
    assert "Retry-After" not in limited.headers
    emu.faults.retry_after = "7"
    assert sign(emu, rid).headers["Retry-After"] == "7"
    assert emu.stats.rate_limited == 3
    emu.tokens.add("other")  # the limit is per token
    assert sign(emu, rid, token="other").status_code == 200
    time.sleep(0.55)  # the window slides: the accepted requests have left it
    assert sign(emu, rid).status_code == 200


def test_redirect_307_would_carry_the_token_to_another_host(emu: Emulator, rid: str) -> None:
    target = f"{emu.storage_url}/elsewhere"
    emu.faults.redirect[rid] = target
    response = sign(emu, rid, allow_redirects=False)
    assert response.status_code == 307 and response.headers["Location"] == target
    # requests follows a 307 with the custom header: the storage records the leak.
    followed = sign(emu, rid)
    assert followed.status_code == 405
    assert emu.stats.storage_headers[-1][TOKEN_HEADER] == TOKEN


def test_api_latency_and_request_times(emu: Emulator, rid: str) -> None:
    emu.faults.api_latency = 0.2
    started = time.monotonic()
    sign(emu, rid)
    assert time.monotonic() - started >= 0.2
    emu.faults.api_latency = 0.0
    sign(emu, rid)
    times = emu.stats.api_request_times
    assert len(times) == 2 and started <= times[0] <= times[1]


# --- signed URLs and the storage ---------------------------------------------------------------


def test_signed_url_shape_and_expiration_in_ms(emu: Emulator, rid: str, recs) -> None:
    before = time.time()
    data = sign(emu, rid).json()["data"]
    assert data["error"] is False
    assert before + 900 <= data["expiration"] / 1000 <= time.time() + 901
    url = urlsplit(data["url"])
    assert f"{url.scheme}://{url.netloc}" == emu.storage_url
    assert url.path == f"/siro-recordings/{rid}/audio.{recs[rid].extension}"
    query = parse_qs(url.query)
    assert query["X-Goog-Algorithm"] == ["GOOG4-HMAC-SHA256"]
    assert query["X-Goog-Expires"] in (["900"], ["901"])
    assert query["X-Goog-SignedHeaders"] == ["host"]
    assert len(query["X-Goog-Date"][0]) == 16 and query["X-Goog-Date"][0].endswith("Z")
    assert len(query["X-Goog-Signature"][0]) == 64
    assert query["X-Goog-Credential"][0].endswith("/auto/storage/goog4_request")


def test_expiration_in_seconds_and_custom_ttl(emu: Emulator, rid: str) -> None:
    emu.faults.expiration_unit = "s"
    emu.faults.url_ttl = 60
    expiration = sign(emu, rid).json()["data"]["expiration"]
    assert isinstance(expiration, int) and expiration < 1e11
    assert time.time() + 59 <= expiration <= time.time() + 61


def test_download_whole_file(emu: Emulator, recs: dict[str, Recording]) -> None:
    with requests.Session() as session:
        for rec in recs.values():
            response = session.get(signed_url(emu, rec.id), timeout=5)
            assert response.status_code == 200
            assert response.content == rec.data
            assert response.headers["Content-Length"] == str(rec.size)
            assert response.headers["Content-Type"] == rec.content_type
            assert response.headers["ETag"] == f'"{rec.sha256[:32]}"'
            assert response.headers["Accept-Ranges"] == "bytes"
            assert response.headers["Last-Modified"].endswith("GMT")
            assert response.headers["x-goog-stored-content-length"] == str(rec.size)
            md5 = base64.b64encode(hashlib.md5(rec.data).digest()).decode()
            assert response.headers["x-goog-hash"] == f"md5={md5}"
    assert emu.stats.connections_opened["storage"] == 1  # keep-alive
    assert all(TOKEN_HEADER not in headers for headers in emu.stats.storage_headers)


def test_head_answers_headers_only(emu: Emulator, rid: str, recs) -> None:
    response = requests.head(signed_url(emu, rid), timeout=5)
    assert response.status_code == 200 and response.content == b""
    assert response.headers["Content-Length"] == str(recs[rid].size)
    assert emu.stats.bytes_served[rid] == 0


def test_ranges(emu: Emulator, rid: str, recs) -> None:
    data, total = recs[rid].data, recs[rid].size
    url = signed_url(emu, rid)
    cases = {
        "bytes=100-199": (100, 199),
        f"bytes={total - 10}-": (total - 10, total - 1),
        f"bytes=5-{total + 1000}": (5, total - 1),
        "bytes=-50": (total - 50, total - 1),
    }
    for header, (start, end) in cases.items():
        response = requests.get(url, headers={"Range": header}, timeout=5)
        assert response.status_code == 206, header
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{total}"
        assert response.headers["Content-Length"] == str(end - start + 1)
        assert response.content == data[start : end + 1]
    for header in (f"bytes={total}-", f"bytes={total + 5}-{total + 9}"):
        response = requests.get(url, headers={"Range": header}, timeout=5)
        assert response.status_code == 416
        assert response.headers["Content-Range"] == f"bytes */{total}"
    response = requests.get(url, headers={"Range": "bytes=0-1,5-6"}, timeout=5)
    assert response.status_code == 200 and response.content == data  # multi-range: ignored


@pytest.mark.parametrize("setting", [True, "per-id"])
def test_ignore_range(emu: Emulator, rid: str, recs, setting) -> None:
    emu.faults.ignore_range = True if setting is True else {rid}
    response = requests.get(signed_url(emu, rid), headers={"Range": "bytes=100-"}, timeout=5)
    assert response.status_code == 200 and response.content == recs[rid].data
    assert "Content-Range" not in response.headers


def test_expired_url_is_400_expired_token_xml(emu: Emulator, rid: str) -> None:
    emu.faults.url_ttl = 0
    response = requests.get(signed_url(emu, rid), timeout=5)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/xml"
    assert response.text.startswith(
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code>"
        "<Message>Invalid argument.</Message><Details>The provided token has expired. "
        "Request signature expired at: 20"
    )
    assert response.text.endswith("</Details></Error>")


def test_expired_url_s3_style_403(emu: Emulator, rid: str) -> None:
    emu.faults.url_ttl = 0
    emu.faults.expired_status = 403
    response = requests.get(signed_url(emu, rid), timeout=5)
    assert response.status_code == 403
    assert "<Code>AccessDenied</Code><Message>Request has expired</Message>" in response.text


def test_bad_signatures_are_403(emu: Emulator, rid: str) -> None:
    url = signed_url(emu, rid)
    signature = parse_qs(urlsplit(url).query)["X-Goog-Signature"][0]
    tampered = [
        url.replace(signature, signature[::-1]),
        url.replace(f"&X-Goog-Signature={signature}", ""),
        url.replace("X-Goog-Expires=90", "X-Goog-Expires=99"),  # stretching the lifetime
        url.replace(f"/{rid}/", "/someone-else/"),
        url + "&extra=1",
    ]
    for bad in tampered:
        response = requests.get(bad, timeout=5)
        assert response.status_code == 403, bad
        assert "<Code>SignatureDoesNotMatch</Code>" in response.text
    assert requests.get(url, timeout=5).status_code == 200


def test_storage_transient_and_html(emu: Emulator, rid: str, recs) -> None:
    url = signed_url(emu, rid)
    emu.faults.storage_transient[rid] = [503, 500]
    assert [requests.get(url, timeout=5).status_code for _ in range(3)] == [503, 500, 200]
    emu.faults.storage_html.add(rid)
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.content != recs[rid].data


def test_cut_after_gives_an_incomplete_read_once(emu: Emulator, rid: str, recs) -> None:
    url = signed_url(emu, rid)
    emu.faults.cut_after[rid] = 10_000
    received = bytearray()
    with requests.get(url, stream=True, timeout=5) as response:
        assert response.headers["Content-Length"] == str(recs[rid].size)
        with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
            for chunk in response.iter_content(4096):
                received += chunk
    # urllib3 drops the partial buffer of the failed read: the client may hold fewer bytes.
    assert 0 < len(received) <= 10_000 and bytes(received) == recs[rid].data[: len(received)]
    assert emu.stats.bytes_served[rid] == 10_000
    assert requests.get(url, timeout=5).content == recs[rid].data  # once only


def test_cut_times_cuts_several_responses_and_range_resumes(emu: Emulator, rid: str, recs) -> None:
    url = signed_url(emu, rid)
    emu.faults.cut_after[rid] = 5_000
    emu.faults.cut_times[rid] = 2
    data = bytearray()
    for _ in range(3):
        headers = {"Range": f"bytes={len(data)}-"} if data else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=5) as response:
                for chunk in response.iter_content(4096):
                    data += chunk
        except requests.exceptions.ChunkedEncodingError:
            continue
    assert bytes(data) == recs[rid].data
    assert emu.stats.storage_requests[rid] == 3
    assert emu.faults.cut_after == {} and emu.faults.cut_times == {}


def test_content_length_delta(emu: Emulator, rid: str, recs) -> None:
    url = signed_url(emu, rid)
    emu.faults.content_length_delta[rid] = -100
    response = requests.get(url, timeout=5)
    assert response.status_code == 200 and response.content == recs[rid].data[:-100]
    # What gives the lie away, as on GCS: the stored length and hash of the whole object.
    assert response.headers["x-goog-stored-content-length"] == str(recs[rid].size)
    emu.faults.content_length_delta[rid] = 100
    with (
        requests.get(url, stream=True, timeout=5) as response,
        pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)),
    ):
        assert response.headers["Content-Length"] == str(recs[rid].size + 100)
        response.content  # noqa: B018


def test_stall_triggers_the_client_read_timeout(emu: Emulator, rid: str, recs) -> None:
    url = signed_url(emu, rid)
    emu.faults.stall_after[rid] = 1_000
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):  # a read timeout while streaming the body
        requests.get(url, timeout=(2, 0.5)).content  # noqa: B018
    assert 0.5 <= time.monotonic() - started < 2
    assert emu.stats.bytes_served[rid] == 1_000
    assert requests.get(url, timeout=2).content == recs[rid].data  # once only


def test_bandwidth_and_ttfb(emu: Emulator, rid: str) -> None:
    url = signed_url(emu, rid)
    emu.faults.bandwidth = 100_000
    emu.faults.storage_ttfb = 0.1
    started = time.monotonic()
    response = requests.get(url, headers={"Range": "bytes=0-39999"}, timeout=5)
    elapsed = time.monotonic() - started
    assert len(response.content) == 40_000
    assert 0.1 + 0.35 <= elapsed < 1.5


def test_total_bandwidth_is_shared_by_concurrent_responses(emu: Emulator, rid: str) -> None:
    emu.faults.total_bandwidth = 200_000
    urls = [signed_url(emu, rid) for _ in range(2)]
    sizes = []

    def fetch(url: str) -> None:
        sizes.append(len(requests.get(url, headers={"Range": "bytes=0-39999"}, timeout=5).content))

    threads = [threading.Thread(target=fetch, args=(url,)) for url in urls]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert sizes == [40_000, 40_000]
    assert 0.35 <= elapsed < 1.5  # 80 kB through one 200 kB/s downlink


_CYCLE = bytes(range(251)) * 300  # longer than a chunk plus a period


class _Pattern:
    """Byte i is i % 251: a body made slice by slice as it is sent, never held whole."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: slice) -> _Pattern | bytes:
        start, stop, _ = index.indices(len(self))
        start, stop = self.start + start, self.start + stop
        if stop - start > 64 * 1024:
            return _Pattern(start, stop)
        return _CYCLE[start % 251 : start % 251 + stop - start]


def test_a_generated_body_is_served_slice_by_slice(emu: Emulator) -> None:
    class Generated(Recording):
        sha256 = "0" * 64
        md5_base64 = "AAAAAAAAAAAAAAAAAAAAAA=="

    size = 3 * 1024 * 1024 + 5
    emu.add_recording(Generated("generated", _Pattern(0, size), "wav", 1.0))  # type: ignore[arg-type]
    url = signed_url(emu, "generated")
    response = requests.get(url, headers={"Range": "bytes=1000000-"}, timeout=10)
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 1000000-{size - 1}/{size}"
    assert response.content == bytes(i % 251 for i in range(1_000_000, size))


def test_logs_hold_no_signed_url(emu: Emulator, rid: str, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="siro_data.emulator")
    url = signed_url(emu, rid)
    requests.get(url, timeout=5)
    assert f"/siro-recordings/{rid}/audio.m4a?<redacted>" in caplog.text
    assert urlsplit(url).query not in caplog.text and "X-Goog-Signature" not in caplog.text


def test_ids_with_slash_space_and_unicode(emu: Emulator, recs) -> None:
    wav = next(rec for rec in recs.values() if rec.extension == "wav")
    for rec_id in ("a/b", "with space", "ünï—çødé 録音", "50%/100%?#&=", "..", "."):
        emu.add_recording(dataclasses.replace(wav, id=rec_id))
        url = signed_url(emu, rec_id)
        assert urlsplit(url).path.count("/") == 3
        assert requests.get(url, timeout=5).content == wav.data
        assert emu.stats.api_calls[rec_id] == 1
        assert emu.stats.storage_requests[rec_id] == 1


def test_any_id_round_trips(recs) -> None:
    flac = next(rec for rec in recs.values() if rec.extension == "flac")
    ids = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30)

    with Emulator(recordings={}, token=TOKEN) as emu, requests.Session() as session:

        @settings(max_examples=40, deadline=None)
        @given(ids)
        def round_trip(rec_id: str) -> None:
            emu.recordings[rec_id] = dataclasses.replace(flac, id=rec_id)
            response = session.post(endpoint(emu, rec_id), headers={TOKEN_HEADER: TOKEN})
            assert response.status_code == 200, response.text
            assert session.head(response.json()["data"]["url"]).status_code == 200
            assert emu.stats.api_calls[rec_id] >= 1

        round_trip()


def test_stats_count_per_id_and_reset(emu: Emulator, recs) -> None:
    first, second = list(recs)[:2]
    for rec_id in (first, first, second):
        requests.get(signed_url(emu, rec_id), timeout=5)
    stats = emu.stats
    assert stats.api_requests == 3 and stats.api_calls == {first: 2, second: 1}
    assert stats.storage_requests == {first: 2, second: 1}
    assert stats.bytes_served[first] == 2 * recs[first].size
    assert stats.total_bytes_served == 2 * recs[first].size + recs[second].size
    assert len(stats.api_headers) == 3 and stats.api_headers[0][TOKEN_HEADER] == TOKEN
    assert len(stats.storage_headers) == 3
    assert stats.connections_opened == {"api": 3, "storage": 3}
    stats.reset()
    assert stats.api_requests == 0 and not stats.api_calls and stats.total_bytes_served == 0
    assert not stats.connections_opened and not stats.api_request_times


def test_stats_snapshot_is_a_copy_and_headers_can_be_dropped(emu: Emulator, rid: str) -> None:
    requests.get(signed_url(emu, rid), timeout=5)
    snapshot = emu.stats.snapshot()
    emu.stats.forget_headers()
    sign(emu, rid)
    assert snapshot.api_requests == 1 and snapshot.api_calls == {rid: 1}
    assert snapshot.total_bytes_served == emu.stats.total_bytes_served > 0
    assert len(snapshot.api_headers) == 1 and len(snapshot.storage_headers) == 1
    assert emu.stats.api_requests == 2 and emu.stats.api_calls == {rid: 2}
    assert len(emu.stats.api_headers) == 1 and emu.stats.storage_headers == []


# --- recordings listing ------------------------------------------------------------------------


LIST_FIELDS = {
    "id": str,
    "dateCreated": str,
    "title": str,
    "userId": str,
    "repFirstName": str,
    "repLastName": str,
    "durationInMilliseconds": int,
    "result": str,
    "isPrivate": bool,
    "discoverable": bool,
    "isVideo": bool,
    "trigger": str,
}


def list_recordings(emu: Emulator, token: str | None = TOKEN, **params) -> requests.Response:
    headers = {} if token is None else {TOKEN_HEADER: token}
    return requests.get(f"{emu.api_url}/v1/core/recordings", params, headers=headers, timeout=5)


def listed(emu: Emulator, **params) -> list[dict]:
    """Every item of a listing, following the cursor."""
    items, cursor = [], params.pop("cursor", None)
    for _ in range(100):
        response = list_recordings(emu, **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "cursor"}
        items += body["data"]
        cursor = body["cursor"]
        if cursor is None:
            return items
    raise AssertionError("the cursor never ran out")


def created(rec: Recording) -> str:
    return rec.date_created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rec.date_created:%f}"[:3] + "Z"


def test_sample_metadata_is_deterministic_and_plausible(recs: dict[str, Recording]) -> None:
    assert [r.date_created for r in sample_recordings(n=3).values()] == [
        r.date_created for r in list(recs.values())[:3]
    ]
    start = SAMPLE_DATES_END - timedelta(days=SAMPLE_DATES_DAYS)
    for rec in recs.values():
        assert start < rec.date_created <= SAMPLE_DATES_END
        assert rec.date_created.tzinfo is not None and rec.date_created.microsecond % 1000 == 0
        assert (rec.user_id, rec.rep_first_name, rec.rep_last_name) in TEAMS[rec.team_id]
        assert rec.title and rec.result in ("closed", "not closed", "in progress")
    dates = [rec.date_created for rec in recs.values()]
    assert len(set(dates)) == len(dates) and max(dates) - min(dates) > timedelta(days=10)
    assert len({rec.team_id for rec in recs.values()}) == len(TEAMS)
    # Given metadata is kept; a naive date is taken as UTC.
    rec = next(iter(recs.values()))
    moved = dataclasses.replace(rec, date_created=datetime(2024, 2, 29, 12), team_id="team_x")
    assert moved.date_created == datetime(2024, 2, 29, 12, tzinfo=timezone.utc)
    assert moved.team_id == "team_x" and moved.user_id == rec.user_id


def test_listing_follows_the_cursor_newest_first(emu: Emulator, recs) -> None:
    first = list_recordings(emu, limit=5)
    assert first.status_code == 200 and first.headers["Content-Type"] == "application/json"
    assert len(first.json()["data"]) == 5 and isinstance(first.json()["cursor"], str)
    items = listed(emu, limit=5)
    assert emu.stats.listing_requests == 1 + 3  # pages of 5, 5 and 2
    assert [item["id"] for item in items] == sorted(
        recs, key=lambda rec_id: recs[rec_id].date_created, reverse=True
    )
    for item in items:
        rec = recs[item["id"]]
        assert {name: type(value) for name, value in item.items()} == LIST_FIELDS
        assert item["dateCreated"] == created(rec)
        assert item["durationInMilliseconds"] == rec.duration_ms_api
        assert item["title"] == rec.title and item["userId"] == rec.user_id
        assert item["result"] == rec.result
    assert listed(emu) == items  # one page of 100 by default
    assert list_recordings(emu).json()["cursor"] is None


def test_listing_date_filters_are_exclusive(emu: Emulator, recs) -> None:
    newest_first = sorted(recs.values(), key=lambda rec: rec.date_created, reverse=True)
    pivot = newest_first[3]
    newer = [rec.id for rec in newest_first[:3]]
    older = [rec.id for rec in newest_first[4:]]
    ids = lambda **params: [item["id"] for item in listed(emu, **params)]  # noqa: E731
    assert ids(**{"dateCreated:gt": created(pivot)}) == newer
    assert ids(**{"dateCreated:lt": created(pivot)}) == older
    one_ms = pivot.date_created - timedelta(milliseconds=1)
    assert ids(**{"dateCreated:gt": one_ms.isoformat()}) == [*newer, pivot.id]
    window = {"dateCreated:gt": created(newest_first[5]), "dateCreated:lt": created(pivot)}
    assert ids(**window) == [rec.id for rec in newest_first[4:5]]
    assert ids(**{"dateCreated:gt": "2030-01-01T00:00:00.000Z"}) == []
    naive = pivot.date_created.replace(tzinfo=None).isoformat()  # read as UTC
    assert ids(**{"dateCreated:lt": naive}) == older


def test_listing_filters_and_order(emu: Emulator, recs) -> None:
    def ids(**params) -> list[str]:
        return [item["id"] for item in listed(emu, **params)]

    north = {rec.id for rec in recs.values() if rec.team_id == "team_north"}
    assert north and set(ids(teamId="team_north")) == north
    two = {rec.id for rec in recs.values() if rec.team_id in ("team_north", "team_south")}
    assert set(ids(teamId="team_north,team_south")) == two and two != north
    assert ids(teamId="team_nowhere") == []
    closed = {rec.id for rec in recs.values() if rec.result == "closed"}
    assert closed and set(ids(result="closed")) == closed
    follow_ups = {rec.id for rec in recs.values() if rec.conversation_type == "Follow-up"}
    assert follow_ups and set(ids(conversationType="Follow-up")) == follow_ups
    assert ids(organizationId=ORGANIZATION_ID, crmLinkStatus="unlinked") == ids()
    assert ids(orderDirection="asc", limit=5) == ids()[::-1]
    by_team = ids(orderBy="teamId", orderDirection="asc", limit=4)
    assert [recs[i].team_id for i in by_team] == sorted(recs[i].team_id for i in recs)


def test_listing_cursor_neither_repeats_nor_skips_when_recordings_arrive(
    emu: Emulator, recs
) -> None:
    page = list_recordings(emu, limit=4).json()
    template = next(iter(recs.values()))
    emu.add_recording(dataclasses.replace(template, id="brand-new", date_created=SAMPLE_DATES_END))
    rest = listed(emu, limit=4, cursor=page["cursor"])
    seen = [item["id"] for item in page["data"] + rest]
    assert sorted(seen) == sorted(recs) and "brand-new" not in seen
    assert listed(emu, limit=4)[0]["id"] == "brand-new"


def test_listing_errors_are_plain_text(emu: Emulator) -> None:
    for token in (None, "wrong"):
        response = list_recordings(emu, token=token)
        assert response.status_code == 401 and response.text.startswith("Unauthorized")
        assert response.headers["Content-Type"].startswith("text/plain")
    bad = [
        ({"limit": "0"}, 400, "Invalid limit"),
        ({"limit": "101"}, 400, "Invalid limit"),
        ({"limit": "ten"}, 400, "Invalid limit"),
        ({"dateCreated:gt": "yesterday"}, 400, "Invalid dateCreated:gt"),
        ({"dateCreated[lt]": "2025-01-01"}, 400, "Unknown query parameter"),
        ({"cursor": "not-a-cursor"}, 400, "Invalid cursor"),
        ({"orderBy": "title"}, 400, "Invalid orderBy"),
        ({"orderDirection": "up"}, 400, "Invalid orderDirection"),
        ({"showFollowups": "yes"}, 400, "Invalid showFollowups"),
        ({"organizationId": "org_other"}, 403, "Forbidden"),
    ]
    for params, status, message in bad:
        response = list_recordings(emu, **params)
        assert (response.status_code, response.text[: len(message)]) == (status, message), params
        assert response.headers["Content-Type"].startswith("text/plain")
    descending = list_recordings(emu, limit=2).json()["cursor"]
    mismatch = list_recordings(emu, limit=2, orderDirection="asc", cursor=descending)
    assert mismatch.status_code == 400 and "another orderBy" in mismatch.text
    post = requests.post(f"{emu.api_url}/v1/core/recordings", headers={TOKEN_HEADER: TOKEN})
    assert post.status_code == 405 and post.headers["Allow"] == "GET"
    assert emu.stats.listing_requests == 2 + len(bad) + 3


def test_listing_shares_the_rate_limit_with_signing(emu: Emulator, rid: str) -> None:
    emu.faults.rate_limit = 2
    emu.faults.rate_window = 30.0  # long: a slow machine cannot let requests leave it
    assert list_recordings(emu).status_code == 200
    assert sign(emu, rid).status_code == 200
    limited = list_recordings(emu)
    assert (limited.status_code, limited.text) == (429, "Too Many Requests")
    assert "Retry-After" not in limited.headers
    emu.faults.retry_after = "3"
    assert list_recordings(emu).headers["Retry-After"] == "3"
    assert sign(emu, rid).status_code == 429
    assert emu.stats.rate_limited == 3
    assert emu.stats.listing_requests == 3 and emu.stats.api_requests == 5
    emu.faults.rate_window = 0.05
    time.sleep(0.06)  # the window slides: the accepted requests have left it
    assert list_recordings(emu).status_code == 200


# --- life cycle ----------------------------------------------------------------------------------


def test_stop_is_prompt_with_a_stalled_client(recs, rid: str) -> None:
    emu = Emulator(recordings=recs, token=TOKEN, faults=Faults(stall_after={rid: 100}))
    emu.start()
    url = signed_url(emu, rid)
    response = requests.get(url, stream=True, timeout=30)
    assert response.raw.read(100) == recs[rid].data[:100]  # now the handler sleeps
    idle = requests.Session()
    idle.get(url, timeout=5)  # and an idle keep-alive connection stays open
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 2
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        response.content  # noqa: B018
    assert not [t for t in threading.enumerate() if t.name.startswith("siro-emulator")]
    with pytest.raises(RuntimeError):
        emu.api_url  # noqa: B018
    idle.close()


def test_cli_prints_where_it_serves_and_stops_on_ctrl_c() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "siro_data.emulator", "--recordings", "2", "--token", "cli"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        lines = []
        while not lines or not lines[-1].startswith("Serving"):
            lines.append(process.stdout.readline())
            assert lines[-1], "the emulator exited early"
        api_url = lines[0].split()[-1]
        rec_id = next(iter(sample_recordings(n=2)))
        assert any(rec_id in line for line in lines)
        response = requests.post(
            f"{api_url}/v1/core/recordings/{rec_id}/signedUrl",
            headers={TOKEN_HEADER: "cli"},
            timeout=5,
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
        process.wait()
