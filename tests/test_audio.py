"""Durations measured from the file, for every format Siro or a user may hand us."""

from __future__ import annotations

import pytest

from siro_data import NotAudioError, duration
from siro_data.emulator import encode, speech_like

SAMPLERATE = 16_000


@pytest.mark.parametrize("extension", ["m4a", "mp3", "wav", "flac", "ogg"])
@pytest.mark.parametrize("seconds", [3.7, 61.3])
def test_duration_within_one_percent(tmp_path, extension, seconds):
    path = tmp_path / f"clip.{extension}"
    path.write_bytes(encode(speech_like(seconds, SAMPLERATE, seed=1), SAMPLERATE, extension))
    assert duration(path) == pytest.approx(seconds, rel=0.01)


def test_content_decides_not_the_file_name(tmp_path):
    path = tmp_path / "really-a-wav.m4a"
    path.write_bytes(encode(speech_like(2.0, SAMPLERATE), SAMPLERATE, "wav"))
    assert duration(path) == pytest.approx(2.0, rel=0.01)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        b'{"error": "Recording not found"}',
        b"<?xml version='1.0'?><Error><Code>ExpiredToken</Code></Error>",
        bytes(range(256)) * 200,
    ],
    ids=["empty", "html", "json", "xml", "binary-noise"],
)
def test_not_audio_is_an_error(tmp_path, content):
    path = tmp_path / "x.m4a"
    path.write_bytes(content)
    with pytest.raises(NotAudioError):
        duration(path)


def test_truncated_m4a_is_an_error(tmp_path):
    """moov at the end (our encoder's default): a cut file has no index to read."""
    data = encode(speech_like(5.0, SAMPLERATE), SAMPLERATE, "m4a")
    path = tmp_path / "cut.m4a"
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(NotAudioError):
        duration(path)
