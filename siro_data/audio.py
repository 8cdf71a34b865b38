"""Audio inspection: how long a downloaded file is, and whether it is audio at all.

libsndfile (soundfile) reads WAV, FLAC and Ogg exactly and fast, but cannot
open MP4/AAC, the usual format of Siro's audio, and misjudges VBR MP3 without
a Xing header. PyAV (FFmpeg, bundled in its wheels) reads those from the
container's own timing, edit lists included, so encoder priming is not counted.
"""

from __future__ import annotations

import os

import av
import soundfile

from .exceptions import NotAudioError

#: Formats whose length libsndfile reads exactly from the header.
_SOUNDFILE_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "OGG", "AIFF", "AU", "W64", "RF64", "CAF"})


def duration(path: str | os.PathLike[str]) -> float:
    """Length of an audio file in seconds.

    Parameters
    ----------
    path : path-like
        An audio file: .m4a (AAC in MP4), mp3, wav, flac, ogg, ... (the content
        decides, not the file name).

    Returns
    -------
    float
        Seconds.

    Raises
    ------
    NotAudioError
        The file is not audio (an HTML error page, random or truncated bytes).

    Examples
    --------
    >>> import numpy as np, soundfile, tempfile, pathlib
    >>> wav = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
    >>> soundfile.write(wav, np.zeros(16000 * 3, dtype="float32"), 16000)
    >>> duration(wav)
    3.0
    """
    try:
        info = soundfile.info(os.fspath(path))
    except (soundfile.LibsndfileError, RuntimeError):
        info = None
    if info is not None and info.format in _SOUNDFILE_FORMATS and info.frames > 0:
        return info.frames / info.samplerate
    return _container_duration(path)


def _container_duration(path: str | os.PathLike[str]) -> float:
    """Duration from the container's timing, after decoding one frame to prove it is audio."""
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.audio:
                raise NotAudioError(f"no audio stream in {container.format.name} data")
            stream = container.streams.audio[0]
            next(container.decode(stream))
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                seconds = 0.0
    except NotAudioError:
        raise
    except (av.FFmpegError, StopIteration, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise NotAudioError(f"not readable audio ({reason})") from None
    if not seconds > 0:
        raise NotAudioError("audio stream reports no duration")
    return seconds
