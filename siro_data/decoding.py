"""Reading audio files: whatever the format, one stream of float32 blocks.

libsndfile (soundfile) reads WAV, FLAC and Ogg exactly and fast, but cannot
open MP4/AAC, the usual format of Siro's audio, and misjudges VBR MP3 without
a Xing header. PyAV (FFmpeg, bundled in its wheels) reads those from the
container's own timing, edit lists included, so encoder priming is not counted.
:func:`open_audio` picks the reader; both deliver ``(frames, channels)`` blocks.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
import soundfile

from .exceptions import NotAudioError

#: Formats whose length libsndfile reads exactly from the header.
SOUNDFILE_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "OGG", "AIFF", "AU", "W64", "RF64", "CAF"})

#: Frames per block handed from a decoder to the resampler, the memory or the disk.
BLOCK_FRAMES = 1 << 16

DECODE_ERRORS = (av.FFmpegError, StopIteration, UnicodeDecodeError, ValueError)


def soundfile_info(path: str | os.PathLike[str]) -> soundfile._SoundFileInfo | None:
    """soundfile's description of a file it reads exactly, else None; OSError as such."""
    with open(path, "rb"):  # a missing or unreadable file is not a "not audio" error
        pass
    try:
        info = soundfile.info(os.fspath(path))
    except (soundfile.LibsndfileError, RuntimeError):
        return None
    if info.format in SOUNDFILE_FORMATS and info.frames > 0:
        return info
    return None


def codec_name(path: str | os.PathLike[str]) -> str | None:
    """FFmpeg's name of the first audio stream's codec, read from the header; None if unknown.

    Names are FFmpeg's everywhere (``pcm_s16le`` for 16-bit WAV, ``flac``,
    ``opus``), also for the files soundfile decodes, so that one column groups
    them alike.
    """
    try:
        with av.open(os.fspath(path)) as container:
            streams = container.streams.audio
            return streams[0].codec_context.codec.canonical_name if streams else None
    except DECODE_ERRORS:
        return None


def not_audio(exc: BaseException) -> NotAudioError:
    """The error for bytes a decoder refused, with the decoder's own reason."""
    if isinstance(exc, StopIteration):
        return NotAudioError("not readable audio (no audio frame in it)")
    reason = getattr(exc, "strerror", None) or type(exc).__name__
    return NotAudioError(f"not readable audio ({reason})")


def counted(blocks: Iterator[np.ndarray], total: list[int]) -> Iterator[np.ndarray]:
    """Pass `blocks` through, adding their frames to ``total[0]``."""
    for block in blocks:
        total[0] += len(block)
        yield block


def layout_name(channels: int) -> str:
    """FFmpeg's name of the default layout of so many channels."""
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")


def resample(
    blocks: Iterator[np.ndarray], rate: int, target: int, channels: int
) -> Iterator[np.ndarray]:
    """Resample float32 ``(frames, channels)`` blocks with libswresample, flushed at the end."""
    layout = layout_name(channels)
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=target)
    for block in blocks:
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(block.T, dtype=np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        for out in resampler.resample(frame):
            yield out.to_ndarray().T
    for out in resampler.resample(None):  # the flush: the filter's last samples
        yield out.to_ndarray().T


class Samples:
    """A growing ``(frames, channels)`` float32 array, allocated once when the length is known."""

    def __init__(self, expected: int | None, channels: int) -> None:
        capacity = BLOCK_FRAMES if expected is None else expected + expected // 100 + 64
        self.data = np.empty((max(capacity, 1), channels), dtype=np.float32)
        self.size = 0

    def _reserve(self, frames: int) -> None:
        if frames > len(self.data):
            grown = np.empty((max(frames, len(self.data) * 3 // 2), self.data.shape[1]), np.float32)
            grown[: self.size] = self.data[: self.size]
            self.data = grown

    def append(self, block: np.ndarray) -> None:
        end = self.size + len(block)
        self._reserve(end)
        self.data[self.size : end] = block
        self.size = end

    def result(self, length: int | None = None) -> np.ndarray:
        """The samples, cut or padded with zeros to `length` frames when given."""
        if length is not None:
            self._reserve(length)
            self.data[self.size : length] = 0.0
            self.size = length
        self.data.resize((self.size, self.data.shape[1]), refcheck=False)  # in place: no copy
        return self.data


class Source:
    """An audio file open for reading: its parameters, then its samples once, in blocks.

    Attributes
    ----------
    samplerate, channels : int
        Of the samples `blocks` yields.
    frames : int or None
        Length the file announces (exact for libsndfile's formats and MP4; an
        estimate for some others), None when unknown.
    container : str
        libsndfile's format name ("WAV", "FLAC", ...) or FFmpeg's container name.
    subtype : str or None
        libsndfile's subtype ("PCM_16", ...); None for files PyAV reads.
    codec : str or None
        FFmpeg's name of the audio codec ("aac", "pcm_s16le", "opus", ...), None
        where FFmpeg does not know the file.
    """

    samplerate: int
    channels: int
    frames: int | None
    container: str
    subtype: str | None = None
    codec: str | None = None

    def blocks(self) -> Iterator[np.ndarray]:
        """float32 blocks of shape ``(frames, channels)``, NotAudioError if decoding fails."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_audio(path: str | os.PathLike[str]) -> Source:
    """Open `path` with soundfile where it reads the format exactly, else with PyAV."""
    info = soundfile_info(path)
    if info is not None:
        return SoundfileSource(path, info)
    return PyAVSource(path)


class SoundfileSource(Source):
    """WAV, FLAC, Ogg and the other formats libsndfile reads exactly."""

    def __init__(self, path: str | os.PathLike[str], info: soundfile._SoundFileInfo) -> None:
        try:
            self._file = soundfile.SoundFile(os.fspath(path))
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise NotAudioError(f"not readable audio ({exc})") from None
        self.samplerate = self._file.samplerate
        self.channels = self._file.channels
        self.frames = self._file.frames
        self.container = info.format
        self.subtype = info.subtype
        self.codec = codec_name(path)

    def blocks(self) -> Iterator[np.ndarray]:
        produced = 0
        while True:
            try:
                block = self._file.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError) as exc:
                raise NotAudioError(f"not readable audio ({exc})") from None
            if not len(block):
                break
            produced += len(block)
            yield block
        check_complete(produced, self.frames, tolerance=1)

    def close(self) -> None:
        self._file.close()


class PyAVSource(Source):
    """Everything else, through FFmpeg: AAC in MP4, MP3, Opus, ..."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self._container = av.open(os.fspath(path))
        except DECODE_ERRORS as exc:
            raise not_audio(exc) from None
        try:
            self._start()
        except BaseException:
            self._container.close()
            raise

    def _start(self) -> None:
        """Find the audio stream and decode its first frame, which proves the bytes are audio."""
        container = self._container
        self.container = container.format.name
        if not container.streams.audio:
            raise NotAudioError(f"no audio stream in {self.container} data")
        stream = container.streams.audio[0]
        self._decoded = container.decode(stream)
        try:
            self._first = next(self._decoded)
        except DECODE_ERRORS as exc:
            raise not_audio(exc) from None
        self.samplerate = self._first.sample_rate
        self.channels = len(self._first.layout.channels)
        if stream.duration is not None and stream.time_base is not None:
            self.seconds: Fraction | None = stream.duration * stream.time_base
        elif container.duration is not None:
            self.seconds = Fraction(container.duration, av.time_base)
        else:
            self.seconds = None
        self.frames = None if self.seconds is None else round(self.seconds * self.samplerate)
        # FFmpeg skips the priming an MP4 edit list hides, but decodes the last packet
        # whole: where the edit list says the audio ends, the rest is encoder padding.
        self._mp4 = bool({"mov", "mp4"} & set(self.container.split(",")))
        self._tolerance = stream.codec_context.frame_size or 2048
        self.codec = stream.codec_context.codec.canonical_name

    def blocks(self) -> Iterator[np.ndarray]:
        remaining = self.frames if self._mp4 else None
        pending: list[np.ndarray] = []
        held = produced = 0
        for frame in itertools.chain([self._first], self._rest()):
            if frame.sample_rate != self.samplerate or len(frame.layout.channels) != self.channels:
                raise NotAudioError(
                    f"the audio changes from {self.samplerate} Hz, {self.channels} channels to "
                    f"{frame.sample_rate} Hz, {len(frame.layout.channels)} channels midway"
                )
            samples = frame_samples(frame, self.channels)
            if remaining is not None:
                samples = samples[:remaining]
                remaining -= len(samples)
            pending.append(samples)
            held += len(samples)
            if held >= BLOCK_FRAMES:
                produced += held
                yield np.concatenate(pending)
                pending, held = [], 0
            if remaining == 0:
                break
        if held:
            produced += held
            yield np.concatenate(pending)
        if self._mp4:
            check_complete(produced, self.frames, tolerance=self._tolerance)

    def _rest(self) -> Iterator[av.AudioFrame]:
        """The frames after the first, decoding errors as NotAudioError."""
        try:
            yield from self._decoded
        except DECODE_ERRORS as exc:
            raise not_audio(exc) from None

    def close(self) -> None:
        self._container.close()


def check_complete(produced: int, announced: int | None, tolerance: int) -> None:
    """NotAudioError when decoding ended well before the length the header announces."""
    if announced is not None and produced < announced - tolerance:
        raise NotAudioError(
            f"the audio stops after {produced} of the {announced} frames its header announces"
            " (truncated?)"
        )


def frame_samples(frame: av.AudioFrame, channels: int) -> np.ndarray:
    """A decoded frame as float32 in [-1, 1], shape ``(frames, channels)``."""
    data = frame.to_ndarray()
    data = data.T if frame.format.is_planar else data.reshape(-1, channels)
    if data.dtype.kind == "f":
        return data.astype(np.float32, copy=False)
    if data.dtype.kind == "u":  # 8-bit PCM is unsigned, centred on 128
        return (data.astype(np.float32) - 128.0) / 128.0
    return data.astype(np.float32) / np.float32(2.0 ** (8 * data.dtype.itemsize - 1))
