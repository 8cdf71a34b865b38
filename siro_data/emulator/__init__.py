"""A local Siro emulator: the signed-URL API and a GCS-like storage, with fault switches.

Used by the tests, the demo and the benchmarks; the library itself never imports it.

>>> import requests
>>> from siro_data.emulator import Emulator, sample_recordings
>>> with Emulator(recordings=sample_recordings(n=3), token="t") as emu:
...     rec_id = next(iter(emu.recordings))
...     emu.faults.transient[rec_id] = [503]
...     url = f"{emu.api_url}/v1/core/recordings/{rec_id}/signedUrl"
...     first = requests.post(url, headers={"x-siro-auth-token": "t"})
...     second = requests.post(url, headers={"x-siro-auth-token": "t"})
>>> first.status_code, second.status_code, second.json()["data"]["error"]
(503, 200, False)
"""

from .emulator import Emulator
from .faults import Faults
from .samples import (
    CONTENT_TYPES,
    Recording,
    encode,
    make_recording,
    sample_recordings,
    speech_like,
)
from .stats import Stats

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
