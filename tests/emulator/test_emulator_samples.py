"""The emulator's sample recordings: deterministic, varied, decodable, with listing metadata."""

from __future__ import annotations

import dataclasses
import io
import time
from datetime import datetime, timedelta, timezone

import av
import numpy as np
import pytest
import soundfile as sf

from siro_data.emulator import (
    CONTENT_TYPES,
    Recording,
    encode,
    make_recording,
    sample_recordings,
    speech_like,
)
from siro_data.emulator.samples import SAMPLE_DATES_DAYS, SAMPLE_DATES_END, TEAMS


def read_duration(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        return container.duration / 1e6


def test_samples_are_deterministic_varied_and_stable(recordings: dict[str, Recording]) -> None:
    assert sample_recordings() == recordings
    # A fresh dict: mutating it cannot poison the cache.
    assert sample_recordings() is not recordings
    assert list(sample_recordings(n=2)) == list(recordings)[:2]  # the first ids do not depend on n
    assert list(sample_recordings(n=2, seed=1)) != list(recordings)[:2]
    extensions = [rec.extension for rec in recordings.values()]
    assert extensions.count("m4a") == 8
    assert sorted(e for e in extensions if e != "m4a") == ["flac", "mp3", "ogg", "wav"]
    for rec_id, rec in recordings.items():
        assert rec.id == rec_id and len(rec_id) == 20 and rec_id.isalnum() and rec_id.isascii()
        assert rec.content_type == CONTENT_TYPES[rec.extension]
        assert 3.0 <= rec.duration <= 40.0
        assert abs(rec.duration_ms_api - rec.duration * 1000) <= 4
        assert rec.data and len(rec.sha256) == 64 and rec.size == len(rec.data)
    assert len({rec.duration for rec in recordings.values()}) == len(recordings)


def test_sample_durations_read_back_within_one_percent(recordings: dict[str, Recording]) -> None:
    for rec in recordings.values():
        assert read_duration(rec.data) == pytest.approx(rec.duration, rel=0.01), rec.extension
        if rec.extension in ("wav", "flac", "ogg"):
            info = sf.info(io.BytesIO(rec.data))
            assert info.duration == pytest.approx(rec.duration, rel=0.01), rec.extension


def test_m4a_decodes_to_the_signal_length(recordings: dict[str, Recording]) -> None:
    rec = next(r for r in recordings.values() if r.extension == "m4a" and r.duration < 10)
    with av.open(io.BytesIO(rec.data)) as container:
        assert container.format.name.startswith("mov")
        decoded = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    assert abs(decoded.size - round(rec.duration * 16_000)) <= 1024  # at most one AAC frame
    assert 0.05 < np.abs(decoded).max() <= 1.0


def test_speech_like_has_syllables_and_pauses() -> None:
    samples = speech_like(6.0, 16_000, seed=3)
    assert samples.dtype == np.float32 and samples.shape == (96_000,)
    assert np.array_equal(samples, speech_like(6.0, 16_000, seed=3))
    assert not np.array_equal(samples, speech_like(6.0, 16_000, seed=4))
    envelope = np.abs(samples).reshape(-1, 160).max(axis=1)  # 10 ms frames
    assert envelope.max() == pytest.approx(0.5, abs=0.01)
    assert (envelope < 0.1).mean() > 0.1  # gaps between syllables and phrases
    assert (envelope > 0.2).mean() > 0.3


@pytest.mark.parametrize("extension", sorted(CONTENT_TYPES))
def test_encode_every_format(extension: str) -> None:
    data = encode(speech_like(2.0, 16_000, seed=1), 16_000, extension)
    assert read_duration(data) == pytest.approx(2.0, rel=0.01)


def test_make_recording_builds_megabytes_quickly() -> None:
    started = time.monotonic()
    rec = make_recording("big one", 60.0, "wav", seed=5, duration_ms_api=60_123)
    assert time.monotonic() - started < 2.0
    assert rec.size > 1_900_000 and rec.content_type == "audio/wav"
    assert rec.duration == 60.0 and rec.duration_ms_api == 60_123


def test_sample_metadata_is_deterministic_and_plausible(recordings: dict[str, Recording]) -> None:
    assert [r.date_created for r in sample_recordings(n=3).values()] == [
        r.date_created for r in list(recordings.values())[:3]
    ]
    start = SAMPLE_DATES_END - timedelta(days=SAMPLE_DATES_DAYS)
    for rec in recordings.values():
        assert start < rec.date_created <= SAMPLE_DATES_END
        assert rec.date_created.tzinfo is not None and rec.date_created.microsecond % 1000 == 0
        assert (rec.user_id, rec.rep_first_name, rec.rep_last_name) in TEAMS[rec.team_id]
        assert rec.title and rec.result in ("closed", "not closed", "in progress")
    dates = [rec.date_created for rec in recordings.values()]
    assert len(set(dates)) == len(dates) and max(dates) - min(dates) > timedelta(days=10)
    assert len({rec.team_id for rec in recordings.values()}) == len(TEAMS)
    # Given metadata is kept; a naive date is taken as UTC.
    rec = next(iter(recordings.values()))
    moved = dataclasses.replace(rec, date_created=datetime(2024, 2, 29, 12), team_id="team_x")
    assert moved.date_created == datetime(2024, 2, 29, 12, tzinfo=timezone.utc)
    assert moved.team_id == "team_x" and moved.user_id == rec.user_id
