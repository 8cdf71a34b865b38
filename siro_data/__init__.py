"""siro_data: Siro call-recording audio on disk, with a clean table describing it.

The common case is one call::

    import siro_data
    manifest = siro_data.fetch_all(df)          # df has a "recording_id" column

The building blocks are public too, each usable alone: :class:`SiroClient`
(one id → one signed URL), :func:`download` (one URL → one file, resumable),
:func:`duration` (one audio file → seconds), :func:`read_manifest` and
:func:`write_manifest`.
"""

from ._version import __version__
from .audio import convert, duration, load_audio
from .client import SignedURL, SiroClient, sign
from .core import fetch_all
from .download import Download, download
from .exceptions import (
    AuthError,
    DownloadError,
    ExpiredURLError,
    NotAudioError,
    SiroAPIError,
    SiroDataError,
)
from .listing import list_recordings
from .manifest import COLUMNS, read_manifest, summarize, write_manifest
from .naming import file_stem
from .ratelimit import RateLimiter

__all__ = [
    "COLUMNS",
    "AuthError",
    "Download",
    "DownloadError",
    "ExpiredURLError",
    "NotAudioError",
    "RateLimiter",
    "SignedURL",
    "SiroAPIError",
    "SiroClient",
    "SiroDataError",
    "__version__",
    "convert",
    "download",
    "duration",
    "fetch_all",
    "file_stem",
    "list_recordings",
    "load_audio",
    "read_manifest",
    "sign",
    "summarize",
    "write_manifest",
]
