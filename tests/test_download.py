"""download() against the emulator's GCS-like storage over real sockets.

URLs come from a real SiroClient; faults are switched on in the emulator, never by mocking
``requests``. Every test also checks, on teardown, that the storage never saw the Siro token.
"""

from __future__ import annotations

import http.server
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import numpy as np
import pytest
from support import FAST_RETRIES, TOKEN, free_port, serve, sha256

from siro_data import (
    Download,
    DownloadError,
    ExpiredURLError,
    NotAudioError,
    SiroClient,
    SiroDataError,
    download,
)
from siro_data.download import partial_path
from siro_data.emulator import Emulator, Recording, make_recording
from siro_data.sessions import TOKEN_HEADER, make_session

MiB = 1 << 20


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def m4a() -> Recording:
    """Real AAC audio, a few kilobytes."""
    return make_recording("rec-m4a", 3.0)


@pytest.fixture(scope="module")
def wav() -> Recording:
    """Real PCM audio, 256 kB: big enough to be cut in the middle."""
    return make_recording("rec-wav", 8.0, "wav")


@pytest.fixture(scope="module")
def big() -> Recording:
    """8 MiB of incompressible bytes served as audio/mp4 (the downloader never decodes)."""
    data = np.random.default_rng(7).bytes(8 * MiB)
    return Recording(id="rec-big", data=data, extension="m4a", duration=0.0)


@pytest.fixture
def recordings(m4a: Recording, wav: Recording, big: Recording) -> dict[str, Recording]:
    return {rec.id: rec for rec in (m4a, wav, big)}


@pytest.fixture
def emulator(emulator: Emulator) -> Iterator[Emulator]:
    """The shared emulator, checked on teardown."""
    yield emulator
    # Whatever the test did, the storage origin never received the Siro token.
    for headers in emulator.stats.storage_headers:
        assert TOKEN_HEADER not in headers
        assert TOKEN not in " ".join(headers.values())


@pytest.fixture
def client(emulator: Emulator) -> Iterator[SiroClient]:
    with SiroClient(TOKEN, emulator.api_url, requests_per_minute=60_000) as c:
        yield c


def assert_complete(result: Download, target: Path, rec: Recording) -> None:
    """The final file is byte-identical to the recording and nothing is left beside it."""
    data = target.read_bytes()
    assert sha256(target) == rec.sha256
    assert result.sha256 == rec.sha256
    assert result.path == target
    assert result.size == rec.size == len(data)
    assert not partial_path(target).exists()


def no_secret(text: str, url: str) -> None:
    signature = parse_qs(urlsplit(url).query)["X-Goog-Signature"][0]
    assert "X-Goog-Signature" not in text
    assert signature not in text
    assert "?" not in text or "?<redacted>" in text


# --- the plain path ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["m4a", "wav", "big"])
def test_plain_download(
    emulator: Emulator,
    client: SiroClient,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    name: str,
) -> None:
    """One request, every byte once, identical file, its content type, no partial left."""
    rec: Recording = request.getfixturevalue(name)
    target = tmp_path / "out" / f"rec.{rec.extension}"
    result = download(client.sign(rec.id).url, target)
    assert_complete(result, target, rec)
    assert result.content_type == rec.content_type
    assert result.resumed_from == 0
    assert result.verified is None
    assert emulator.stats.storage_requests[rec.id] == 1
    assert emulator.stats.bytes_served[rec.id] == rec.size
    headers = emulator.stats.storage_headers[0]
    assert headers["range"] == "bytes=0-"  # asked from 0: the 206 states the true size
    assert headers["accept-encoding"] == "identity"


def test_partial_path_examples() -> None:
    """The partial sits beside the target, its suffix replaced by .part."""
    assert partial_path("data/rec-1a2b.m4a") == Path("data/rec-1a2b.part")
    assert partial_path(Path("/tmp/x/a.b.mp3")) == Path("/tmp/x/a.b.part")
    assert partial_path("noext") == Path("noext.part")
    assert partial_path("dir.v2/file.wav") == Path("dir.v2/file.part")


# --- resuming ------------------------------------------------------------------------------------


def test_resume_from_an_existing_partial(
    emulator: Emulator, client: SiroClient, wav: Recording, tmp_path: Path
) -> None:
    """A partial of N bytes is continued with Range: bytes=N-; only the rest is served."""
    n = 100_000
    target = tmp_path / "rec.wav"
    partial_path(target).write_bytes(wav.data[:n])
    result = download(client.sign(wav.id).url, target)
    assert_complete(result, target, wav)
    assert result.resumed_from == n
    assert [h.get("range") for h in emulator.stats.storage_headers] == [f"bytes={n}-"]
    assert emulator.stats.bytes_served[wav.id] == wav.size - n


@pytest.mark.parametrize("times", [1, 3])
def test_cut_mid_body_resumes(
    emulator: Emulator, client: SiroClient, wav: Recording, tmp_path: Path, times: int
) -> None:
    """A connection cut after N bytes (once or thrice) is resumed from what arrived."""
    cut = 50_000  # each answer is cut after 50 kB of its body: at 50k, 100k, 150k
    emulator.faults.cut_after[wav.id] = cut
    emulator.faults.cut_times[wav.id] = times
    target = tmp_path / "rec.wav"
    result = download(client.sign(wav.id).url, target)
    assert_complete(result, target, wav)
    assert wav.id not in emulator.faults.cut_after  # every cut happened
    assert emulator.stats.storage_requests[wav.id] == times + 1
    assert emulator.stats.bytes_served[wav.id] <= 1.1 * wav.size
    ranges = [h.get("range") for h in emulator.stats.storage_headers]
    assert ranges == [f"bytes={cut * k}-" for k in range(times + 1)]


def test_stall_mid_body_resumes_quickly(
    emulator: Emulator, client: SiroClient, wav: Recording, tmp_path: Path
) -> None:
    """A storage that stalls mid-body costs one read timeout, then the rest is resumed."""
    stall = 100_000
    emulator.faults.stall_after[wav.id] = stall
    emulator.faults.stall_seconds = 5
    target = tmp_path / "rec.wav"
    url = client.sign(wav.id).url
    started = time.monotonic()
    result = download(url, target, timeout=(2, 0.5))
    elapsed = time.monotonic() - started
    assert_complete(result, target, wav)
    assert elapsed < 4
    assert [h.get("range") for h in emulator.stats.storage_headers] == [
        "bytes=0-",
        f"bytes={stall}-",
    ]
    assert emulator.stats.bytes_served[wav.id] <= 1.1 * wav.size


def test_storage_ignoring_range_starts_over(
    emulator: Emulator, client: SiroClient, wav: Recording, tmp_path: Path
) -> None:
    """A 200 with the whole body to a Range request replaces the partial, never appends to it."""
    emulator.faults.ignore_range = True
    target = tmp_path / "rec.wav"
    partial_path(target).write_bytes(wav.data[:100_000])
    result = download(client.sign(wav.id).url, target)
    assert_complete(result, target, wav)
    assert emulator.stats.storage_headers[0]["range"] == "bytes=100000-"
    assert emulator.stats.storage_requests[wav.id] == 1
    assert emulator.stats.bytes_served[wav.id] == wav.size


def test_complete_partial_gets_416_and_is_accepted(
    emulator: Emulator, client: SiroClient, wav: Recording, tmp_path: Path
) -> None:
    """A partial already holding the whole file: one 416, no body byte served, file in place."""
    target = tmp_path / "rec.wav"
    partial_path(target).write_bytes(wav.data)
    result = download(client.sign(wav.id).url, target)
    assert_complete(result, target, wav)
    assert result.resumed_from == wav.size
    assert emulator.stats.storage_requests[wav.id] == 1
    assert emulator.stats.bytes_served[wav.id] == 0
    assert result.content_type is None  # unknown: never the 416 error page's XML type


def test_partial_longer_than_the_file_restarts(
    emulator: Emulator, client: SiroClient, wav: Recording, tmp_path: Path
) -> None:
    """A partial longer than the object (416) is discarded and the file fetched afresh."""
    target = tmp_path / "rec.wav"
    partial_path(target).write_bytes(wav.data + b"garbage" * 100)
    result = download(client.sign(wav.id).url, target)
    assert_complete(result, target, wav)
    assert [h.get("range") for h in emulator.stats.storage_headers] == [
        f"bytes={wav.size + 700}-",
        "bytes=0-",
    ]
    assert emulator.stats.bytes_served[wav.id] == wav.size


# --- lying Content-Length ------------------------------------------------------------------------


def test_short_content_length_is_not_accepted_as_complete(
    emulator: Emulator, client: SiroClient, wav: Recording, tmp_path: Path
) -> None:
    """Content-Length 1000 bytes short: the result must be the real file, or an error.

    A truncated file under the final name, with a Download claiming success, is the one
    outcome that must not happen (its sha256 would describe the wrong bytes).
    """
    emulator.faults.content_length_delta[wav.id] = -1000
    target = tmp_path / "rec.wav"
    try:
        result = download(client.sign(wav.id).url, target)
    except SiroDataError:
        assert not target.exists()
    else:
        assert target.stat().st_size == wav.size, "truncated file accepted as complete"
        assert_complete(result, target, wav)


def test_long_content_length_ends_identical_or_fails_cleanly(
    emulator: Emulator, client: SiroClient, wav: Recording, tmp_path: Path
) -> None:
    """Content-Length 1000 bytes too long (body then cut): identical file, or DownloadError."""
    emulator.faults.content_length_delta[wav.id] = 1000
    target = tmp_path / "rec.wav"
    try:
        result = download(client.sign(wav.id).url, target)
    except DownloadError:
        assert not target.exists()
    else:
        assert_complete(result, target, wav)


# --- storage refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"), [(400, "ExpiredToken"), (403, "AccessDenied")], ids=["gcs", "s3"]
)
def test_expired_url_keeps_partial_and_resumes_with_a_new_one(
    emulator: Emulator, client: SiroClient, wav: Recording, tmp_path: Path, status: int, code: str
) -> None:
    """An expired URL: ExpiredURLError (no secret in it), partial kept; a new URL continues it."""
    n = 50_000
    target = tmp_path / "rec.wav"
    partial_path(target).write_bytes(wav.data[:n])
    emulator.faults.url_ttl = 0  # signed already expired
    emulator.faults.expired_status = status  # type: ignore[assignment]
    url = client.sign(wav.id).url
    with pytest.raises(ExpiredURLError) as info:
        download(url, target)
    exc = info.value
    assert exc.status == status
    assert exc.kind == "expired_url"
    assert str(exc).startswith(f"download {status}: {code}")
    assert "expired" in str(exc).lower()
    no_secret(str(exc), url)
    assert partial_path(target).read_bytes() == wav.data[:n]
    assert not target.exists()
    assert emulator.stats.bytes_served[wav.id] == 0

    emulator.faults.url_ttl = 900
    result = download(client.sign(wav.id).url, target)
    assert_complete(result, target, wav)
    assert result.resumed_from == n
    assert [h.get("range") for h in emulator.stats.storage_headers] == [f"bytes={n}-"] * 2
    assert emulator.stats.bytes_served[wav.id] == wav.size - n


def test_html_instead_of_audio(
    emulator: Emulator, client: SiroClient, m4a: Recording, tmp_path: Path
) -> None:
    """A 200 text/html page is NotAudioError, and nothing is written."""
    emulator.faults.storage_html.add(m4a.id)
    target = tmp_path / "rec.m4a"
    url = client.sign(m4a.id).url
    with pytest.raises(NotAudioError) as info:
        download(url, target)
    assert str(info.value) == "storage answered 200 with text/html; charset=utf-8, not audio"
    assert info.value.kind == "not_audio"
    no_secret(str(info.value), url)
    assert not target.exists()
    assert not partial_path(target).exists()


def test_storage_transient_503_is_retried(
    emulator: Emulator, client: SiroClient, m4a: Recording, tmp_path: Path
) -> None:
    """One 503 from the storage is retried transparently."""
    emulator.faults.storage_transient[m4a.id] = [503]
    target = tmp_path / "rec.m4a"
    result = download(client.sign(m4a.id).url, target)
    assert_complete(result, target, m4a)
    assert emulator.stats.storage_requests[m4a.id] == 2
    assert emulator.stats.bytes_served[m4a.id] == m4a.size


def test_error_messages_never_carry_the_signature(
    emulator: Emulator, client: SiroClient, m4a: Recording, tmp_path: Path
) -> None:
    """Bad signature, persistent 500, no progress, refused connection: no URL secret in messages."""
    url = client.sign(m4a.id).url
    target = tmp_path / "rec.m4a"
    session = make_session(FAST_RETRIES)
    errors: list[DownloadError] = []

    parts = urlsplit(url)
    tampered = urlunsplit(
        parts._replace(query=parts.query.replace("X-Goog-Date=", "X-Goog-Date=1"))
    )
    with pytest.raises(DownloadError) as info:
        download(tampered, target, session=session)
    assert info.value.status == 403
    assert str(info.value) == "download 403: SignatureDoesNotMatch: Access denied."
    errors.append(info.value)

    emulator.faults.storage_transient[m4a.id] = [500] * 10
    with pytest.raises(DownloadError) as info:
        download(url, target, session=session)
    assert info.value.status == 500
    assert emulator.stats.storage_requests[m4a.id] == 1 + 6  # the tampered one, then 1 + 5 retries
    errors.append(info.value)
    emulator.faults.storage_transient.clear()

    emulator.faults.cut_after[m4a.id] = 0  # every answer cut before its first body byte
    emulator.faults.cut_times[m4a.id] = 10
    with pytest.raises(DownloadError) as info:
        download(url, target, session=session, max_stalls=2)
    assert str(info.value).startswith("download: gave up after 2 attempts without progress: ")
    assert emulator.faults.cut_times[m4a.id] == 10 - 3  # 1 + max_stalls attempts
    errors.append(info.value)

    dead = urlunsplit(parts._replace(netloc=f"127.0.0.1:{free_port()}"))
    with pytest.raises(DownloadError) as info:
        download(dead, target, session=session)
    assert info.value.status is None
    assert str(info.value).startswith("download: no answer from storage: ConnectionError")
    errors.append(info.value)

    session.close()
    for exc in errors:
        no_secret(str(exc), url)
        no_secret(exc.message, url)
        assert exc.__cause__ is None and exc.__context__ is None  # nor in the errors it replaced
    assert not target.exists()


# --- hooks ---------------------------------------------------------------------------------------


def test_verify_result_is_kept(
    emulator: Emulator, client: SiroClient, m4a: Recording, tmp_path: Path
) -> None:
    """verify sees the complete partial before the rename; its return value is Download.verified."""
    seen: list[tuple[Path, str]] = []

    def verify(path: Path) -> tuple[str, int]:
        seen.append((path, sha256(path)))
        return ("checked", path.stat().st_size)

    target = tmp_path / "rec.m4a"
    result = download(client.sign(m4a.id).url, target, verify=verify)
    assert_complete(result, target, m4a)
    assert result.verified == ("checked", m4a.size)
    assert seen == [(partial_path(target), m4a.sha256)]


def test_verify_rejecting_removes_everything(
    emulator: Emulator, client: SiroClient, m4a: Recording, tmp_path: Path
) -> None:
    """A verify that raises: its error propagates, no final file and no partial remain."""
    problem = ValueError("not a decodable audio file")

    def verify(path: Path) -> None:
        raise problem

    target = tmp_path / "rec.m4a"
    with pytest.raises(ValueError) as info:
        download(client.sign(m4a.id).url, target, verify=verify)
    assert info.value is problem
    assert not target.exists()
    assert not partial_path(target).exists()


def test_on_bytes_raising_keeps_what_was_written(
    emulator: Emulator, client: SiroClient, big: Recording, tmp_path: Path
) -> None:
    """A progress callback that raises (cancellation) stops the download, keeping the partial."""
    reported: list[int] = []

    class Cancelled(Exception):
        pass

    def on_bytes(n: int) -> None:
        reported.append(n)
        if sum(reported) >= 100_000:
            raise Cancelled

    target = tmp_path / "rec.m4a"
    with pytest.raises(Cancelled):
        download(client.sign(big.id).url, target, on_bytes=on_bytes)
    assert not target.exists()
    kept = partial_path(target).read_bytes()
    assert len(kept) == sum(reported)
    assert 100_000 <= len(kept) < big.size
    assert kept == big.data[: len(kept)]


def test_on_bytes_sums_to_the_size(
    emulator: Emulator, client: SiroClient, wav: Recording, tmp_path: Path
) -> None:
    """Progress reports add up to exactly the bytes downloaded (resumed bytes excluded)."""
    target = tmp_path / "rec.wav"
    partial_path(target).write_bytes(wav.data[:1000])
    reported: list[int] = []
    download(client.sign(wav.id).url, target, on_bytes=reported.append)
    assert sum(reported) == wav.size - 1000
    assert all(n > 0 for n in reported)


# --- secrets and resources -----------------------------------------------------------------------


def test_storage_never_receives_the_token(
    emulator: Emulator, client: SiroClient, m4a: Recording, wav: Recording, tmp_path: Path
) -> None:
    """The token goes to the API only: the storage's requests never carry it."""
    emulator.faults.cut_after[wav.id] = 50_000
    for rec in (m4a, wav):
        download(client.sign(rec.id).url, tmp_path / f"{rec.id}.{rec.extension}")
    assert len(emulator.stats.storage_headers) == 3
    assert all(TOKEN_HEADER not in headers for headers in emulator.stats.storage_headers)
    assert all(h["user-agent"].startswith("siro-data/") for h in emulator.stats.storage_headers)
    assert all(h[TOKEN_HEADER] == TOKEN for h in emulator.stats.api_headers)


def test_download_streams_in_bounded_memory(
    emulator: Emulator, client: SiroClient, big: Recording, tmp_path: Path
) -> None:
    """An 8 MiB file is streamed to disk: peak traced memory stays far below its size."""
    url = client.sign(big.id).url
    target = tmp_path / "big.m4a"
    tracemalloc.start()
    try:
        result = download(url, target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_complete(result, target, big)
    assert peak < 4 * MiB, f"peak {peak / MiB:.1f} MiB for an 8 MiB download"


def test_206_without_content_range_from_byte_0_is_the_whole_body(tmp_path: Path) -> None:
    """A server that answers our `bytes=0-` with a bare 206 still yields the file, checked."""
    body = make_recording("bare-206", 2.0).data

    class Bare206(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(206)
            self.send_header("Content-Type", "audio/mp4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serve(Bare206) as server:
        url = f"http://127.0.0.1:{server.server_port}/audio.m4a"
        result = download(url, tmp_path / "bare.m4a")
    assert result.size == len(body)
    assert (tmp_path / "bare.m4a").read_bytes() == body
