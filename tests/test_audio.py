"""Audio read back from the file: durations, samples, resampling, and WAV/FLAC copies."""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from siro_data import AudioInfo, NotAudioError, convert, duration, load_audio, probe
from siro_data.emulator import Recording, encode, sample_recordings, speech_like

SAMPLERATE = 16_000
FORMATS = ["m4a", "mp3", "wav", "flac", "ogg"]
#: Index in the sample set of one recording of each format (see sample_recordings).
SAMPLE_INDEX = {"m4a": 0, "mp3": 2, "wav": 4, "flac": 6, "ogg": 8}
NOT_AUDIO = [
    b"",
    b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    b'{"error": "Recording not found"}',
    b"<?xml version='1.0'?><Error><Code>ExpiredToken</Code></Error>",
    bytes(range(256)) * 200,
]
NOT_AUDIO_IDS = ["empty", "html", "json", "xml", "binary-noise"]


@pytest.fixture(scope="module")
def samples() -> dict[str, Recording]:
    """One recording of each format from the emulator's sample set, keyed by extension."""
    recordings = list(sample_recordings(n=max(SAMPLE_INDEX.values()) + 1).values())
    return {extension: recordings[index] for extension, index in SAMPLE_INDEX.items()}


def _sample_file(folder: Path, recording: Recording) -> Path:
    path = folder / f"{recording.id}.{recording.extension}"
    path.write_bytes(recording.data)
    return path


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _stereo_signal(seconds: float, samplerate: int) -> np.ndarray:
    """Two different channels: speech on the left, other speech, quieter, on the right."""
    left = speech_like(seconds, samplerate, seed=1)
    right = 0.5 * speech_like(seconds, samplerate, seed=2)
    return np.stack([left, right], axis=1)


def _sine_wav(folder: Path, samplerate: int, seconds: float, frequency: float = 300.0) -> Path:
    t = np.arange(round(seconds * samplerate)) / samplerate
    path = folder / f"sine-{samplerate}.wav"
    soundfile.write(path, (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), samplerate)
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# --- duration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", FORMATS)
@pytest.mark.parametrize("seconds", [3.7, 61.3])
def test_duration_within_one_percent(tmp_path, extension, seconds):
    path = tmp_path / f"clip.{extension}"
    path.write_bytes(encode(speech_like(seconds, SAMPLERATE, seed=1), SAMPLERATE, extension))
    assert duration(path) == pytest.approx(seconds, rel=0.01)


def test_content_decides_not_the_file_name(tmp_path):
    path = tmp_path / "really-a-wav.m4a"
    path.write_bytes(encode(speech_like(2.0, SAMPLERATE), SAMPLERATE, "wav"))
    assert duration(path) == pytest.approx(2.0, rel=0.01)


@pytest.mark.parametrize("content", NOT_AUDIO, ids=NOT_AUDIO_IDS)
def test_not_audio_is_an_error(tmp_path, content):
    path = tmp_path / "x.m4a"
    path.write_bytes(content)
    with pytest.raises(NotAudioError):
        duration(path)


#: What FFmpeg calls the codec our encoder writes in each format.
CODECS = {"m4a": "aac", "mp3": "mp3", "wav": "pcm_s16le", "flac": "flac", "ogg": "opus"}


@pytest.mark.parametrize("extension", FORMATS)
@pytest.mark.parametrize(("samplerate", "channels"), [(8_000, 1), (16_000, 2), (44_100, 1)])
def test_probe_tells_rate_channels_and_codec(tmp_path, extension, samplerate, channels):
    """8 kHz phone audio told from 16 kHz app audio, in FFmpeg's codec names."""
    signal_ = speech_like(3.0, samplerate, seed=1)
    if channels == 2:
        signal_ = _stereo_signal(3.0, samplerate)
    path = tmp_path / f"clip.{extension}"
    path.write_bytes(encode(signal_, samplerate, extension))
    info = probe(path)
    assert isinstance(info, AudioInfo)
    # Opus codes 8, 12, 16, 24 or 48 kHz: 44.1 kHz goes in as 48 kHz.
    rate = 48_000 if extension == "ogg" and samplerate == 44_100 else samplerate
    assert (info.sample_rate, info.channels, info.codec) == (rate, channels, CODECS[extension])
    assert info.duration == duration(path)
    assert load_audio(path, mono=False)[0].shape[1] == info.channels
    assert load_audio(path)[1] == info.sample_rate


@pytest.mark.parametrize("content", NOT_AUDIO, ids=NOT_AUDIO_IDS)
def test_probe_refuses_what_is_not_audio(tmp_path, content):
    path = tmp_path / "x.wav"
    path.write_bytes(content)
    with pytest.raises(NotAudioError):
        probe(path)


def test_truncated_m4a_is_an_error(tmp_path):
    """moov at the end (our encoder's default): a cut file has no index to read."""
    data = encode(speech_like(5.0, SAMPLERATE), SAMPLERATE, "m4a")
    path = tmp_path / "cut.m4a"
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(NotAudioError):
        duration(path)


@pytest.mark.parametrize("function", [duration, load_audio, lambda path: convert(path, "wav")])
def test_missing_file_is_file_not_found(tmp_path, function):
    with pytest.raises(FileNotFoundError):
        function(tmp_path / "nowhere.m4a")


# --- load_audio -------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", FORMATS)
def test_load_sample_set_true_length(tmp_path, samples, extension):
    """Every sample format decodes to its true number of frames, as float32 in [-1, 1]."""
    recording = samples[extension]
    path = _sample_file(tmp_path, recording)
    audio, rate = load_audio(path)
    assert rate == SAMPLERATE
    assert audio.dtype == np.float32
    assert audio.shape == (audio.size,)
    truth = round(recording.duration * rate)
    assert abs(audio.size - truth) <= 1
    assert abs(audio.size - duration(path) * rate) <= 1
    assert np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.05  # the speech, not silence


@pytest.mark.parametrize("extension", FORMATS)
@pytest.mark.parametrize("samplerate", [8_000, 44_100])
def test_load_is_aligned_with_the_signal(tmp_path, extension, samplerate):
    """Encoder priming is skipped: the decoded samples line up with the encoded ones."""
    if extension == "ogg" and samplerate == 44_100:
        samplerate = 48_000  # Opus has no 44.1 kHz; the encoder would resample
    signal_ = speech_like(4.0, samplerate, seed=5)
    path = _write(tmp_path, f"clip.{extension}", encode(signal_, samplerate, extension))
    audio, rate = load_audio(path)
    assert rate == samplerate
    assert abs(audio.size - signal_.size) <= samplerate // 1000  # MP4 times in milliseconds
    n = min(audio.size, signal_.size)
    lags = range(-64, 65)
    overlap = [
        float(np.dot(audio[max(0, k) : n + min(0, k)], signal_[max(0, -k) : n - max(0, k)]))
        for k in lags
    ]
    # within 0.1 ms (libsndfile's Opus decoder at 48 kHz leads by two samples, 42 µs);
    # priming left in would shift by 312 (Opus) to over a thousand (AAC) samples
    assert abs(lags[int(np.argmax(overlap))]) <= samplerate // 10_000
    correlation = np.corrcoef(audio[:n], signal_[:n])[0, 1]
    assert correlation > 0.9


def test_load_m4a_length_matches_duration_at_odd_rates(tmp_path):
    """The padding of the last AAC packet is cut where the edit list says the audio ends."""
    for samplerate in (22_050, 44_100, 48_000):
        data = encode(speech_like(3.7131, samplerate, seed=1), samplerate, "m4a")
        path = _write(tmp_path, f"clip-{samplerate}.m4a", data)
        audio, rate = load_audio(path)
        assert abs(audio.size - duration(path) * rate) <= 1


@pytest.mark.parametrize("extension", FORMATS)
def test_stereo_shapes(tmp_path, extension):
    stereo = _stereo_signal(3.0, SAMPLERATE)
    path = _write(tmp_path, f"stereo.{extension}", encode(stereo, SAMPLERATE, extension))
    both, rate = load_audio(path, mono=False)
    mono, rate_mono = load_audio(path)
    assert rate == rate_mono == SAMPLERATE
    assert both.dtype == mono.dtype == np.float32
    assert both.ndim == 2 and both.shape[1] == 2
    assert mono.shape == (both.shape[0],)
    assert abs(both.shape[0] - stereo.shape[0]) <= SAMPLERATE // 1000
    np.testing.assert_allclose(mono, both.mean(axis=1), atol=1e-6)
    # the channels are told apart: left correlates with left, not with right
    n = min(both.shape[0], stereo.shape[0])
    assert np.corrcoef(both[:n, 0], stereo[:n, 0])[0, 1] > 0.9
    assert np.corrcoef(both[:n, 1], stereo[:n, 1])[0, 1] > 0.9
    assert abs(np.corrcoef(both[:n, 0], stereo[:n, 1])[0, 1]) < 0.5


def test_wav_samples_are_exact(tmp_path):
    stereo = _stereo_signal(1.0, 8_000)
    path = _write(tmp_path, "exact.wav", encode(stereo, 8_000, "wav"))
    expected, _ = soundfile.read(path, dtype="float32")
    both, _ = load_audio(path, mono=False)
    np.testing.assert_array_equal(both, expected)
    mono, _ = load_audio(path)
    np.testing.assert_allclose(mono, expected.mean(axis=1), atol=1e-7)


def test_mono_file_kept_two_dimensional(tmp_path):
    path = _write(tmp_path, "m.flac", encode(speech_like(1.0, SAMPLERATE), SAMPLERATE, "flac"))
    audio, _ = load_audio(path, mono=False)
    assert audio.shape == (SAMPLERATE, 1)


def test_more_than_two_channels(tmp_path):
    channels = np.stack([np.full(4000, level, np.float32) for level in (0.1, 0.2, 0.3, 0.6)], 1)
    path = tmp_path / "quad.wav"
    soundfile.write(path, channels, 8_000)
    both, _ = load_audio(path, mono=False, sr=16_000)
    assert both.shape == (8000, 4)
    np.testing.assert_allclose(both[100:-100].mean(axis=0), [0.1, 0.2, 0.3, 0.6], atol=1e-3)
    mono, _ = load_audio(path)
    np.testing.assert_allclose(mono, 0.3, atol=1e-4)


def test_overshoot_is_clipped(tmp_path):
    """A float WAV beyond full scale comes back within [-1, 1]."""
    path = tmp_path / "loud.wav"
    soundfile.write(path, np.array([0.5, 1.5, -2.0, 0.25], np.float32), 8_000, subtype="FLOAT")
    audio, _ = load_audio(path)
    np.testing.assert_array_equal(audio, np.array([0.5, 1.0, -1.0, 0.25], np.float32))


@pytest.mark.parametrize(
    ("orig", "target"),
    [(44_100, 16_000), (8_000, 16_000), (16_000, 8_000), (48_000, 44_100), (16_000, 22_050)],
)
@pytest.mark.parametrize("extension", ["wav", "m4a"])
def test_resampled_length(tmp_path, orig, target, extension):
    signal_ = speech_like(3.3, orig, seed=4)
    path = _write(tmp_path, f"clip.{extension}", encode(signal_, orig, extension))
    native, native_rate = load_audio(path)
    assert native_rate == orig
    resampled, rate = load_audio(path, sr=target)
    assert rate == target
    assert resampled.dtype == np.float32
    assert abs(resampled.size - round(native.size * target / orig)) <= 1
    assert np.abs(resampled).max() <= 1.0


@pytest.mark.parametrize(("orig", "target"), [(44_100, 16_000), (8_000, 16_000)])
def test_resampling_is_faithful_to_the_end(tmp_path, orig, target):
    """A sine resampled is the same sine, up to its last samples: the resampler was flushed."""
    path = _sine_wav(tmp_path, orig, 2.0)
    resampled, _ = load_audio(path, sr=target)
    assert resampled.size == 2 * target
    reference = 0.5 * np.sin(2 * np.pi * 300.0 * np.arange(resampled.size) / target)
    error = np.abs(resampled - reference)
    assert error[16:-16].max() < 1e-3
    assert error[-16:].max() < 0.1  # the edge of a finite filter, not a lost tail


def test_resampling_stereo_keeps_channels(tmp_path):
    stereo = _stereo_signal(2.0, 44_100)
    path = _write(tmp_path, "s.wav", encode(stereo, 44_100, "wav"))
    both, rate = load_audio(path, sr=16_000, mono=False)
    assert rate == 16_000
    assert both.shape == (32_000, 2)
    assert np.std(both[:, 0]) == pytest.approx(2 * np.std(both[:, 1]), rel=0.1)


def test_same_rate_means_no_resampling(tmp_path):
    path = _write(tmp_path, "a.m4a", encode(speech_like(2.0, SAMPLERATE), SAMPLERATE, "m4a"))
    native, _ = load_audio(path)
    same, rate = load_audio(path, sr=SAMPLERATE)
    assert rate == SAMPLERATE
    np.testing.assert_array_equal(native, same)


@pytest.mark.parametrize("sr", [0, -16_000, 16_000.5, True])
def test_bad_sample_rate(tmp_path, sr):
    path = _sine_wav(tmp_path, 8_000, 0.1)
    with pytest.raises(ValueError, match="sr must be"):
        load_audio(path, sr=sr)


@pytest.mark.parametrize("content", NOT_AUDIO, ids=NOT_AUDIO_IDS)
def test_load_not_audio_is_an_error(tmp_path, content):
    path = _write(tmp_path, "x.m4a", content)
    with pytest.raises(NotAudioError):
        load_audio(path)


def test_load_truncated_files_are_errors(tmp_path):
    """A FLAC cut short announces more than it holds: an error, not fewer samples."""
    m4a = encode(speech_like(5.0, SAMPLERATE), SAMPLERATE, "m4a")
    flac = encode(speech_like(20.0, SAMPLERATE), SAMPLERATE, "flac")
    for name, data in [("cut.m4a", m4a), ("cut.flac", flac)]:
        path = _write(tmp_path, name, data[: len(data) * 6 // 10])
        with pytest.raises(NotAudioError):
            load_audio(path)


def test_truncated_faststart_m4a_is_an_error(tmp_path):
    """moov first: every reader of the header sees the full length; decoding sees the cut."""
    source = _write(tmp_path, "a.m4a", encode(speech_like(20.0, SAMPLERATE), SAMPLERATE, "m4a"))
    faststart = tmp_path / "faststart.m4a"
    with (
        av.open(str(source)) as inp,
        av.open(str(faststart), "w", format="ipod", options={"movflags": "faststart"}) as out,
    ):
        stream = out.add_stream_from_template(inp.streams.audio[0])
        for packet in inp.demux(inp.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = faststart.read_bytes()
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")
    with av.open(str(faststart)) as container:
        packets = container.demux(container.streams.audio[0])
        ends = [packet.pos + packet.size for packet in packets if packet.size]
    # mid-packet cuts fail to decode; a cut between packets decodes cleanly, only shorter
    cuts = {
        "60%": len(data) * 6 // 10,
        "95%": len(data) * 95 // 100,
        "boundary": ends[len(ends) // 2],
    }
    for name, cut in cuts.items():
        path = _write(tmp_path, f"cut-{name}.m4a", data[:cut])
        assert duration(path) == pytest.approx(20.0, rel=0.01)  # the header still says 20 s
        with pytest.raises(NotAudioError):
            load_audio(path)
        with pytest.raises(NotAudioError):
            convert(path, "wav")
        assert not path.with_suffix(".wav").exists()


def test_empty_wav_is_not_audio(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, np.float32), 8_000)
    with pytest.raises(NotAudioError, match="no audio frame"):
        load_audio(path)


# --- convert ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "flac"])
@pytest.mark.parametrize("extension", FORMATS)
def test_convert_round_trip(tmp_path, samples, extension, fmt):
    source = _sample_file(tmp_path, samples[extension])
    copy = convert(source, fmt)
    decoded, rate = load_audio(source, mono=False)
    if extension == fmt:
        assert copy == source  # already in that format: kept as it is
    else:
        assert copy == source.with_suffix(f".{fmt}")
    info = soundfile.info(copy)
    assert info.format == fmt.upper()
    assert info.samplerate == rate
    assert info.channels == decoded.shape[1]
    assert abs(info.frames - decoded.shape[0]) <= 1
    assert info.subtype == "PCM_16"
    written, _ = soundfile.read(copy, dtype="float32", always_2d=True)
    n = min(len(written), len(decoded))
    np.testing.assert_allclose(written[:n], decoded[:n], atol=1 / 2**15 + 1e-6)
    assert _listing(tmp_path) == sorted({source.name, copy.name})  # no temporary left


@pytest.mark.parametrize("extension", ["m4a", "ogg"])
def test_convert_stereo(tmp_path, extension):
    stereo = _stereo_signal(2.5, SAMPLERATE)
    source = _write(tmp_path, f"s.{extension}", encode(stereo, SAMPLERATE, extension))
    copy = convert(source, "flac")
    decoded, _ = load_audio(source, mono=False)
    written, rate = load_audio(copy, mono=False)
    assert rate == SAMPLERATE
    assert written.shape == decoded.shape
    np.testing.assert_allclose(written, decoded, atol=1 / 2**15 + 1e-6)


def test_convert_to_an_explicit_destination(tmp_path):
    source = _write(tmp_path, "a.wav", encode(speech_like(1.0, 8_000), 8_000, "wav"))
    dest = tmp_path / "copies" / "deeper" / "a-copy.flac"
    assert convert(source, "FLAC", dest) == dest
    assert soundfile.info(dest).format == "FLAC"
    # a WAV asked as WAV somewhere else is written there, not returned
    other = tmp_path / "copies" / "a.wav"
    assert convert(source, "wav", other) == other
    np.testing.assert_array_equal(soundfile.read(other)[0], soundfile.read(source)[0])


def test_convert_keeps_pcm_wav_and_copies_other_encodings(tmp_path):
    float_wav = tmp_path / "float.wav"
    soundfile.write(float_wav, np.zeros(800, np.float32), 8_000, subtype="FLOAT")
    assert convert(float_wav, "wav") == float_wav
    # telephony's G.711 mu-law: soundfile reads it, Python's wave module and many tools do not
    signal_ = speech_like(1.0, 8_000)
    ulaw = tmp_path / "call.wav"
    soundfile.write(ulaw, signal_, 8_000, subtype="ULAW")
    copy = convert(ulaw, "wav")
    assert copy == tmp_path / "call.pcm16.wav"
    assert soundfile.info(copy).subtype == "PCM_16"
    np.testing.assert_allclose(soundfile.read(copy)[0], soundfile.read(ulaw)[0], atol=1e-4)
    assert convert(ulaw, "wav") == copy  # found again, not rewritten
    explicit = convert(ulaw, "wav", tmp_path / "pcm.wav")
    assert soundfile.info(explicit).subtype == "PCM_16"
    with pytest.raises(ValueError, match="would overwrite"):
        convert(ulaw, "wav", ulaw)


def test_convert_content_decides(tmp_path):
    """An .m4a named .flac is converted, not taken for a FLAC."""
    source = _write(tmp_path, "odd.flac", encode(speech_like(1.0, SAMPLERATE), SAMPLERATE, "m4a"))
    copy = convert(source, "wav")
    assert copy == tmp_path / "odd.wav"
    assert soundfile.info(copy).frames == SAMPLERATE


@pytest.mark.parametrize("fmt", ["mp3", "WAVE", "", None])
def test_convert_unknown_format(tmp_path, fmt):
    path = _sine_wav(tmp_path, 8_000, 0.1)
    with pytest.raises(ValueError, match="fmt must be"):
        convert(path, fmt)


@pytest.mark.parametrize("content", NOT_AUDIO, ids=NOT_AUDIO_IDS)
def test_convert_not_audio_leaves_nothing(tmp_path, content):
    source = _write(tmp_path, "x.m4a", content)
    with pytest.raises(NotAudioError):
        convert(source, "wav")
    assert _listing(tmp_path) == ["x.m4a"]


def test_convert_failing_midway_leaves_nothing(tmp_path):
    """A FLAC that loses sync after several blocks were written: no copy, no temporary."""
    data = encode(speech_like(20.0, SAMPLERATE), SAMPLERATE, "flac")
    source = _write(tmp_path, "cut.flac", data[: len(data) * 6 // 10])
    with pytest.raises(NotAudioError):
        convert(source, "wav")
    assert _listing(tmp_path) == ["cut.flac"]


def test_convert_interrupted_leaves_nothing(tmp_path, monkeypatch):
    source = _write(tmp_path, "a.m4a", encode(speech_like(10.0, SAMPLERATE), SAMPLERATE, "m4a"))
    real_write = soundfile.SoundFile.write
    calls = []

    def write_then_interrupt(self, data):
        calls.append(len(data))
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(self, data)

    monkeypatch.setattr(soundfile.SoundFile, "write", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        convert(source, "wav")
    assert len(calls) == 2
    assert _listing(tmp_path) == ["a.m4a"]


def test_convert_disk_error_is_an_os_error_and_keeps_the_old_copy(tmp_path):
    """Writing fails for real (files over 50 kB refused): OSError, the earlier copy intact."""
    source = _write(tmp_path, "a.m4a", encode(speech_like(10.0, SAMPLERATE), SAMPLERATE, "m4a"))
    copy = convert(source, "wav")
    before = copy.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))
    try:
        with pytest.raises(OSError, match="cannot write"):
            convert(source, "wav", overwrite=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert copy.read_bytes() == before
    assert _listing(tmp_path) == ["a.m4a", "a.wav"]


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_convert_twice_does_not_rewrite(tmp_path, fmt):
    source = _write(tmp_path, "a.mp3", encode(speech_like(3.0, SAMPLERATE), SAMPLERATE, "mp3"))
    copy = convert(source, fmt)
    first = copy.stat()
    assert convert(source, fmt) == copy
    second = copy.stat()
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert convert(source, fmt, overwrite=True) == copy
    assert copy.stat().st_ino != first.st_ino  # a new file renamed into place


def test_convert_redoes_an_invalid_or_stale_copy(tmp_path):
    source = _write(tmp_path, "a.m4a", encode(speech_like(3.0, SAMPLERATE), SAMPLERATE, "m4a"))
    copy = tmp_path / "a.wav"
    expected_frames = round(duration(source) * SAMPLERATE)

    def redone(content_writer) -> bool:
        content_writer()
        inode = copy.stat().st_ino
        convert(source, "wav")
        info = soundfile.info(copy)
        assert (info.frames, info.samplerate, info.channels) == (expected_frames, SAMPLERATE, 1)
        return copy.stat().st_ino != inode

    assert redone(lambda: copy.write_bytes(b"<html>not a wav</html>"))
    # a whole WAV, but of another length, rate or channel count
    assert redone(lambda: soundfile.write(copy, np.zeros(1000, np.float32), SAMPLERATE))
    assert redone(lambda: soundfile.write(copy, np.zeros(expected_frames, np.float32), 8_000))
    stereo = np.zeros((expected_frames, 2), np.float32)
    assert redone(lambda: soundfile.write(copy, stereo, SAMPLERATE))
    # a FLAC under the .wav name is not the WAV asked for
    assert redone(
        lambda: soundfile.write(copy, np.zeros(expected_frames), SAMPLERATE, format="FLAC")
    )

    # the source downloaded again after the copy was made: the copy is stale
    def older_copy() -> None:
        stat = source.stat()
        os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))

    assert redone(older_copy)
    assert not redone(lambda: None)  # and now it is up to date


def test_convert_refuses_to_overwrite_the_source(tmp_path):
    source = _write(tmp_path, "a.m4a", encode(speech_like(1.0, SAMPLERATE), SAMPLERATE, "m4a"))
    before = source.read_bytes()
    with pytest.raises(ValueError, match="would overwrite"):
        convert(source, "wav", dest=source)
    assert source.read_bytes() == before
