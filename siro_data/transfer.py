"""One transfer from storage into a partial file: ranged requests until it holds the object.

What :func:`siro_data.download.download_partial` rests on: a ``Range`` request from the
partial's size (even from byte 0, so that ``Content-Range`` states the object's true size),
a ``206`` that must start where asked, a ``200`` that starts over, a ``416`` that is complete
only when sizes agree, every byte received before a cut kept, and what storage says of the
whole object (GCS's ``x-goog-stored-content-length`` and ``x-goog-hash``, else
``Content-Range`` or ``Content-Length``). Running SHA-256 and MD5 digests follow the bytes.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from .exceptions import DownloadError, ExpiredURLError, NotAudioError
from .sessions import describe_error, redact

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
GOOG_MD5 = re.compile(r"md5=([A-Za-z0-9+/=]+)")
XML_FIELD = re.compile(r"<(Code|Message)>([^<]*)</\1>")
#: Content types of error pages, never of audio.
NOT_AUDIO_TYPES = re.compile(r"^text/|^application/(json|xml|xhtml\+xml)$|\+(json|xml)$")


class Interrupted(Exception):
    """The body stopped short, or the server's answer calls for another attempt."""


class Partial:
    """The ``.part`` file and running digests of what it holds (SHA-256 ours, MD5 as GCS's)."""

    def __init__(
        self,
        path: Path,
        on_bytes: Callable[[int], None] | None,
        on_size: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self.on_bytes = on_bytes
        self.on_size = on_size
        #: The type of the bytes received in this call (unknown for an earlier run's).
        self.content_type: str | None = None
        self._empty()
        if path.exists():
            with path.open("rb") as existing:
                while chunk := existing.read(CHUNK_SIZE):
                    self._digest(chunk)

    def _empty(self) -> None:
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)

    @property
    def md5_hex(self) -> str:
        return self.md5.hexdigest()

    def _digest(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.md5.update(chunk)
        self.size += len(chunk)

    def announced(self, size: int | None) -> None:
        """The server said how large the file is: say once how many bytes are to come."""
        if self.on_size and size is not None:
            self.on_size(max(size - self.size, 0))
            self.on_size = None

    def restart(self) -> None:
        self.path.unlink(missing_ok=True)
        self._empty()

    def append(self, chunks: Iterable[bytes]) -> None:
        try:
            with self.path.open("ab") as out:
                for chunk in chunks:
                    out.write(chunk)
                    self._digest(chunk)
                    if self.on_bytes:
                        self.on_bytes(len(chunk))
        except OSError as exc:  # a failed write does not say which file: this one
            exc.filename = exc.filename or str(self.path)
            raise


@dataclass(frozen=True)
class Described:
    """What the storage said of the whole object: its type and, where given, its size and MD5."""

    content_type: str | None
    size: int | None = None
    md5: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], total: int | None) -> Described:
        stored = headers.get("x-goog-stored-content-length", "")
        md5 = GOOG_MD5.search(headers.get("x-goog-hash", ""))
        return cls(
            headers.get("Content-Type"),
            int(stored) if stored.isdigit() else total,
            md5.group(1) if md5 else None,
        )


def fetch_into(
    session: requests.Session,
    url: str,
    partial: Partial,
    timeout: tuple[float, float],
    max_stalls: int,
) -> Described:
    """Request until the partial holds the whole object; what the storage said of it."""
    stalls = 0
    while True:
        before = partial.size
        try:
            return attempt(session, url, partial, timeout)
        except Interrupted as exc:
            stalls = 0 if partial.size > before else stalls + 1
            log.debug("download interrupted at %d bytes: %s", partial.size, exc)
            if stalls > max_stalls:
                message = f"gave up after {max_stalls} attempts without progress: {exc}"
                raise DownloadError(message) from None


def attempt(
    session: requests.Session, url: str, partial: Partial, timeout: tuple[float, float]
) -> Described:
    """One request: append what it brings to the partial, or say why not."""
    offset = partial.size
    # A range even from 0: the 206's Content-Range then states the object's true size,
    # which a wrong Content-Length cannot hide.
    headers = {"Accept-Encoding": "identity", "Range": f"bytes={offset}-"}
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as exc:
        raise DownloadError(f"no answer from storage: {describe_error(exc)}") from None
    with response:
        status = response.status_code
        if status == 416:
            total = content_range(response)[1]
            if total is not None and offset == total:
                # The 416's own type is its error page's: keep what the body came with.
                return Described(content_type=partial.content_type, size=total)
            if total is not None and offset > total:
                partial.restart()
                raise Interrupted(f"partial of {offset} bytes is longer than the file ({total})")
            raise DownloadError(f"range from {offset} not satisfiable (size {total})", 416)
        if status not in (200, 206):
            message = storage_message(response)
            if status in (400, 401, 403) and "expired" in message.lower():
                raise ExpiredURLError(message, status)
            raise DownloadError(message, status)
        content_type = response.headers.get("Content-Type", "")
        if NOT_AUDIO_TYPES.search(content_type.split(";")[0].strip().lower()):
            raise NotAudioError(f"storage answered {status} with {content_type}, not audio")
        start, total = content_range(response)
        if status == 206 and start is None and offset == 0:
            status = 200  # no Content-Range: the body is whole from byte 0, sized by its length
        if status == 206:
            if start != offset:
                partial.restart()
                raise Interrupted(f"206 started at byte {start}, not at {offset} as asked")
        else:
            if offset:
                log.debug("storage ignored Range: starting over from byte 0")
                partial.restart()
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
        described = Described.from_headers(response.headers, total)
        partial.announced(described.size)
        partial.content_type = described.content_type
        partial.append(body(response))
    if described.size is not None and partial.size < described.size:
        raise Interrupted(f"body ended at {partial.size} of {described.size} bytes")
    if described.size is not None and partial.size > described.size:
        partial.restart()
        raise DownloadError(f"received more bytes than the {described.size} announced")
    return described


def body(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: ``read1`` hands over every byte received before a cut."""
    while True:
        try:
            chunk = response.raw.read1(CHUNK_SIZE, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Interrupted(describe_error(exc)) from None
        if not chunk:
            return
        yield chunk


def content_range(response: requests.Response) -> tuple[int | None, int | None]:
    """``(start, total)`` from ``Content-Range``; ``None`` for what it does not say."""
    match = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if not match:
        return None, None
    start, _end, total = match.groups()
    return (
        int(start) if start is not None else None,
        int(total) if total and total != "*" else None,
    )


def storage_message(response: requests.Response) -> str:
    """The storage's own ``Code: Message`` (GCS/S3 XML), or a short excerpt of its body."""
    try:
        text = response.raw.read(65536, decode_content=True).decode("utf-8", "replace")
    except (urllib3.exceptions.HTTPError, OSError):
        text = ""  # the status alone will have to do
    fields = dict(XML_FIELD.findall(text))
    if fields:
        message = ": ".join(fields[key].strip() for key in ("Code", "Message") if key in fields)
    else:
        message = " ".join(text.split())[:200] or response.reason or "no message"
    return redact(message)
