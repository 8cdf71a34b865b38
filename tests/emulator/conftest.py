"""The emulator's tests serve the whole sample set (twelve recordings: every format)."""

from __future__ import annotations

import pytest

from siro_data.emulator import Recording, sample_recordings


@pytest.fixture(scope="module")
def recordings() -> dict[str, Recording]:
    return sample_recordings()
