"""A local Siro emulator: the signed-URL API and a GCS-like storage, with fault switches.

Used by the tests, the demo and the benchmarks; the library itself never imports it.

>>> from siro_data.emulator import Emulator, sample_recordings
>>> with Emulator(recordings=sample_recordings(n=3), token="t") as emu:  # doctest: +SKIP
...     emu.faults.transient["some-id"] = [503]
"""

from .samples import (
    CONTENT_TYPES,
    Recording,
    encode,
    make_recording,
    sample_recordings,
    speech_like,
)
from .server import Emulator, Faults, Stats

__all__ = [
    "CONTENT_TYPES",
    "Emulator",
    "Faults",
    "Recording",
    "Stats",
    "encode",
    "make_recording",
    "sample_recordings",
    "speech_like",
]
