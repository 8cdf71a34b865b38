"""The emulator for a benchmark, in a process of its own (see ``_common.EmulatorProcess``).

Argument: one JSON object ``{"spec": ..., "faults": ..., "token": ...}``. It prints one JSON
line (URLs, ids, sizes), then answers each ``stats`` line on stdin with one JSON line of
counters, and stops when stdin closes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from siro_data.emulator import Emulator, Faults, Recording

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_recordings, recording_ids

#: The server writes at most this much at once: longer slices of a generated body stay lazy.
_LAZY_ABOVE = 64 * 1024


class GeneratedWav:
    """A WAV file of about `size` bytes made slice by slice as it is sent, never held whole.

    A real header (48 kHz, stereo, 16-bit PCM) and one second of a two-tone signal,
    repeated. Slices longer than a server chunk are windows on it; shorter ones are bytes.
    """

    RATE, CHANNELS, WIDTH = 48_000, 2, 2

    def __init__(self, size: int) -> None:
        frame = self.CHANNELS * self.WIDTH
        data_size = (size - 44) // frame * frame
        self.header = b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE"
        self.header += b"fmt " + struct.pack(
            "<IHHIIHH", 16, 1, self.CHANNELS, self.RATE, self.RATE * frame, frame, 8 * self.WIDTH
        )
        self.header += b"data" + struct.pack("<I", data_size)
        t = np.arange(self.RATE) / self.RATE
        tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t)
        pcm = (np.repeat(tone, self.CHANNELS) * 32767).astype("<i2").tobytes()
        self.period = pcm
        self._twice = pcm * 2  # any slice up to a period long, without wrapping
        self.total = len(self.header) + data_size
        self.duration = data_size / (self.RATE * frame)
        self.start, self.stop = 0, self.total

    def window(self, start: int, stop: int) -> GeneratedWav:
        view = object.__new__(GeneratedWav)
        view.__dict__.update(self.__dict__)
        view.start, view.stop = start, stop
        return view

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: slice) -> GeneratedWav | bytes:
        start, stop, _ = index.indices(len(self))
        start, stop = self.start + start, self.start + stop
        if stop - start > _LAZY_ABOVE:
            return self.window(start, stop)
        return self.read(start, stop)

    def read(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the whole file (stop - start at most one period)."""
        head = self.header[start:stop] if start < len(self.header) else b""
        start = max(start, len(self.header))
        if stop <= start:
            return head
        offset = (start - len(self.header)) % len(self.period)
        return head + self._twice[offset : offset + stop - start]

    def digests(self) -> tuple[str, str]:
        """(sha256 hex, md5 base64) of the whole file, computed piece by piece."""
        sha256, md5 = hashlib.sha256(), hashlib.md5()
        step = len(self.period)
        for position in range(0, self.total, step):
            piece = self.read(position, min(position + step, self.total))
            sha256.update(piece)
            md5.update(piece)
        return sha256.hexdigest(), base64.b64encode(md5.digest()).decode()


def _with_digests(recording: Recording, sha256: str, md5_base64: str) -> Recording:
    # Recordings that share their bytes share their digests: fill the cached properties
    # instead of hashing the same bytes for every id.
    vars(recording)["sha256"] = sha256
    vars(recording)["md5_base64"] = md5_base64
    return recording


def build(spec: dict[str, Any]) -> dict[str, Recording]:
    kind = spec["kind"]
    if kind == "none":
        return {}
    if kind == "big":
        body = GeneratedWav(int(spec["size"]))
        sha256, md5 = body.digests()
        recording = Recording("big-recording", body, "wav", body.duration)  # type: ignore[arg-type]
        return {recording.id: _with_digests(recording, sha256, md5)}
    ids = recording_ids(int(spec["n"]), int(spec.get("seed", 0)))
    if kind == "tiny":
        buffer = io.BytesIO()
        sf.write(buffer, np.zeros(2_000, dtype=np.float32), 8_000, format="WAV", subtype="PCM_16")
        bases = [(buffer.getvalue(), 0.25)]
    elif kind == "realistic":
        bases = [
            (path.read_bytes(), float(path.stem.split("-")[1].removesuffix("min")) * 60)
            for path in base_recordings()
        ]
    else:
        raise ValueError(f"unknown recordings kind {kind!r}")
    extension = "wav" if kind == "tiny" else "m4a"
    digests = [
        (hashlib.sha256(data).hexdigest(), base64.b64encode(hashlib.md5(data).digest()).decode())
        for data, _ in bases
    ]
    recordings = {}
    for index, rec_id in enumerate(ids):
        (data, duration), (sha256, md5) = bases[index % len(bases)], digests[index % len(bases)]
        recordings[rec_id] = _with_digests(
            Recording(rec_id, data, extension, duration), sha256, md5
        )
    return recordings


def stats(emulator: Emulator) -> dict[str, Any]:
    emulator.stats.forget_headers()  # only counts are needed: keep memory flat
    counters = emulator.stats.snapshot()
    times = os.times()
    return {
        "api_requests": counters.api_requests,
        "rate_limited": counters.rate_limited,
        "connections": dict(counters.connections_opened),
        "storage_requests": sum(counters.storage_requests.values()),
        "bytes_served": counters.total_bytes_served,
        "cpu": times.user + times.system,
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    recordings = build(config["spec"])
    faults = Faults(**config["faults"])
    with Emulator(recordings=recordings, token=config["token"], faults=faults) as emulator:
        print(
            json.dumps(
                {
                    "api_url": emulator.api_url,
                    "storage_url": emulator.storage_url,
                    "ids": list(recordings),
                    "sizes": [recording.size for recording in recordings.values()],
                }
            ),
            flush=True,
        )
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps(stats(emulator)), flush=True)


if __name__ == "__main__":
    main()
