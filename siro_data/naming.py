"""Recording id → file name: safe on every file system, distinct, stable.

Ids come from outside and may hold anything (``../x``, ``a/b``, control
characters, 300 characters, ``CON``). The name keeps a readable, sanitised
prefix of the id and always ends with a hash of the exact id, so two ids never
share a file, not even on case-insensitive file systems (the hash is
lower-case hex), and no name is reserved, hidden, or ends in a dot or space.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_EXTENSION = re.compile(r"[a-z0-9]{1,5}")
#: Siro's redacted audio is typically AAC in MP4.
DEFAULT_EXTENSION = "m4a"
PREFIX_LENGTH = 48
HASH_LENGTH = 16


def file_stem(recording_id: str) -> str:
    """The file name (without extension) under which a recording is stored.

    Examples
    --------
    >>> file_stem("rec_8fKq2")
    'rec_8fKq2-1df149119ab79e97'
    >>> file_stem("../../etc/passwd").startswith("etc_passwd-")
    True
    """
    prefix = _UNSAFE.sub("_", recording_id).strip("_-")[:PREFIX_LENGTH] or "id"
    digest = hashlib.sha256(recording_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{prefix}-{digest[:HASH_LENGTH]}"


def url_extension(url: str) -> str:
    """The audio file's extension, from the signed URL's path (query ignored).

    Anything that is not a short alphanumeric suffix falls back to ``m4a``.

    Examples
    --------
    >>> url_extension("https://storage.example/b/rec/audio.MP3?X-Goog-Signature=x")
    'mp3'
    >>> url_extension("https://storage.example/b/rec/audio")
    'm4a'
    """
    suffix = PurePosixPath(unquote(urlsplit(url).path)).suffix.lstrip(".").lower()
    return suffix if _EXTENSION.fullmatch(suffix) else DEFAULT_EXTENSION
