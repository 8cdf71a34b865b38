"""Shared fixtures: a fresh emulator per test, the folders a run writes to, another origin.

The emulator serves the ``recordings`` fixture: a module that needs other recordings overrides
``recordings``; a test that needs a second set (or an Emulator subclass) asks ``start_emulator``.
Plain helpers (the token, fast retries, ``fetch``...) are in ``support.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import settings
from support import TOKEN, RecordingHandler, serve

from siro_data.emulator import Emulator, Recording, sample_recordings

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
