"""The emulator's signed URLs and storage over real sockets: every switch acts on the wire."""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import hashlib
import logging
import threading
import time
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from support import TOKEN

from siro_data.emulator import Emulator, Recording
from siro_data.sessions import TOKEN_HEADER

from .helpers import endpoint, sign, signed_url


def test_signed_url_shape_and_expiration_in_ms(emulator: Emulator, rid: str, recordings) -> None:
    before = time.time()
    data = sign(emulator, rid).json()["data"]
    assert data["error"] is False
    assert before + 900 <= data["expiration"] / 1000 <= time.time() + 901
    url = urlsplit(data["url"])
    assert f"{url.scheme}://{url.netloc}" == emulator.storage_url
    assert url.path == f"/siro-recordings/{rid}/audio.{recordings[rid].extension}"
    query = parse_qs(url.query)
    assert query["X-Goog-Algorithm"] == ["GOOG4-HMAC-SHA256"]
    assert query["X-Goog-Expires"] in (["900"], ["901"])
    assert query["X-Goog-SignedHeaders"] == ["host"]
    assert len(query["X-Goog-Date"][0]) == 16 and query["X-Goog-Date"][0].endswith("Z")
    assert len(query["X-Goog-Signature"][0]) == 64
    assert query["X-Goog-Credential"][0].endswith("/auto/storage/goog4_request")


def test_expiration_in_seconds_and_custom_ttl(emulator: Emulator, rid: str) -> None:
    emulator.faults.expiration_unit = "s"
    emulator.faults.url_ttl = 60
    expiration = sign(emulator, rid).json()["data"]["expiration"]
    assert isinstance(expiration, int) and expiration < 1e11
    assert time.time() + 59 <= expiration <= time.time() + 61


def test_download_whole_file(emulator: Emulator, recordings: dict[str, Recording]) -> None:
    with requests.Session() as session:
        for rec in recordings.values():
            response = session.get(signed_url(emulator, rec.id), timeout=5)
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
    assert emulator.stats.connections_opened["storage"] == 1  # keep-alive
    assert all(TOKEN_HEADER not in headers for headers in emulator.stats.storage_headers)


def test_head_answers_headers_only(emulator: Emulator, rid: str, recordings) -> None:
    response = requests.head(signed_url(emulator, rid), timeout=5)
    assert response.status_code == 200 and response.content == b""
    assert response.headers["Content-Length"] == str(recordings[rid].size)
    assert emulator.stats.bytes_served[rid] == 0


def test_ranges(emulator: Emulator, rid: str, recordings) -> None:
    data, total = recordings[rid].data, recordings[rid].size
    url = signed_url(emulator, rid)
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
def test_ignore_range(emulator: Emulator, rid: str, recordings, setting) -> None:
    emulator.faults.ignore_range = True if setting is True else {rid}
    response = requests.get(signed_url(emulator, rid), headers={"Range": "bytes=100-"}, timeout=5)
    assert response.status_code == 200 and response.content == recordings[rid].data
    assert "Content-Range" not in response.headers


def test_expired_url_is_400_expired_token_xml(emulator: Emulator, rid: str) -> None:
    emulator.faults.url_ttl = 0
    response = requests.get(signed_url(emulator, rid), timeout=5)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/xml"
    assert response.text.startswith(
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code>"
        "<Message>Invalid argument.</Message><Details>The provided token has expired. "
        "Request signature expired at: 20"
    )
    assert response.text.endswith("</Details></Error>")


def test_expired_url_s3_style_403(emulator: Emulator, rid: str) -> None:
    emulator.faults.url_ttl = 0
    emulator.faults.expired_status = 403
    response = requests.get(signed_url(emulator, rid), timeout=5)
    assert response.status_code == 403
    assert "<Code>AccessDenied</Code><Message>Request has expired</Message>" in response.text


@pytest.mark.parametrize("offset", [-3600.0, 3600.0])
def test_clock_offset_moves_every_date_the_emulator_gives(
    emulator: Emulator, rid: str, offset: float
) -> None:
    """One skewed clock: both Date headers, the URL's X-Goog-Date, the expiration, the expiry."""
    emulator.faults.clock_offset = offset
    emulator.faults.url_ttl = 2
    skewed = time.time() + offset
    answer = sign(emulator, rid)
    url = answer.json()["data"]["url"]
    stored = requests.get(url, timeout=5)
    query = parse_qs(urlsplit(url).query)
    signed_at = datetime.strptime(query["X-Goog-Date"][0], "%Y%m%dT%H%M%SZ")
    dates = [
        email.utils.parsedate_to_datetime(answer.headers["Date"]).timestamp(),
        email.utils.parsedate_to_datetime(stored.headers["Date"]).timestamp(),
        signed_at.replace(tzinfo=timezone.utc).timestamp(),
    ]
    assert all(abs(date - skewed) < 3 for date in dates), (dates, skewed)
    assert abs(answer.json()["data"]["expiration"] / 1000 - (skewed + 2)) < 3
    assert stored.status_code == 200  # the storage judges by the same clock that signed
    time.sleep(3)
    assert requests.get(url, timeout=5).status_code == 400  # and expires it on that clock


def test_bad_signatures_are_403(emulator: Emulator, rid: str) -> None:
    url = signed_url(emulator, rid)
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


def test_storage_transient_and_html(emulator: Emulator, rid: str, recordings) -> None:
    url = signed_url(emulator, rid)
    emulator.faults.storage_transient[rid] = [503, 500]
    assert [requests.get(url, timeout=5).status_code for _ in range(3)] == [503, 500, 200]
    emulator.faults.storage_html.add(rid)
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.content != recordings[rid].data


def test_cut_after_gives_an_incomplete_read_once(emulator: Emulator, rid: str, recordings) -> None:
    url = signed_url(emulator, rid)
    emulator.faults.cut_after[rid] = 10_000
    received = bytearray()
    with requests.get(url, stream=True, timeout=5) as response:
        assert response.headers["Content-Length"] == str(recordings[rid].size)
        with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
            for chunk in response.iter_content(4096):
                received += chunk
    # urllib3 drops the partial buffer of the failed read: the client may hold fewer bytes.
    assert 0 < len(received) <= 10_000 and bytes(received) == recordings[rid].data[: len(received)]
    assert emulator.stats.bytes_served[rid] == 10_000
    assert requests.get(url, timeout=5).content == recordings[rid].data  # once only


def test_cut_times_cuts_several_responses_and_range_resumes(
    emulator: Emulator, rid: str, recordings
) -> None:
    url = signed_url(emulator, rid)
    emulator.faults.cut_after[rid] = 5_000
    emulator.faults.cut_times[rid] = 2
    data = bytearray()
    for _ in range(3):
        headers = {"Range": f"bytes={len(data)}-"} if data else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=5) as response:
                for chunk in response.iter_content(4096):
                    data += chunk
        except requests.exceptions.ChunkedEncodingError:
            continue
    assert bytes(data) == recordings[rid].data
    assert emulator.stats.storage_requests[rid] == 3
    assert emulator.faults.cut_after == {} and emulator.faults.cut_times == {}


def test_content_length_delta(emulator: Emulator, rid: str, recordings) -> None:
    url = signed_url(emulator, rid)
    emulator.faults.content_length_delta[rid] = -100
    response = requests.get(url, timeout=5)
    assert response.status_code == 200 and response.content == recordings[rid].data[:-100]
    # What gives the lie away, as on GCS: the stored length and hash of the whole object.
    assert response.headers["x-goog-stored-content-length"] == str(recordings[rid].size)
    emulator.faults.content_length_delta[rid] = 100
    with (
        requests.get(url, stream=True, timeout=5) as response,
        pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)),
    ):
        assert response.headers["Content-Length"] == str(recordings[rid].size + 100)
        response.content  # noqa: B018


def test_stall_triggers_the_client_read_timeout(emulator: Emulator, rid: str, recordings) -> None:
    url = signed_url(emulator, rid)
    emulator.faults.stall_after[rid] = 1_000
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):  # a read timeout while streaming the body
        requests.get(url, timeout=(2, 0.5)).content  # noqa: B018
    assert 0.5 <= time.monotonic() - started < 2
    assert emulator.stats.bytes_served[rid] == 1_000
    assert requests.get(url, timeout=2).content == recordings[rid].data  # once only


def test_bandwidth_and_ttfb(emulator: Emulator, rid: str) -> None:
    url = signed_url(emulator, rid)
    emulator.faults.bandwidth = 100_000
    emulator.faults.storage_ttfb = 0.1
    started = time.monotonic()
    response = requests.get(url, headers={"Range": "bytes=0-39999"}, timeout=5)
    elapsed = time.monotonic() - started
    assert len(response.content) == 40_000
    assert 0.1 + 0.35 <= elapsed < 1.5


def test_total_bandwidth_is_shared_by_concurrent_responses(emulator: Emulator, rid: str) -> None:
    emulator.faults.total_bandwidth = 200_000
    urls = [signed_url(emulator, rid) for _ in range(2)]
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


def test_a_generated_body_is_served_slice_by_slice(emulator: Emulator) -> None:
    class Generated(Recording):
        sha256 = "0" * 64
        md5_base64 = "AAAAAAAAAAAAAAAAAAAAAA=="

    size = 3 * 1024 * 1024 + 5
    emulator.add_recording(Generated("generated", _Pattern(0, size), "wav", 1.0))  # type: ignore[arg-type]
    url = signed_url(emulator, "generated")
    response = requests.get(url, headers={"Range": "bytes=1000000-"}, timeout=10)
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 1000000-{size - 1}/{size}"
    assert response.content == bytes(i % 251 for i in range(1_000_000, size))


def test_logs_hold_no_signed_url(emulator: Emulator, rid: str, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="siro_data.emulator")
    url = signed_url(emulator, rid)
    requests.get(url, timeout=5)
    assert f"/siro-recordings/{rid}/audio.m4a?<redacted>" in caplog.text
    assert urlsplit(url).query not in caplog.text and "X-Goog-Signature" not in caplog.text


def test_ids_with_slash_space_and_unicode(emulator: Emulator, recordings) -> None:
    wav = next(rec for rec in recordings.values() if rec.extension == "wav")
    for rec_id in ("a/b", "with space", "ünï—çødé 録音", "50%/100%?#&=", "..", "."):
        emulator.add_recording(dataclasses.replace(wav, id=rec_id))
        url = signed_url(emulator, rec_id)
        assert urlsplit(url).path.count("/") == 3
        assert requests.get(url, timeout=5).content == wav.data
        assert emulator.stats.api_calls[rec_id] == 1
        assert emulator.stats.storage_requests[rec_id] == 1


def test_any_id_round_trips(recordings, start_emulator) -> None:
    flac = next(rec for rec in recordings.values() if rec.extension == "flac")
    ids = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30)
    emu = start_emulator({})

    with requests.Session() as session:

        @settings(max_examples=40, deadline=None)
        @given(ids)
        def round_trip(rec_id: str) -> None:
            emu.recordings[rec_id] = dataclasses.replace(flac, id=rec_id)
            response = session.post(endpoint(emu, rec_id), headers={TOKEN_HEADER: TOKEN})
            assert response.status_code == 200, response.text
            assert session.head(response.json()["data"]["url"]).status_code == 200
            assert emu.stats.api_calls[rec_id] >= 1

        round_trip()
