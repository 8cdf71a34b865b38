"""What the tests share besides fixtures: the token, retries, a token provider, checks, servers.

Fixtures live in ``conftest.py``; this module holds plain values, classes and functions. Test
files import it as ``from support import ...``: pytest puts ``tests/`` on ``sys.path``, for the
files directly in it and for the ``tests/emulator`` package alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
