"""Resumable, atomic download of one URL to one file; the Downloader that owns a recording's
whole download.

Bytes stream into ``<stem>.part`` beside the target; an interrupted partial is
continued with an HTTP ``Range`` request from its size (:mod:`siro_data.transfer`);
the file is renamed into place only once its size matches what the server
announced, its MD5 matches GCS's ``x-goog-hash`` where given, and an optional
check accepts it. A crash at any moment leaves either the partial, to be
continued, or the complete file: never a half file under the final name.
:class:`Downloader` holds what every download of a run shares, and signs again
and continues whenever a recording's URL expires.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import requests
import urllib3

from .exceptions import DownloadError, ExpiredURLError
from .sessions import (
    DEFAULT_TIMEOUT,
    ThreadSessions,
    make_session,
    retry_policy,
)
from .transfer import Partial, fetch_into

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Download:
    """What :func:`download` delivered.

    Attributes
    ----------
    path : pathlib.Path
        The complete file.
    size : int
        Its size in bytes.
    sha256 : str
        Hex digest of its content.
    content_type : str or None
        As the server announced it.
    resumed_from : int
        Bytes already on disk from an earlier, interrupted attempt.
    verified : object
        What ``verify`` returned (for instance the audio's duration), else None.
    md5 : str
        Hex MD5 of its content: what object stores state of an object (an S3 ETag, GCS's
        md5Hash), to compare an upload with.
    """

    path: Path
    size: int
    sha256: str
    content_type: str | None
    resumed_from: int
    verified: object = None
    md5: str = ""


class Signed(Protocol):
    """A signed URL, as :meth:`Downloader.fetch` uses it (:class:`siro_data.SignedURL` is one)."""

    url: str

    def expires_within(self, seconds: float) -> bool: ...


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where the bytes of ``path`` accumulate until the file is complete.

    Examples
    --------
    >>> partial_path("data/rec-1a2b.m4a").as_posix()
    'data/rec-1a2b.part'
    """
    return Path(path).with_suffix(".part")


def partial_size_of(partial: str | os.PathLike[str]) -> int:
    """Bytes a partial file holds (0 when there is none)."""
    try:
        return os.stat(partial).st_size
    except OSError:
        return 0


def download(
    url: str,
    path: str | os.PathLike[str],
    *,
    session: requests.Session | None = None,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    max_stalls: int = 5,
    verify: Callable[[Path], object] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_size: Callable[[int], None] | None = None,
) -> Download:
    """Download ``url`` to ``path``, continuing a partial left by an earlier attempt.

    Parameters
    ----------
    url : str
        The (signed) URL. It never appears in messages or logs.
    path : path-like
        The final file. Its partial is :func:`siro_data.download.partial_path` of it.
    session : requests.Session, optional
        Reused for its connections; one is made for the call otherwise.
    timeout : (float, float)
        Connect and read timeouts: a stalled server costs one attempt.
    max_stalls : int
        Attempts in a row that bring no new byte before giving up.
    verify : callable, optional
        Called with the complete partial before it is renamed into place;
        raising rejects the file (the partial is deleted, the error propagates).
        What it returns is kept as ``Download.verified``.
    on_bytes : callable, optional
        Called with the size of every chunk written (progress, cancellation).
    on_size : callable, optional
        Called once, when storage first says the file's size, with the bytes
        still to come (the size less what a partial already holds): an ETA's input.

    Returns
    -------
    Download

    Raises
    ------
    ExpiredURLError
        The URL expired: sign again and call again, the partial is kept.
    DownloadError
        Storage refused or kept failing; the partial is kept for a later run.
    NotAudioError
        Storage answered an HTML, JSON or XML page instead of audio.

    Examples
    --------
    >>> from siro_data import SiroClient
    >>> from siro_data.emulator import Emulator
    >>> import tempfile, pathlib
    >>> with Emulator() as emu, SiroClient(emu.token, emu.api_url) as client:
    ...     rec_id = next(iter(emu.recordings))
    ...     target = pathlib.Path(tempfile.mkdtemp()) / "one.m4a"
    ...     result = download(client.sign(rec_id).url, target)
    ...     result.size == len(emu.recordings[rec_id].data)
    True
    """
    path = Path(path)
    settings = {"session": session, "timeout": timeout, "max_stalls": max_stalls}
    complete = download_partial(
        url, partial_path(path), verify=verify, on_bytes=on_bytes, on_size=on_size, **settings
    )
    os.replace(complete.path, path)
    return replace(complete, path=path)


def download_partial(
    url: str,
    partial: str | os.PathLike[str],
    *,
    session: requests.Session | None = None,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    max_stalls: int = 5,
    verify: Callable[[Path], object] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_size: Callable[[int], None] | None = None,
) -> Download:
    """:func:`download`'s bytes and checks, into ``partial``, which is not renamed: the
    caller puts the complete file in place (a rename, an upload to a bucket).

    Returns the complete, checked partial (``Download.path`` is ``partial``).
    """
    partial_file = Path(partial)
    partial_file.parent.mkdir(parents=True, exist_ok=True)
    held = Partial(partial_file, on_bytes, on_size)
    resumed_from = held.size
    own_session = session is None
    session = session or make_session()
    try:
        described = fetch_into(session, url, held, timeout, max_stalls)
    except DownloadError as exc:
        exc.__context__ = None  # the errors it replaced name the signed URL
        raise
    finally:
        if own_session:
            session.close()
    if described.md5 and described.md5 != base64.b64encode(held.md5.digest()).decode():
        held.restart()
        raise DownloadError("content does not match the MD5 the storage announced")
    verified = None
    if verify is not None:
        try:
            verified = verify(held.path)
        except Exception:
            held.path.unlink(missing_ok=True)
            raise
    digest = held.sha256.hexdigest()
    return Download(
        held.path, held.size, digest, described.content_type, resumed_from, verified, held.md5_hex
    )


class Downloader:
    """The storage side of a run: a Session per thread, timeouts, retries, expiring URLs.

    As :class:`siro_data.SiroClient` holds the API side, a Downloader holds
    what every download of a run shares; :func:`siro_data.fetch_all` makes
    one, or takes yours (``downloader=``) to change its policy.

    Parameters
    ----------
    timeout : (float, float)
        Connect and read timeouts in seconds.
    retries : urllib3.util.Retry, optional
        Retry policy of the storage requests; default
        :func:`siro_data.sessions.retry_policy`.
    max_stalls : int
        Attempts in a row that bring no new byte before a download gives up.
    max_fruitless_urls : int
        Fresh signed URLs in a row that expire without bringing a new byte
        before a recording is given up. A long download may outlive many
        URLs: each that makes progress is welcome.

    Examples
    --------
    >>> from siro_data import SiroClient
    >>> from siro_data.emulator import Emulator
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with Emulator() as emu, SiroClient(emu.token, emu.api_url) as client, Downloader() as d:
    ...     results = [d.download(client.sign(rec_id).url, folder / f"{n}.audio")
    ...                for n, rec_id in enumerate(list(emu.recordings)[:2])]
    >>> [result.size > 0 for result in results]
    [True, True]
    """

    def __init__(
        self,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retries: urllib3.util.Retry | None = None,
        max_stalls: int = 5,
        max_fruitless_urls: int = 3,
    ) -> None:
        self.timeout = timeout
        self.max_stalls = max_stalls
        self.max_fruitless_urls = max_fruitless_urls
        self._sessions = ThreadSessions(retries or retry_policy())

    def download(
        self,
        url: str,
        path: str | os.PathLike[str],
        *,
        verify: Callable[[Path], object] | None = None,
        on_bytes: Callable[[int], None] | None = None,
        on_size: Callable[[int], None] | None = None,
    ) -> Download:
        """:func:`download` on this thread's Session, with this downloader's policy."""
        return download(
            url,
            path,
            session=self._sessions.get(),
            timeout=self.timeout,
            max_stalls=self.max_stalls,
            verify=verify,
            on_bytes=on_bytes,
            on_size=on_size,
        )

    def fetch(
        self,
        signed: Signed,
        partial: str | os.PathLike[str],
        *,
        renew: Callable[[], Signed],
        verify: Callable[[Path], object] | None = None,
        on_bytes: Callable[[int], None] | None = None,
        on_size: Callable[[int], None] | None = None,
    ) -> Download:
        """One recording's whole download into ``partial``, from its signed URL, signed again
        and continued whenever the URL expires; the complete, checked partial.

        A fresh URL is always tried, whatever this machine's clock says of it: a clock
        minutes or hours off must not give up a recording storage would serve. Only
        storage's refusal of a URL held during a download says it expired (:meth:`expired`).
        A long download may outlive many URLs: each that brings bytes is welcome, and the
        recording is given up after ``max_fruitless_urls`` in a row that bring none.

        Parameters
        ----------
        signed : SignedURL
            The first URL.
        partial : path-like
            Where the bytes accumulate (continued when it holds some).
        renew : callable
            Returns a fresh signed URL for the same recording.
        verify, on_bytes, on_size
            As :func:`download` takes them.

        Raises
        ------
        DownloadError
            Storage refused, kept failing, or the URLs kept expiring without progress.
        NotAudioError
            What storage sent is not audio.
        """
        fruitless = 0
        while True:
            held = partial_size_of(partial)
            try:
                return download_partial(
                    signed.url,
                    partial,
                    session=self._sessions.get(),
                    timeout=self.timeout,
                    max_stalls=self.max_stalls,
                    verify=verify,
                    on_bytes=on_bytes,
                    on_size=on_size,
                )
            except DownloadError as exc:
                if not self.expired(exc, signed.expires_within(0)):
                    raise
                fruitless = 0 if partial_size_of(partial) > held else fruitless + 1
                if fruitless >= self.max_fruitless_urls:
                    raise DownloadError(
                        f"signed URL expired {self.max_fruitless_urls} times in a row"
                        " without progress"
                    ) from None
            log.info("signed URL expired, asking for a fresh one")
            signed = renew()

    @staticmethod
    def expired(error: DownloadError, past_expiration: bool) -> bool:
        """Whether ``error`` means the URL expired: sign again and continue.

        Storage said so (``ExpiredToken``, "expired"): that is the signal. Failing it,
        a refusal (400/401/403) of a URL whose expiration has passed, since some stores
        answer a bare ``403 AccessDenied``.

        Parameters
        ----------
        error : DownloadError
            What the download raised.
        past_expiration : bool
            Whether the URL's expiration has passed *on the API's clock*
            (:meth:`siro_data.SignedURL.expires_within`: this machine's clock
            corrected by the skew measured when it was signed). This machine's
            clock alone would take a real refusal for an expiry when it runs
            ahead, and miss an expiry when it runs behind.
        """
        refused = error.status in (400, 401, 403)
        return isinstance(error, ExpiredURLError) or (refused and past_expiration)

    def close(self) -> None:
        """Close the connections of every thread."""
        self._sessions.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Downloader(timeout={self.timeout}, max_fruitless_urls={self.max_fruitless_urls})"
