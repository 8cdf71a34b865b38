"""Shared fixtures: a fresh emulator per test, the folders a run writes to, another origin,
local S3 and GCS servers and a fresh bucket on each, this machine's staging folder for a bucket.

The emulator serves the ``recordings`` fixture: a module that needs other recordings overrides
``recordings``; a test that needs a second set (or an Emulator subclass) asks ``start_emulator``.
Plain helpers (the token, fast retries, ``fetch``, the object-store servers...) are in
``support.py``.

Every cloud client's credential lookup is pinned to loopback here, at import, before any test
imports one: for the whole test run and every process it starts (``support.LOOPBACK_ENV``).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import settings
from support import (
    TOKEN,
    Bucket,
    ObjectStoreServer,
    RecordingHandler,
    fake_gcs_server,
    moto_server,
    new_gcs_bucket,
    new_s3_bucket,
    pin_to_loopback,
    require,
    serve,
)

from siro_data.archive import STAGING_ENV
from siro_data.emulator import Emulator, Recording, sample_recordings

pin_to_loopback(os.environ)

# A test run started in the background (`cmd &`, nohup, some CI runners) inherits Ctrl-C
# ignored, and so would every process it starts: the tests that interrupt the command would
# then test the launcher, not siro_data. Ctrl-C means what it means at a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Machines that run the tests are shared and busy: an example's time says nothing of the code.
settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")


@pytest.fixture
def recordings() -> dict[str, Recording]:
    """Six sample recordings of mixed formats (m4a, mp3, wav, flac, ogg)."""
    return sample_recordings(n=6)


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., Emulator]]:
    """``start_emulator(recordings, emulator_class=Emulator)``: a running emulator accepting TOKEN.

    Each one is stopped when the test ends.
    """
    with contextlib.ExitStack() as running:

        def start(
            recordings: Mapping[str, Recording] | Iterable[Recording],
            emulator_class: type[Emulator] = Emulator,
        ) -> Emulator:
            return running.enter_context(emulator_class(recordings=recordings, token=TOKEN))

        yield start


@pytest.fixture
def emulator(start_emulator: Callable[..., Emulator], recordings) -> Emulator:
    """A fresh emulator serving ``recordings`` and accepting TOKEN."""
    return start_emulator(recordings)


@pytest.fixture
def rid(recordings: Mapping[str, Recording]) -> str:
    """The id of the first recording the emulator serves."""
    return next(iter(recordings))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "recordings"


@pytest.fixture
def manifest_path(tmp_path: Path) -> Path:
    return tmp_path / "manifest.parquet"


@pytest.fixture
def other_origin() -> Iterator[ThreadingHTTPServer]:
    """Another origin on 127.0.0.1; ``other_origin.seen`` lists every request it received."""
    with serve(RecordingHandler) as server:
        yield server


def _object_store(
    start: Callable[[Path], ObjectStoreServer], log: Path, what: str
) -> Iterator[ObjectStoreServer]:
    """Run a local object store for the test run; skip (fail in CI) if it cannot start."""
    with contextlib.ExitStack() as running:
        try:
            server = running.enter_context(start(log))
        except (ImportError, OSError, RuntimeError) as error:
            require(False, f"{what} cannot start: {error}")
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[ObjectStoreServer]:
    """moto's S3 server on 127.0.0.1, once for the test run (``.endpoint``, ``.requests()``)."""
    log = tmp_path_factory.mktemp("s3-server") / "requests.log"
    yield from _object_store(moto_server, log, "moto's S3 server")


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory) -> Iterator[ObjectStoreServer]:
    """fake-gcs-server on 127.0.0.1, once for the test run (``.endpoint``, ``.requests()``)."""
    log = tmp_path_factory.mktemp("gcs-server") / "requests.log"
    yield from _object_store(fake_gcs_server, log, "fake-gcs-server")


@pytest.fixture(params=["s3", "gcs"])
def bucket(request, monkeypatch) -> Bucket:
    """A fresh, empty bucket prefix on each local object store in turn (``s3://``, ``gs://``).

    Its ``storage_options`` are for fsspec, pandas and Dask; its ``env`` (endpoint and test
    credentials, as a user's shell would give them) is set for the test.
    """
    if request.param == "s3":
        made = new_s3_bucket(request.getfixturevalue("s3_server"))
    else:
        made = new_gcs_bucket(request.getfixturevalue("gcs_server"))
    for name, value in made.env.items():
        monkeypatch.setenv(name, value)
    return made


@pytest.fixture
def staging(tmp_path, monkeypatch):
    """This machine's staging folder for the test (partials and locks of a bucket's audio)."""
    folder = tmp_path / "staging"
    monkeypatch.setenv(STAGING_ENV, str(folder))
    return folder
