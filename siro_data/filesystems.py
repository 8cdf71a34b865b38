"""The one seam to where a run's files live: a folder on this machine, or a prefix of a bucket.

A location is a path or a URL; ``gs://`` and ``s3://`` pick an fsspec filesystem (gcsfs,
s3fs), the one pandas, pyarrow, Dask and Hugging Face ``datasets`` already speak. It is built
from ``storage_options`` as they take them (``endpoint_url``, ``key``/``secret``, ``token``,
``project``, ...), else from each provider's own chain and variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``STORAGE_EMULATOR_HOST``, ...).

:class:`Bucket` gives what the archive needs of a bucket and nothing more: sizes and MD5s of
a whole prefix in one listing (a page per 1,000 keys), a streamed upload in blocks of
:data:`UPLOAD_BLOCK` (never a whole file in memory), and the conditional writes that keep two
writers from losing each other's rows: create only if absent, replace only if unchanged since
read (S3's ``If-None-Match``/``If-Match`` through s3fs; GCS's generation preconditions through
google-cloud-storage, which gcsfs depends on and which offers them where gcsfs does not).
Credentials stay inside the filesystem: no repr, message or log line of this module shows them.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any, NamedTuple

log = logging.getLogger(__name__)

#: URL scheme → the package that serves it (what to install when it is missing).
PROTOCOLS = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}
#: Bytes an upload holds in memory at a time: s3fs's own default (50 MiB) would cost about
#: 170 MiB per stream, and a run streams one per worker.
UPLOAD_BLOCK = 8 * 2**20


def is_bucket(location: object) -> bool:
    """Whether ``location`` is a bucket URL (``gs://``, ``s3://``) rather than a local path.

    Examples
    --------
    >>> is_bucket("s3://team/siro"), is_bucket("data/recordings"), is_bucket(Path("/srv"))
    (True, False, False)
    """
    text = os.fspath(location) if isinstance(location, os.PathLike) else str(location)
    return text.split("://", 1)[0] in PROTOCOLS if "://" in text else False


@dataclass(frozen=True)
class Stat:
    """What a bucket says of one object: its size, the version a conditional replace must
    match (S3's ETag, GCS's generation), and its MD5 in hex where the store gives one (GCS
    always; S3 for an object sent in one part, whose ETag is its MD5)."""

    size: int
    version: str
    md5: str | None


class Listed(NamedTuple):
    """What a listing says of one file: its size, and its MD5 in hex where the store gives one
    (None on a disk, and for an S3 object sent in several parts)."""

    size: int
    md5: str | None


class PreconditionFailed(Exception):
    """A conditional write found the object not as expected (another writer was first)."""


class Bucket:
    """A prefix of a bucket, and the writes the archive needs of it.

    Parameters
    ----------
    url : str
        ``gs://bucket/prefix`` or ``s3://bucket/prefix``.
    storage_options : mapping, optional
        Passed to the fsspec filesystem as pandas and Dask pass theirs. Never shown.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        protocol, _, rest = url.partition("://")
        if protocol not in PROTOCOLS or not rest.strip("/"):
            raise ValueError(f"{url!r} is not a bucket URL (gs://bucket/prefix, s3://...)")
        self.protocol = "gs" if protocol == "gcs" else protocol
        self.root = rest.strip("/")
        self.url = f"{self.protocol}://{self.root}"
        self._options = dict(storage_options or {})

    @cached_property
    def fs(self) -> Any:
        """The fsspec filesystem (s3fs or gcsfs), made once, that asks the store each time:
        a listing cached from before another writer's upload would hide that object."""
        options = {"use_listings_cache": False, "skip_instance_cache": True, **self._options}
        try:
            import fsspec  # s3fs and gcsfs bring it; the plain install has neither

            return fsspec.filesystem(self.protocol, **options)
        except ImportError:
            package = PROTOCOLS[self.protocol]
            raise ValueError(
                f"{self.protocol}:// needs {package}: pip install 'siro-data[buckets]'"
            ) from None

    @property
    def name(self) -> str:
        """The bucket's own name."""
        return self.root.split("/", 1)[0]

    def join(self, *names: str) -> str:
        """The URL of ``names`` under this prefix."""
        return "/".join([self.url, *(name.strip("/") for name in names)])

    def key(self, url: str) -> str:
        """``bucket/key`` of a URL under this bucket, as fsspec names objects."""
        return url.split("://", 1)[1]

    # --- reading -------------------------------------------------------------------------------

    def sizes(self, url: str) -> dict[str, int]:
        """Every object right under ``url`` (a folder) with its size: a listing, a request
        per page of 1,000 keys (never a request per object)."""
        return {name: listed.size for name, listed in self.listed(url).items()}

    def listed(self, url: str) -> dict[str, Listed]:
        """Every object right under ``url`` (a folder) with its size and MD5, in the same one
        listing as :meth:`sizes`: GCS lists each object's ``md5Hash``, S3 its ETag."""
        try:
            found = self.fs.ls(self.key(url), detail=True)
        except FileNotFoundError:
            return {}
        return {
            f"{self.protocol}://{info['name']}": Listed(int(info["size"]), self._md5(info))
            for info in found
            if info.get("type") != "directory"
        }

    def children(self, url: str) -> list[str]:
        """What is right under ``url`` (a folder): objects, and folders as ``name/``."""
        try:
            found = self.fs.ls(self.key(url), detail=True)
        except FileNotFoundError:
            return []
        return [
            f"{self.protocol}://{info['name'].rstrip('/')}"
            + ("/" if info.get("type") == "directory" else "")
            for info in found
        ]

    def starting_with(self, folder: str, prefix: str) -> list[str]:
        """The objects right under ``folder`` whose names start with ``prefix``: one listing
        of those keys alone."""
        found = self.fs.find(self.key(folder), prefix=prefix, maxdepth=1)
        return [f"{self.protocol}://{name}" for name in found]

    def stat(self, url: str) -> Stat | None:
        """One object's size, version and MD5; None when there is no object there (nothing,
        or a folder: keys under ``url/``), in one request."""
        try:
            info = self.fs.info(self.key(url))
        except FileNotFoundError:
            return None
        if info.get("type") == "directory":
            return None
        version = info["generation"] if self.protocol == "gs" else info.get("ETag") or ""
        return Stat(int(info["size"]), str(version), self._md5(info))

    def _md5(self, info: dict[str, Any]) -> str | None:
        """An object's MD5 in hex from what fsspec says of it: GCS's ``md5Hash`` (base64), or
        S3's ETag when it is one (an ETag ending ``-<parts>`` is a multipart upload's, no MD5).
        """
        if self.protocol == "gs":
            md5 = info.get("md5Hash")
            return base64.b64decode(md5).hex() if md5 else None
        etag = str(info.get("ETag") or "").strip('"')
        return etag if etag and "-" not in etag else None

    def open(self, url: str, mode: str = "rb") -> IO[bytes]:
        """A file object on ``url`` (reads fetch ranges as they go)."""
        return self.fs.open(self.key(url), mode, block_size=UPLOAD_BLOCK)

    def read(self, url: str) -> bytes | None:
        """A small object's bytes; None when it does not exist."""
        try:
            return self.fs.cat_file(self.key(url))
        except FileNotFoundError:
            return None

    def download(self, url: str, local: Path) -> None:
        """``url`` into the local file ``local`` (streamed)."""
        self.fs.get_file(self.key(url), os.fspath(local))

    # --- writing -------------------------------------------------------------------------------

    def upload(self, local: Path, url: str) -> Stat:
        """``local`` streamed to ``url`` in blocks of :data:`UPLOAD_BLOCK`; what the store says
        of it. An object store shows an upload whole or not at all: never half under ``url``.
        """
        with local.open("rb") as source, self.open(url, "wb") as target:
            while block := source.read(UPLOAD_BLOCK):
                target.write(block)
        stat = self.stat(url)
        if stat is None:
            raise OSError(f"{url} is not in the bucket after its upload")
        return stat

    def put(self, local: Path, url: str, expected: str | None) -> None:
        """Write ``local`` to ``url`` only if it is still as read: absent (``expected`` None)
        or at version ``expected``.

        Raises
        ------
        PreconditionFailed
            Another writer created or replaced it since.
        """
        if self.protocol == "s3":
            condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
            try:
                self.fs.put_file(os.fspath(local), self.key(url), **condition)
            except FileExistsError:
                raise PreconditionFailed(url) from None
            except OSError as exc:
                if "pre-condition" in str(exc) or "Precondition" in str(exc):
                    raise PreconditionFailed(url) from None
                raise
            return
        from google.api_core.exceptions import PreconditionFailed as Refused

        blob = self._gcs_bucket.blob(self.key(url).split("/", 1)[1])
        generation = 0 if expected is None else int(expected)  # 0: only if absent
        try:
            blob.upload_from_filename(os.fspath(local), if_generation_match=generation)
        except Refused:
            raise PreconditionFailed(url) from None
        self.fs.invalidate_cache(self.key(url))

    @cached_property
    def _gcs_bucket(self) -> Any:
        """google-cloud-storage's bucket, with gcsfs's credentials, project and endpoint."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        credentials = self.fs.credentials.credentials or AnonymousCredentials()
        endpoint = self._options.get("endpoint_url")
        client = storage.Client(
            project=self.fs.project or "siro-data",
            credentials=credentials,
            client_options={"api_endpoint": endpoint} if endpoint else None,
        )
        return client.bucket(self.name)

    def remove(self, url: str) -> None:
        """Remove ``url`` (nothing when it is already gone)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.key(url))

    def check_writable(self, what: str) -> None:
        """Fail before any request, with one sentence, when nothing can be written here: no
        such bucket, no permission, no credentials.
        """
        probe = self.join(f".siro-data-probe-{secrets.token_hex(6)}")
        try:
            self.fs.pipe_file(self.key(probe), b"")
            self.remove(probe)
        except ValueError:
            raise
        except FileNotFoundError:  # gcsfs names the request, s3fs says it: one sentence
            raise ValueError(
                f"{what} {self.url} cannot be written: no bucket {self.name}"
            ) from None
        except PermissionError:
            raise ValueError(f"{what} {self.url} cannot be written: permission denied") from None
        except Exception as exc:  # the providers' other errors vary: the sentence says which
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ValueError(f"{what} {self.url} cannot be written: {reason}") from None

    def __repr__(self) -> str:
        return f"Bucket({self.url!r})"
