"""One audio file: how long it is, its samples, and a copy every tool reads.

The readers (:mod:`siro_data.decoding`: soundfile where libsndfile reads the
format exactly, PyAV for the rest, .m4a among them) deliver float32 blocks of
``(frames, channels)``, so that :func:`load_audio` (samples in memory,
optionally resampled) and :func:`convert` (a WAV or FLAC copy, streamed to
disk) share one decoding path.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile

from .decoding import (
    PyAVSource,
    Samples,
    Source,
    codec_name,
    counted,
    open_audio,
    resample,
    soundfile_info,
)
from .exceptions import NotAudioError
from .filesystems import Bucket, is_bucket

log = logging.getLogger(__name__)

#: Target of :func:`convert`: libsndfile's container, and the source formats kept as they are.
_CONVERSIONS: dict[str, tuple[str, frozenset[str], frozenset[str]]] = {
    # fmt: (container written, containers accepted as is, their subtypes accepted as is)
    "wav": (
        "WAV",
        frozenset({"WAV", "WAVEX"}),
        frozenset({"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"}),
    ),
    "flac": ("FLAC", frozenset({"FLAC"}), frozenset({"PCM_S8", "PCM_16", "PCM_24"})),
}
#: What :func:`convert` writes.
FORMATS = tuple(_CONVERSIONS)

#: At most this many frames per byte of file are allocated ahead of decoding: a header
#: announcing an absurd length cannot make :func:`load_audio` reserve all memory.
_MAX_FRAMES_PER_BYTE = 256


def duration(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> float:
    """Length of an audio file in seconds: :func:`probe`'s ``duration``.

    Parameters
    ----------
    path : path-like or str
        An audio file: .m4a (AAC in MP4), mp3, wav, flac, ogg, ... (the content
        decides, not the file name), or its bucket URL (``gs://``, ``s3://``).
    storage_options : dict, optional
        For a bucket URL, as :func:`siro_data.fetch_all` takes them.

    Returns
    -------
    float
        Seconds. Raises as :func:`probe` does.

    Examples
    --------
    >>> import numpy as np, soundfile, tempfile, pathlib
    >>> wav = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
    >>> soundfile.write(wav, np.zeros(16000 * 3, dtype="float32"), 16000)
    >>> duration(wav)
    3.0
    """
    return probe(path, storage_options).duration


def _seconds(source: PyAVSource) -> float:
    if source.seconds is None or not source.seconds > 0:
        raise NotAudioError("audio stream reports no duration")
    return float(source.seconds)


@dataclass(frozen=True)
class AudioInfo:
    """What checking a file learns of it: how long it lasts and how it is encoded.

    Attributes
    ----------
    duration : float
        Seconds, as :func:`duration` measures them.
    sample_rate : int
        Hz, as :func:`load_audio` decodes the file by default (for Opus in Ogg,
        the rate of the audio that was encoded, as libsndfile reports it).
    channels : int
        Channels of the audio.
    codec : str or None
        FFmpeg's codec name (``aac``, ``mp3``, ``pcm_s16le``, ``flac``, ``opus``, ...).
    """

    duration: float
    sample_rate: int
    channels: int
    codec: str | None


def probe(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> AudioInfo:
    """Check that a file is audio, and describe it: duration, sample rate, channels, codec.

    The check :func:`siro_data.fetch_all` runs on every download before it
    keeps it: WAV, FLAC and Ogg are read by soundfile from their header;
    everything else by PyAV, which decodes one frame to prove the bytes are
    audio.

    Parameters
    ----------
    path : path-like or str
        An audio file (the content decides, not the file name), or its bucket URL.
    storage_options : dict, optional
        For a bucket URL, as :func:`siro_data.fetch_all` takes them.

    Returns
    -------
    AudioInfo

    Raises
    ------
    NotAudioError
        The file is not audio (an HTML error page, random or truncated bytes).
    FileNotFoundError
        There is no such file (other ``OSError`` subclasses when it cannot be read).

    Examples
    --------
    >>> import numpy as np, soundfile, tempfile, pathlib
    >>> wav = pathlib.Path(tempfile.mkdtemp()) / "phone.wav"
    >>> soundfile.write(wav, np.zeros((8000 * 2, 2), dtype="float32"), 8000, subtype="PCM_16")
    >>> probe(wav)
    AudioInfo(duration=2.0, sample_rate=8000, channels=2, codec='pcm_s16le')
    """
    with local_file(path, storage_options) as local:
        info = soundfile_info(local)
        if info is not None:
            codec = codec_name(local)
            return AudioInfo(info.frames / info.samplerate, info.samplerate, info.channels, codec)
        with PyAVSource(local) as source:
            return AudioInfo(_seconds(source), source.samplerate, source.channels, source.codec)


@contextmanager
def local_file(
    path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> Iterator[Path]:
    """``path`` as a local file: itself, or a bucket object's bytes in a temporary file
    (decoders seek back and forth: a whole file to hand is their due)."""
    if not is_bucket(path):
        yield Path(path)
        return
    url = str(path)
    with tempfile.TemporaryDirectory(prefix="siro-data-") as folder:
        local = Path(folder) / url.rsplit("/", 1)[-1]
        Bucket(url.rsplit("/", 1)[0], storage_options).download(url, local)
        yield local


def load_audio(
    path: str | os.PathLike[str],
    sr: int | None = None,
    mono: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> tuple[npt.NDArray[np.float32], int]:
    """Decode an audio file into float32 samples, optionally resampled.

    WAV, FLAC, Ogg (Vorbis, Opus) and the other formats libsndfile reads exactly
    are decoded by soundfile; everything else, .m4a (AAC in MP4), mp3, Opus or AAC
    in other containers, by PyAV (FFmpeg). The content decides, not the file name.
    The number of frames is the file's true length, the one :func:`duration`
    reports: the priming an AAC encoder adds in front is skipped, and the padding
    of its last packet is cut where the MP4 edit list says the audio ends.

    Parameters
    ----------
    path : path-like or str
        The audio file, or its bucket URL (``gs://``, ``s3://``).
    sr : int, optional
        Sample rate wanted, in Hz. By default the file's own rate is kept.
        Resampling uses libswresample (FFmpeg's resampler, through PyAV's
        ``AudioResampler``) with its default windowed-sinc filter: it is the
        resampler of the ``ffmpeg`` tool, well kept, already installed with PyAV
        (no new dependency), fast, and ample for speech analysis. It is fed
        block by block and flushed at the end, so the tail is not lost; the
        result has exactly ``round(frames * sr / orig_sr)`` frames (the
        resampler's last fraction of a frame is cut, or, for inputs of only a
        few frames, zeros are added).
    mono : bool
        Average the channels into one (the default). With False every channel
        is kept.
    storage_options : dict, optional
        For a bucket URL, as :func:`siro_data.fetch_all` takes them.

    Returns
    -------
    samples : numpy.ndarray
        float32 in [-1, 1] (lossy decoders and resampling can overshoot full
        scale slightly; such peaks are clipped). Shape ``(frames,)`` when `mono`,
        else ``(frames, channels)`` even for a single channel: soundfile's
        convention, one row per instant.
    sr : int
        Sample rate of `samples`, in Hz: `sr` when given, else the file's.

    Raises
    ------
    NotAudioError
        The file is not audio, or its audio stops before the length its header
        announces (a truncated download).
    FileNotFoundError
        There is no such file (other ``OSError`` subclasses when it cannot be read).
    ValueError
        `sr` is not a positive whole number.

    Examples
    --------
    >>> import numpy as np, soundfile, tempfile, pathlib
    >>> wav = pathlib.Path(tempfile.mkdtemp()) / "stereo.wav"
    >>> soundfile.write(wav, np.full((44100, 2), 0.25, dtype="float32"), 44100)
    >>> samples, rate = load_audio(wav)
    >>> samples.shape, samples.dtype, rate
    ((44100,), dtype('float32'), 44100)
    >>> load_audio(wav, mono=False)[0].shape
    (44100, 2)
    >>> samples, rate = load_audio(wav, sr=16000)
    >>> samples.shape, rate
    ((16000,), 16000)
    """
    if sr is not None:
        if isinstance(sr, bool) or int(sr) != sr or sr <= 0:
            raise ValueError(f"sr must be a positive whole number of Hz, not {sr!r}")
        sr = int(sr)
    with local_file(path, storage_options) as local, open_audio(local) as source:
        size = os.stat(local).st_size
        rate = source.samplerate
        channels = 1 if mono else source.channels
        blocks = source.blocks()
        if mono and source.channels > 1:
            blocks = (block.mean(axis=1, keepdims=True, dtype=np.float32) for block in blocks)
        frames_in = [0]
        blocks = counted(blocks, frames_in)
        expected = source.frames
        if sr is not None and sr != rate:
            blocks = resample(blocks, rate, sr, channels)
            expected = None if expected is None else round(expected * sr / rate)
        if expected is not None:
            expected = min(expected, _MAX_FRAMES_PER_BYTE * size)
        buffer = Samples(expected, channels)
        for block in blocks:
            buffer.append(block)
    length = None if sr is None or sr == rate else round(frames_in[0] * sr / rate)
    samples = buffer.result(length)
    np.clip(samples, -1.0, 1.0, out=samples)
    return (samples.reshape(-1) if mono else samples), (rate if sr is None else sr)


def convert(
    path: str | os.PathLike[str],
    fmt: str,
    dest: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a WAV or FLAC copy of an audio file, which soundfile and every audio tool read.

    The copy has the source's sample rate and channels, in 16-bit PCM (ample for
    the lossy formats it is meant for; louder-than-full-scale peaks a lossy
    decoder may produce are clipped). It is decoded and written block by block,
    so a long recording is never held in memory, and written under a temporary
    name beside `dest` (``<dest name>.<random hex>.tmp``) renamed into place only
    once complete: a file under the final name is always whole, and a failure
    removes the temporary file.

    Parameters
    ----------
    path : path-like
        The audio file (any format :func:`load_audio` reads).
    fmt : {"wav", "flac"}
        Format of the copy.
    dest : path-like, optional
        Where to write it; by default beside `path`, its suffix replaced by
        ``.wav`` or ``.flac`` (``.pcm16.wav`` when that is `path` itself, a WAV
        in another encoding such as G.711 mu-law). Missing folders are created.
    overwrite : bool
        Write again even when `dest` already holds the copy.

    Returns
    -------
    pathlib.Path
        The copy's path. When `dest` is not given and the source already is a
        WAV in PCM or float (for ``"wav"``) or a FLAC (for ``"flac"``), the
        source's own `path`, and nothing is written. When `dest` exists, is
        such a file with the source's sample rate, channels and number of frames
        (within one), and is not older than the source, `dest` as it is, unless
        `overwrite`; a source whose container only estimates its length (a VBR
        MP3 without a Xing header) is therefore converted again each time.

    Raises
    ------
    NotAudioError
        The source is not audio or is truncated; nothing is left at `dest`.
    FileNotFoundError
        The source does not exist.
    OSError
        Writing failed (a full disk, say); nothing is left at `dest`.
    ValueError
        `fmt` is not "wav" or "flac", or `dest` is given and is the source itself.

    Examples
    --------
    >>> import numpy as np, soundfile, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> soundfile.write(folder / "call.flac", np.zeros(8000, dtype="float32"), 8000)
    >>> copy = convert(folder / "call.flac", "wav")
    >>> copy.name, soundfile.info(copy).subtype, soundfile.info(copy).frames
    ('call.wav', 'PCM_16', 8000)
    >>> convert(folder / "call.flac", "flac").name  # already FLAC: the source itself
    'call.flac'
    """
    key = fmt.lower() if isinstance(fmt, str) else fmt
    if key not in _CONVERSIONS:
        raise ValueError(f"fmt must be one of {sorted(_CONVERSIONS)}, not {fmt!r}")
    container, kept_containers, kept_subtypes = _CONVERSIONS[key]
    source_path = Path(path)
    target = Path(dest) if dest is not None else source_path.with_suffix(f".{key}")
    with open_audio(source_path) as source:
        kept = source.container in kept_containers and source.subtype in kept_subtypes
        if dest is None and kept:
            log.debug("%s is already %s: kept as it is", source_path.name, container)
            return source_path
        if target.exists() and os.path.samefile(target, source_path):
            if dest is not None:
                raise ValueError(f"converting {source_path.name} would overwrite it")
            target = source_path.with_suffix(f".pcm16.{key}")
        if not overwrite and _is_copy_of(target, container, source, source_path):
            log.debug("%s already holds the %s copy of %s", target.name, key, source_path.name)
            return target
        _write(source, target, container)
    log.debug("%s converted to %s", source_path.name, target.name)
    return target


def _is_copy_of(target: Path, container: str, source: Source, source_path: Path) -> bool:
    """Whether `target` is a finished copy of `source`: same format, rate, channels, length."""
    try:
        info = soundfile.info(os.fspath(target))
        fresh = target.stat().st_mtime_ns >= source_path.stat().st_mtime_ns
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        return False
    return (
        fresh
        and info.format == container
        and info.samplerate == source.samplerate
        and info.channels == source.channels
        and source.frames is not None
        and abs(info.frames - source.frames) <= 1
    )


def _write(source: Source, target: Path, container: str) -> None:
    """Stream `source` into `target` through a temporary file renamed into place when whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        try:
            with soundfile.SoundFile(
                temporary, "w", source.samplerate, source.channels, "PCM_16", format=container
            ) as out:
                for block in source.blocks():
                    out.write(np.clip(block, -1.0, 1.0))
        except soundfile.LibsndfileError as exc:  # libsndfile reports I/O errors as its own
            raise OSError(f"cannot write {temporary.name}: {exc.error_string}") from exc
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
