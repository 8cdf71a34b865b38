"""Fixtures of the emulator's tests: the sample recordings and a fresh emulator serving them."""

from __future__ import annotations

import pytest

from siro_data.emulator import Emulator, Recording, sample_recordings

from .helpers import TOKEN


@pytest.fixture(scope="module")
def recs() -> dict[str, Recording]:
    return sample_recordings()


@pytest.fixture
def emu(recs: dict[str, Recording]):
    with Emulator(recordings=recs, token=TOKEN) as emulator:
        yield emulator


@pytest.fixture
def rid(recs: dict[str, Recording]) -> str:
    """The first sample recording's id (an .m4a)."""
    return next(iter(recs))
