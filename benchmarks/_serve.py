"""The emulator for a benchmark, in a process of its own (see ``_common.EmulatorProcess``).

Argument: one JSON object ``{"spec": ..., "faults": ..., "token": ...}``. It prints one JSON
line (URLs, ids, sizes), then answers each command line on stdin with one JSON line, and stops
when stdin closes: ``stats``, the counters; ``day``, for a growing archive (spec kind
``growing``), publish the next day's recordings.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import io
import json
import os
import struct
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import soundfile as sf

import siro_data.emulator.api
from siro_data.emulator import Emulator, Faults, Recording
from siro_data.emulator.listing import MAX_LIMIT, _date, _decode_cursor, iso_ms, list_page

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


def _tiny() -> tuple[bytes, float]:
    """A 4 kB WAV (a quarter of a second of silence at 8 kHz) and its duration."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(2_000, dtype=np.float32), 8_000, format="WAV", subtype="PCM_16")
    return buffer.getvalue(), 0.25


class GrowingArchive:
    """Siro's archive as it grows: ``past_days`` days of ``per_day`` recordings from ``start``,
    then one more day at each ``day`` command.

    A day's recordings are created evenly over it (whole milliseconds), except ``late`` ones,
    created two days earlier (before the watermark of the last sync: the overlap finds them);
    ``not_ready`` of them answer "not available yet" until the next day is published.
    All are tiny WAVs.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.per_day = int(spec["per_day"])
        self.past_days = int(spec["past_days"])
        self.late = int(spec.get("late", 0))
        self.not_ready = int(spec.get("not_ready", 0))
        self.start = datetime.fromisoformat(spec["start"])
        self.seed = int(spec.get("seed", 2))
        self.day = self.past_days  # the next day to publish
        self.waiting: list[str] = []  # not ready until the next day
        self.data, self.duration = _tiny()
        self.digests = (
            hashlib.sha256(self.data).hexdigest(),
            base64.b64encode(hashlib.md5(self.data).digest()).decode(),
        )

    def ids(self, day: int) -> list[str]:
        return recording_ids(self.per_day, self.seed * 100_000 + day)

    def created(self, day: int, index: int, count: int) -> datetime:
        """The ``index``-th of ``count`` moments spread over ``day``, to the millisecond."""
        offset = round((index + 0.5) * 86_400_000 / count)
        return self.start + timedelta(days=day, milliseconds=offset)

    def recording(self, rec_id: str, created: datetime) -> Recording:
        recording = Recording(rec_id, self.data, "wav", self.duration, date_created=created)
        return _with_digests(recording, *self.digests)

    def past(self) -> dict[str, Recording]:
        return {
            rec_id: self.recording(rec_id, self.created(day, index, self.per_day))
            for day in range(self.past_days)
            for index, rec_id in enumerate(self.ids(day))
        }

    def next_day(self, emulator: Emulator) -> dict[str, Any]:
        """Publish the next day's recordings; yesterday's that were not ready now are."""
        for rec_id in self.waiting:
            emulator.faults.not_ready_until.pop(rec_id, None)
        ids = self.ids(self.day)
        late, on_time = ids[: self.late], ids[self.late :]
        moments = [self.created(self.day - 2, i, len(late)) for i in range(len(late))]
        moments += [self.created(self.day, i, len(on_time)) for i in range(len(on_time))]
        self.waiting = on_time[: self.not_ready]
        for rec_id, created in zip([*late, *on_time], moments, strict=True):
            ready_in = 10 * 86_400 if rec_id in self.waiting else None  # until the next day
            published = emulator.publish(
                self.recording(rec_id, created), created=created, ready_in=ready_in
            )
            _with_digests(published, *self.digests)
        self.day += 1
        return {
            "day": self.day - self.past_days,
            "published": len(ids),
            "late": len(late),
            "not_ready": len(self.waiting),
            "newest": iso_ms(max(moments)),
        }


class IndexedListing:
    """The emulator's listing, answered from an index kept in creation order.

    The emulator sorts every recording it holds for every page it serves (0.15 s for a page
    of an archive of 37,000); Siro answers a page in about the same time whatever its
    size. For the default order (newest first, no filter but dates) this picks from the
    index the few recordings the page can hold and hands only those to the emulator's own
    ``list_page``: the same page, the same cursor. Any other query goes to it whole.
    """

    def __init__(self) -> None:
        self.keys: list[tuple[str, str, str]] = []
        self.dates: list[datetime] = []
        self.recordings: list[Recording] = []

    def rebuild(self, recordings: Iterable[Recording]) -> None:
        ordered = sorted(recordings, key=lambda rec: (rec.date_created, rec.id))
        self.recordings = ordered
        self.dates = [rec.date_created for rec in ordered]
        self.keys = [(iso_ms(rec.date_created),) * 2 + (rec.id,) for rec in ordered]
        assert all(date.microsecond % 1000 == 0 for date in self.dates)  # iso_ms keeps them

    def page(self, recordings: list[Recording], raw_query: str) -> dict[str, Any]:
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        simple = query.keys() <= {"limit", "cursor", "dateCreated:gt", "dateCreated:lt"}
        if not simple or len(recordings) != len(self.recordings):
            return list_page(recordings, raw_query)
        try:
            limit = int(query.get("limit", MAX_LIMIT))
            after, before = _date(query, "dateCreated:gt"), _date(query, "dateCreated:lt")
            cursor = query.get("cursor")
            position = None if cursor is None else _decode_cursor(cursor, "dateCreated", "desc")
        except Exception:  # the emulator's own listing answers it (a 400)
            return list_page(recordings, raw_query)
        if not 1 <= limit <= MAX_LIMIT:
            return list_page(recordings, raw_query)
        low = 0 if after is None else bisect.bisect_right(self.dates, after)
        high = len(self.dates) if before is None else bisect.bisect_left(self.dates, before)
        if position is not None:
            high = min(high, bisect.bisect_left(self.keys, position))
        return list_page(self.recordings[max(low, high - limit - 1) : high], raw_query)


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
        bases = [_tiny()]
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
        "listing_requests": counters.listing_requests,
        "rate_limited": counters.rate_limited,
        "connections": dict(counters.connections_opened),
        "storage_requests": sum(counters.storage_requests.values()),
        "bytes_served": counters.total_bytes_served,
        "cpu": times.user + times.system,
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    growing = GrowingArchive(config["spec"]) if config["spec"]["kind"] == "growing" else None
    recordings = growing.past() if growing else build(config["spec"])
    faults = Faults(**config["faults"])
    index = IndexedListing()
    if growing:
        index.rebuild(recordings.values())
        siro_data.emulator.api.list_page = index.page  # what the API handler calls
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
            elif line.strip() == "day" and growing:
                published = growing.next_day(emulator)
                index.rebuild(emulator.recordings.values())
                print(json.dumps(published), flush=True)


if __name__ == "__main__":
    main()
