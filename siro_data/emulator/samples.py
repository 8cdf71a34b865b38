"""Deterministic, real audio recordings for the emulator to serve.

The files are real encodings (AAC in MP4, MP3, WAV, FLAC, Opus in Ogg) of a speech-like
signal, so that code reading durations or decoding samples is exercised as it would be on
Siro's audio, while staying small, fast to build and identical from run to run.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import string
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import av
import numpy as np
import soundfile as sf

CONTENT_TYPES: dict[str, str] = {
    "m4a": "audio/mp4",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
}
"""Content-Type the storage answers for each file extension."""

# extension -> (PyAV container format, codec, bit rate); wav and flac go through soundfile.
_PYAV_FORMATS: dict[str, tuple[str, str, int | None]] = {
    "m4a": ("ipod", "aac", 32_000),  # Siro's redacted audio is typically AAC in .m4a
    "mp3": ("mp3", "libmp3lame", 32_000),
    "ogg": ("ogg", "libopus", 24_000),  # libvorbis is not in the PyAV wheels; Opus is
}
_OPUS_RATES = frozenset({8_000, 12_000, 16_000, 24_000, 48_000})

# Which sample (by index) is not .m4a: one of each other format among the first twelve.
_OTHER_FORMATS: dict[int, str] = {2: "mp3", 4: "wav", 6: "flac", 8: "ogg"}
_ID_ALPHABET = string.ascii_letters + string.digits

SAMPLE_DATES_END = datetime(2025, 6, 1, tzinfo=timezone.utc)
"""Recordings without an explicit ``date_created`` were made in the 30 days before this."""
SAMPLE_DATES_DAYS = 30
ORGANIZATION_ID = "org_emulator"
"""The one organization every emulated recording belongs to."""
TEAMS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "team_north": (("usr_north_1", "Ana", "Garcia"), ("usr_north_2", "Ben", "Okafor")),
    "team_south": (("usr_south_1", "Chloe", "Nguyen"), ("usr_south_2", "Dev", "Patel")),
    "team_west": (("usr_west_1", "Eva", "Rossi"), ("usr_west_2", "Femi", "Adeyemi")),
}
"""team id -> its reps (user id, first name, last name)."""
RESULTS = ("closed", "not closed", "in progress")
CONVERSATION_TYPES = ("Initial visit", "Follow-up")
_TOPICS = ("Roof inspection", "Kitchen remodel", "Solar consultation", "Window replacement")
_CUSTOMERS = ("Miller", "Johnson", "Lee", "Brown", "Kowalski", "Haddad", "Silva", "Murphy")


@dataclass(frozen=True)
class Recording:
    """One recording as the emulator holds it: the audio file and the truth about it.

    Parameters
    ----------
    id : str
        Siro recording id (any characters; the emulator percent-encodes it in URLs).
    data : bytes
        The audio file served by the storage.
    extension : str
        File extension without the dot ("m4a", "mp3", "wav", "flac", "ogg").
    duration : float
        True duration in seconds (samples / sample rate of the encoded signal).
    content_type : str, optional
        Content-Type served; derived from `extension` when empty.
    duration_ms_api : int, optional
        Duration Siro's API would report (``durationInMilliseconds``); defaults to
        ``round(duration * 1000)``.
    date_created : datetime, optional
        When Siro says the recording was made (a naive value is taken as UTC).
    title, user_id, team_id, rep_first_name, rep_last_name, result, conversation_type : str
        What the recordings listing reports and filters on.

    Every metadata field left out is derived from the SHA-256 of `id`, so that a
    recording's metadata is the same from run to run: ``date_created`` falls in the
    `SAMPLE_DATES_DAYS` days before `SAMPLE_DATES_END` (whole milliseconds), the rep is
    one of `TEAMS`, and ``user_id`` and the rep's names follow from it.
    """

    id: str
    data: bytes = field(repr=False)
    extension: str
    duration: float
    content_type: str = ""
    duration_ms_api: int | None = None
    date_created: datetime | None = None
    title: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    rep_first_name: str | None = None
    rep_last_name: str | None = None
    result: str | None = None
    conversation_type: str | None = None

    def __post_init__(self) -> None:
        if not self.content_type:
            object.__setattr__(
                self, "content_type", CONTENT_TYPES.get(self.extension, "application/octet-stream")
            )
        if self.duration_ms_api is None:
            object.__setattr__(self, "duration_ms_api", round(self.duration * 1000))
        for name, value in _metadata(self.id).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.date_created.tzinfo is None:
            object.__setattr__(self, "date_created", self.date_created.replace(tzinfo=timezone.utc))

    @functools.cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of `data` (the storage's ETag is a prefix of it)."""
        return hashlib.sha256(self.data).hexdigest()

    @functools.cached_property
    def md5_base64(self) -> str:
        """Base64 MD5 of `data`, as GCS reports it in ``x-goog-hash: md5=...``."""
        return base64.b64encode(hashlib.md5(self.data).digest()).decode()

    @property
    def size(self) -> int:
        """Length of `data` in bytes."""
        return len(self.data)


def _metadata(rec_id: str) -> dict[str, object]:
    """Plausible listing metadata for `rec_id`, the same on every run."""
    digest = hashlib.sha256(rec_id.encode("utf-8", "surrogatepass")).digest()
    span_ms = SAMPLE_DATES_DAYS * 86_400_000
    team_id = list(TEAMS)[digest[8] % len(TEAMS)]
    user_id, first, last = TEAMS[team_id][digest[9] % len(TEAMS[team_id])]
    topic = _TOPICS[digest[10] % len(_TOPICS)]
    return {
        "date_created": SAMPLE_DATES_END
        - timedelta(milliseconds=int.from_bytes(digest[:8], "big") % span_ms),
        "title": f"{topic}: {_CUSTOMERS[digest[11] % len(_CUSTOMERS)]} residence",
        "user_id": user_id,
        "team_id": team_id,
        "rep_first_name": first,
        "rep_last_name": last,
        "result": RESULTS[digest[12] % len(RESULTS)],
        "conversation_type": CONVERSATION_TYPES[digest[13] % len(CONVERSATION_TYPES)],
    }


def speech_like(duration: float, samplerate: int = 16_000, seed: int = 0) -> np.ndarray:
    """Synthesize a mono signal with the coarse structure of speech.

    A harmonic series on a slowly wandering pitch contour (120-220 Hz), shaped by a
    syllable-rate (~4 Hz) envelope with pauses between phrases, plus a little noise. It
    compresses and decodes like speech, which a pure tone or white noise would not.

    Parameters
    ----------
    duration : float
        Length in seconds (rounded to whole samples, at least one).
    samplerate : int
        Samples per second.
    seed : int
        Seed of the random generator; the same arguments give the same samples.

    Returns
    -------
    numpy.ndarray
        float32 samples in [-1, 1], shape ``(n,)``.
    """
    n = max(1, round(duration * samplerate))
    rng = np.random.default_rng(seed)
    t = np.arange(n) / samplerate

    # Pitch: a base voice pitch plus a smooth random walk sampled every 250 ms.
    knots = np.arange(0.0, duration + 0.5, 0.25)
    base = rng.uniform(140.0, 190.0)
    wander = np.cumsum(rng.normal(0.0, 6.0, knots.size))
    f0 = np.clip(base + np.interp(t, knots, wander - wander.mean()), 120.0, 220.0)
    theta = 2 * np.pi * np.cumsum(f0) / samplerate

    # Harmonics by the Chebyshev recurrence sin(k x) = 2 cos(x) sin((k-1) x) - sin((k-2) x):
    # one sin/cos per sample instead of one per harmonic.
    n_harmonics = max(1, min(16, int(0.45 * samplerate / 220.0)))
    two_cos = 2 * np.cos(theta)
    prev, cur = np.zeros(n), np.sin(theta)
    voiced = cur.copy()
    for k in range(2, n_harmonics + 1):
        prev, cur = cur, two_cos * cur - prev
        voiced += cur / k

    # Syllables at ~4 Hz (rate wandering 3-5 Hz), phrases of 1-4 s separated by 0.2-0.8 s pauses.
    syllable_rate = np.interp(t, knots, rng.uniform(3.0, 5.0, knots.size))
    syllables = np.sin(np.pi * np.cumsum(syllable_rate) / samplerate) ** 2
    gate = np.zeros(n)
    start = 0.0
    while start < duration:
        stop = start + rng.uniform(1.0, 4.0)
        gate[(t >= start) & (t < stop)] = 1.0
        start = stop + rng.uniform(0.2, 0.8)
    ramp = max(1, int(0.02 * samplerate))  # 20 ms fades: pauses without clicks
    gate = np.convolve(gate, np.ones(ramp) / ramp, mode="same")

    signal = voiced * syllables * gate + 0.01 * rng.standard_normal(n)
    signal *= 0.5 / max(float(np.abs(signal).max()), 1e-9)
    return signal.astype(np.float32)


def encode(samples: np.ndarray, samplerate: int, extension: str) -> bytes:
    """Encode float samples into an audio file in memory.

    Parameters
    ----------
    samples : numpy.ndarray
        Samples in [-1, 1]: shape ``(n,)`` for mono, ``(n, 2)`` for stereo.
    samplerate : int
        Samples per second of `samples`.
    extension : str
        One of "m4a", "mp3", "ogg" (Opus), "wav" or "flac".

    Returns
    -------
    bytes
        The file. Its duration as read back is within 1 % of ``n / samplerate``
        for anything longer than a second (encoder priming is trimmed by an edit list
        in MP4 and by the LAME header in MP3).
    """
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    layout = "stereo" if samples.ndim == 2 and samples.shape[1] == 2 else "mono"
    if layout == "mono":
        samples = samples.reshape(-1)
    buf = io.BytesIO()
    if extension in ("wav", "flac"):
        sf.write(buf, samples, samplerate, format=extension.upper(), subtype="PCM_16")
        return buf.getvalue()
    if extension not in _PYAV_FORMATS:
        raise ValueError(f"cannot encode {extension!r}; known: {sorted(CONTENT_TYPES)}")
    container_format, codec, bit_rate = _PYAV_FORMATS[extension]
    rate = samplerate
    if codec == "libopus" and samplerate not in _OPUS_RATES:
        rate = 48_000  # PyAV resamples the frames to the encoder's rate
    with av.open(buf, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout=layout)
        frame.sample_rate = samplerate
        # A first pts of 0 makes the MP4 muxer write an edit list that hides the AAC
        # priming samples, so the container duration equals the signal's.
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def make_recording(
    rec_id: str,
    duration: float,
    extension: str = "m4a",
    *,
    seed: int = 0,
    samplerate: int = 16_000,
    duration_ms_api: int | None = None,
) -> Recording:
    """Build a `Recording` of speech-like audio of the given length and format.

    Parameters
    ----------
    rec_id : str
        Recording id.
    duration : float
        Seconds of audio (a 16 kHz .m4a runs at about 4 kB/s; a .wav at 32 kB/s).
    extension : str
        File format, see `encode`.
    seed : int
        Seed of the signal.
    samplerate : int
        Samples per second of the signal.
    duration_ms_api : int, optional
        What the API reports; ``round(duration * 1000)`` by default.

    Returns
    -------
    Recording
    """
    samples = speech_like(duration, samplerate, seed)
    return Recording(
        id=rec_id,
        data=encode(samples, samplerate, extension),
        extension=extension,
        duration=samples.size / samplerate,
        duration_ms_api=duration_ms_api,
    )


@functools.lru_cache(maxsize=256)
def _sample(index: int, seed: int) -> Recording:
    """The `index`-th sample recording: it depends on (index, seed) only, not on n."""
    rng = np.random.default_rng([seed, index])
    rec_id = "".join(rng.choice(list(_ID_ALPHABET), 20))
    duration = round(float(rng.uniform(3.0, 40.0)), 3)
    jitter = int(rng.integers(-3, 4))  # the API's figure is independent of the file's
    return make_recording(
        rec_id,
        duration,
        _OTHER_FORMATS.get(index, "m4a"),
        seed=int(rng.integers(2**31)),
        duration_ms_api=round(duration * 1000) + jitter,
    )


def sample_recordings(n: int = 12, seed: int = 0) -> dict[str, Recording]:
    """A deterministic set of recordings, mostly .m4a, with one .mp3, .wav, .flac and .ogg.

    Recordings are cached one by one, so repeated calls are fast, and the i-th
    recording is the same whatever `n` (the first id is stable). Among the first
    twelve, index 2 is mp3, 4 wav, 6 flac, 8 ogg (Opus), the others m4a; durations are
    3 to 40 s. Each has listing metadata derived from its id (see `Recording`): creation
    dates spread over the 30 days before `SAMPLE_DATES_END`, three teams, six reps.

    Parameters
    ----------
    n : int
        Number of recordings.
    seed : int
        Seed of ids, durations, signals and, through the ids, metadata.

    Returns
    -------
    dict[str, Recording]
        A new dict (safe to mutate) keyed by recording id, in index order.
    """
    # Encoders and numpy release the GIL for long stretches: threads cut the first build.
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        recordings = list(pool.map(_sample, range(n), [seed] * n))
    return {rec.id: rec for rec in recordings}
