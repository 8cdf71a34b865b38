"""Shared fixtures: a fresh emulator per test, and the folders a run writes to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from siro_data.emulator import Emulator, Recording, sample_recordings

#: Long enough to be redacted (shorter strings are not real tokens), unmistakable in output.
TOKEN = "tok-SENTINEL-3f9a1c77e2"


@pytest.fixture
def recordings() -> dict[str, Recording]:
    """Six sample recordings of mixed formats (m4a, mp3, wav, flac, ogg)."""
    return sample_recordings(n=6)


@pytest.fixture
def emulator(recordings: dict[str, Recording]) -> Iterator[Emulator]:
    with Emulator(recordings=dict(recordings), token=TOKEN) as emu:
        yield emu


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "recordings"


@pytest.fixture
def manifest_path(tmp_path: Path) -> Path:
    return tmp_path / "manifest.parquet"
