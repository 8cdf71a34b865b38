"""siro_data: Siro call-recording audio on disk, with a clean table describing it.

The common case is one call::

    import siro_data
    manifest = siro_data.fetch_all(df)          # df has a "recording_id" column
    daily = siro_data.sync(since="2025-05-01")  # what appeared since the last sync
    siro_data.prune(older_than="90d")           # a retention rule: older audio removed

The building blocks are public too, each usable alone: :class:`SiroClient`
(one id → one signed URL), :func:`download` and :class:`Downloader` (one URL →
one file, resumable), :func:`duration` (one audio file → seconds),
:func:`read_manifest` and :func:`write_manifest`. What a run shows is a
:class:`Reporter`: :class:`Panel` (with a Stop button) in a notebook,
:class:`TqdmProgress` in a terminal, :class:`LogProgress` in a pipeline's log,
or your own. :func:`to_hf_dataset` and :func:`to_nemo_manifest` hand a
manifest to the speech-data tools; :func:`verify` checks an archive's files against its
manifest.
"""

from ._version import __version__
from .api import fetch_all
from .audio import AudioInfo, convert, duration, load_audio, probe
from .client import SignedURL, SiroClient, sign
from .download import Download, Downloader, download
from .exceptions import (
    AuthError,
    DownloadError,
    ExpiredURLError,
    LocalFileError,
    NotAudioError,
    SiroAPIError,
    SiroDataError,
    UnavailableError,
)
from .export import to_hf_dataset, to_nemo_manifest
from .listing import list_recordings
from .manifest import read_manifest, write_manifest
from .progress import LogProgress, Reporter, TqdmProgress
from .ratelimit import RateLimiter
from .retention import Removal, prune
from .rows import COLUMNS
from .summary import summarize
from .sync import SyncResult, sync
from .sync_state import read_recordings
from .tokens import TokenMinter
from .verify import VerifyReport, verify
from .widgets import Panel

__all__ = [
    "COLUMNS",
    "AudioInfo",
    "AuthError",
    "Download",
    "DownloadError",
    "Downloader",
    "ExpiredURLError",
    "LocalFileError",
    "LogProgress",
    "NotAudioError",
    "Panel",
    "RateLimiter",
    "Removal",
    "Reporter",
    "SignedURL",
    "SiroAPIError",
    "SiroClient",
    "SiroDataError",
    "SyncResult",
    "TokenMinter",
    "TqdmProgress",
    "UnavailableError",
    "VerifyReport",
    "__version__",
    "convert",
    "download",
    "duration",
    "fetch_all",
    "list_recordings",
    "load_audio",
    "probe",
    "prune",
    "read_manifest",
    "read_recordings",
    "sign",
    "summarize",
    "sync",
    "to_hf_dataset",
    "to_nemo_manifest",
    "verify",
    "write_manifest",
]
