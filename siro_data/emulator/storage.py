"""The GCS-like storage the signed URLs point to: V4-style signing and its checks, object reads
with Range, and the storage faults (pacing, a shared downlink, cuts, stalls, lying lengths).

The storage is a second origin, as in production: a request that carries the API token here
is a leak, and the tests look for it in `Stats.storage_headers`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from urllib.parse import parse_qsl, quote, urlencode

from .base import HTML_PAGE, Handler, phrase, unquote_raw
from .samples import Recording

logger = logging.getLogger(__name__)

BUCKET = "siro-recordings"
OBJECT_NAME = "audio"
CHUNK_SIZE = 64 * 1024
CLIENT_EMAIL = "siro-emulator@siro-emulator.iam.gserviceaccount.com"
GOOG_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


class UrlSigner:
    """Signs object URLs as GCS V4 signing does, with a secret of its own, and checks them.

    Only the signer can make a URL the storage accepts: a tampered path, date or lifetime
    fails the check.
    """

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def sign(self, base_url: str, recording: Recording, now: float, ttl: float) -> tuple[str, int]:
        """A URL for `recording` under `base_url`, signed at `now`, and its expiry (epoch s).

        Whole seconds as in GCS: the URL lives at least `ttl`, at most a second more; a `ttl`
        of 0 or less signs a URL that has already expired.
        """
        date = math.floor(now)
        expires = math.ceil(ttl + now - date) if ttl > 0 else math.floor(ttl)
        goog_date = datetime.fromtimestamp(date, timezone.utc)
        params = {
            "X-Goog-Algorithm": "GOOG4-HMAC-SHA256",
            "X-Goog-Credential": (f"{CLIENT_EMAIL}/{goog_date:%Y%m%d}/auto/storage/goog4_request"),
            "X-Goog-Date": goog_date.strftime(GOOG_DATE_FORMAT),
            "X-Goog-Expires": str(expires),
            "X-Goog-SignedHeaders": "host",
        }
        path = _object_path(recording.id, recording.extension)
        signature = self._signature(path, params)
        url = f"{base_url}{path}?{_canonical_query(params)}&X-Goog-Signature={signature}"
        return url, date + expires

    def verify(self, rec_id: str, extension: str, params: dict[str, str]) -> bool:
        """Whether `params` (a URL's query; its signature is popped) were signed for the object."""
        signature = params.pop("X-Goog-Signature", "")
        if not signature or not {"X-Goog-Date", "X-Goog-Expires"} <= params.keys():
            return False
        expected = self._signature(_object_path(rec_id, extension), params)
        return hmac.compare_digest(signature, expected)

    def _signature(self, path: str, params: Mapping[str, str]) -> str:
        message = f"GET\n{path}\n{_canonical_query(params)}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


class Downlink:
    """The client's downlink, shared by all storage responses (`Faults.total_bandwidth`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free = 0.0  # time.monotonic() at which the downlink is idle

    def due(self, n: int, bandwidth: float | None) -> float:
        """When `n` more bytes will have crossed the downlink (0 without a limit)."""
        if not bandwidth:
            return 0.0
        with self._lock:
            self._free = max(time.monotonic(), self._free) + n / bandwidth
            return self._free


class StorageHandler(Handler):
    """GCS-like object reads: V4 signature and expiry checks, Range, chunked pacing."""

    def do_GET(self) -> None:
        self._route()

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self.drain_body()
        parsed = _parse_object_path(self.path.partition("?")[0])
        self.emu.stats.count_storage(parsed[0] if parsed else None, self.request_headers())
        self._xml_error(405, "MethodNotAllowed", "The specified method is not allowed.")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _xml_error(
        self,
        status: int,
        code: str,
        message: str,
        details: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        body += f"<Message>{message}</Message>"
        if details is not None:
            body += f"<Details>{details}</Details>"
        body += "</Error>"
        self.answer(status, body.encode(), "application/xml", headers)

    def _route(self) -> None:
        self.drain_body()
        raw_path, _, raw_query = self.path.partition("?")
        parsed = _parse_object_path(raw_path)
        emu, faults = self.emu, self.emu.faults
        emu.stats.count_storage(parsed[0] if parsed else None, self.request_headers())
        if faults.storage_ttfb > 0:
            emu.wait(faults.storage_ttfb)
        if parsed is None:
            self._xml_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        rec_id, extension = parsed
        status = emu.next_transient(faults.storage_transient, rec_id)
        if status is not None:
            self._xml_error(status, phrase(status).replace(" ", ""), phrase(status) + ".")
            return
        if rec_id in faults.storage_html:
            page = HTML_PAGE.format(title="502 Bad Gateway").encode()
            self.answer(200, page, "text/html; charset=utf-8")
            return
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if not emu.signature_ok(rec_id, extension, params):
            self._xml_error(
                403,
                "SignatureDoesNotMatch",
                "Access denied.",
                "The request signature we calculated does not match the signature you "
                "provided. Check your Google secret key and signing method.",
            )
            return
        expires_at = _expires_at(params)
        if emu.now() >= expires_at:
            self._expired(expires_at)
            return
        recording = emu.recordings.get(rec_id)
        if recording is None or recording.extension != extension:
            self._xml_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        self._send_object(recording)

    def _expired(self, expires_at: float) -> None:
        if not self.emu.faults.expired_says_why:
            self._xml_error(403, "AccessDenied", "Access denied.")
            return
        if self.emu.faults.expired_status == 403:
            self._xml_error(403, "AccessDenied", "Request has expired")
            return
        when = datetime.fromtimestamp(expires_at, timezone.utc).isoformat()
        self._xml_error(
            400,
            "ExpiredToken",
            "Invalid argument.",
            f"The provided token has expired. Request signature expired at: {when}",
        )

    def _send_object(self, recording: Recording) -> None:
        emu, faults = self.emu, self.emu.faults
        total = recording.size
        start, end, status = 0, total - 1, 200
        range_header = self.headers.get("Range")
        if range_header and not _ignores_range(faults.ignore_range, recording.id):
            asked = _parse_range(range_header, total)
            if asked is not None and asked[0] >= total:
                self._xml_error(
                    416,
                    "InvalidRange",
                    "The requested range cannot be satisfied.",
                    headers={"Content-Range": f"bytes */{total}"},
                )
                return
            if asked is not None:
                (start, end), status = asked, 206
        # bytes, or a body generated on the fly (too big to hold): an object with len() whose
        # slices are such objects too, and bytes-like once no longer than a chunk.
        data = recording.data
        body = (memoryview(data) if isinstance(data, bytes | bytearray) else data)[start : end + 1]
        delta = faults.content_length_delta.get(recording.id, 0)
        advertised = max(0, len(body) + delta)
        self.send_response(status)
        self.send_header("Content-Type", recording.content_type)
        self.send_header("Content-Length", str(advertised))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{recording.sha256[:32]}"')
        self.send_header("Last-Modified", emu.last_modified)
        # What GCS adds about the whole object, whatever the range: a client can check
        # the size and bytes it assembled against them.
        self.send_header("x-goog-stored-content-length", str(total))
        self.send_header("x-goog-hash", f"md5={recording.md5_base64}")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        if delta:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        cut = emu.take_once(faults.cut_after, faults.cut_times, recording.id)
        stall = emu.take_once(faults.stall_after, None, recording.id)
        limit = min(len(body), advertised) if cut is None else min(len(body), advertised, cut)
        if self._write_body(recording.id, body[:limit], stall) and limit < advertised:
            self.hard_close()

    def _write_body(self, rec_id: str, body: memoryview, stall: int | None) -> bool:
        """Write `body` in paced chunks; False if the client or a shutdown ended it early."""
        emu = self.emu
        bandwidth = emu.faults.bandwidth
        # At low bandwidth, smaller chunks keep the pacing smooth (about 20 per second).
        chunk = CHUNK_SIZE if not bandwidth else max(1024, min(CHUNK_SIZE, int(bandwidth / 20)))
        sent, started = 0, time.monotonic()
        while sent < len(body):
            if stall is not None and sent >= stall:
                logger.debug("stalling %r after %d bytes", rec_id, sent)
                stall = None
                if emu.wait(emu.faults.stall_seconds):
                    self.hard_close()
                    return False
            n = min(chunk, len(body) - sent)
            if stall is not None:
                n = min(n, stall - sent)
            delay = emu.link_due(n) - time.monotonic()  # the shared downlink carries them
            if delay > 0 and emu.wait(delay):
                self.hard_close()
                return False
            # Counted before writing, so that a client holding the bytes sees them counted.
            emu.stats.count_served(rec_id, n)
            try:
                self.wfile.write(body[sent : sent + n])
            except OSError:  # the client hung up
                emu.stats.count_served(rec_id, -n)
                self.close_connection = True
                return False
            sent += n
            if bandwidth:
                delay = started + sent / bandwidth - time.monotonic()
                if delay > 0 and emu.wait(delay):
                    self.hard_close()
                    return False
        return True


def _object_path(rec_id: str, extension: str) -> str:
    segment = quote(rec_id, safe="")
    if segment in (".", ".."):  # a literal dot segment would be removed by URL normalisation
        segment = segment.replace(".", "%2E")
    return f"/{BUCKET}/{segment}/{OBJECT_NAME}.{extension}"


def _parse_object_path(raw_path: str) -> tuple[str, str] | None:
    """(id, extension) of ``/siro-recordings/{id}/audio.{ext}``, or None."""
    prefix = f"/{BUCKET}/"
    if not raw_path.startswith(prefix):
        return None
    segment, slash, name = raw_path[len(prefix) :].partition("/")
    stem, dot, extension = name.partition(".")
    if not (segment and slash and dot and stem == OBJECT_NAME and extension) or "/" in name:
        return None
    return unquote_raw(segment), extension


def _canonical_query(params: Mapping[str, str]) -> str:
    return urlencode(sorted(params.items()), quote_via=quote, safe="")


def _expires_at(params: Mapping[str, str]) -> float:
    """Epoch seconds at which a (validly signed) URL expires."""
    date = datetime.strptime(params["X-Goog-Date"], GOOG_DATE_FORMAT)
    return date.replace(tzinfo=timezone.utc).timestamp() + int(params["X-Goog-Expires"])


def _ignores_range(setting: bool | set[str], rec_id: str) -> bool:
    return setting is True or (not isinstance(setting, bool) and rec_id in setting)


def _parse_range(header: str, total: int) -> tuple[int, int] | None:
    """(start, end) of a single byte range, end clamped; None if it is to be ignored.

    A start at or past `total` is returned as is: the caller answers 416.
    """
    match = _RANGE.fullmatch(header)
    if match is None or not (match[1] or match[2]):
        return None
    if not match[1]:  # suffix range: the last N bytes
        suffix = int(match[2])
        return (max(0, total - suffix), total - 1) if suffix else (total, total - 1)
    start = int(match[1])
    if match[2] and int(match[2]) < start:
        return None
    end = min(int(match[2]), total - 1) if match[2] else total - 1
    return start, end
