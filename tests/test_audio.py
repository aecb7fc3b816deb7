"""Audio path: file source (WAV, FLAC, video tracks, bad files), speech segmentation, prosody.

Speech comes from espeak-ng, placed between stretches of silence and white noise with numpy;
tones and videos are synthesised here. Nothing is read from ../shared.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import time
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from device.audio.prosody import utterance_prosody, window_prosody
from device.audio.vad import FRAME_SAMPLES, SpeechSegmenter, Utterance
from device.capture.audio_file import AudioFileSource, has_audio_track, read_audio
from device.config import SpeechConfig, config_from_dict
from device.errors import ConfigError, MediaError
from device.observation import SAMPLE_RATE, AudioBlock

pytestmark = pytest.mark.timeout(120)

SENTENCE = "The weather has been quite grey this week, and I have not been sleeping well at all."
COUNTED = "I went to the market on Monday and bought some apples and bread."  # 17 syllables


def espeak(tmp: Path, text: str, speed: int = 175) -> tuple[np.ndarray, int]:
    """espeak-ng speech as float32 with its leading and trailing silence cut off."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required for the speech tests (setup.sh --dev installs it)")
    path = tmp / f"espeak_{speed}_{zlib.crc32(text.encode()):08x}.wav"
    subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    x, rate = sf.read(path, dtype="float32")
    loud = np.flatnonzero(np.abs(x) > 0.01)
    return x[loud[0] : loud[-1] + 1], rate


def harmonic_tone(f0: float, seconds: float, rate: int = SAMPLE_RATE, amplitude: float = 0.3) -> np.ndarray:
    """A voice-like tone: F0 and six harmonics falling off as 1/k."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
    return (amplitude * x / np.abs(x).max()).astype(np.float32)


def segment(path: Path, config: SpeechConfig | None = None, block_ms: int = 30) -> list[Utterance]:
    segmenter = SpeechSegmenter(config)
    out: list[Utterance] = []
    for block in AudioFileSource(path, block_ms=block_ms):
        out += segmenter.push(block)
        # memory stays bounded while speech goes on
        assert len(segmenter._frames) <= segmenter.max_frames
    return out + segmenter.flush()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


# ---------------------------------------------------------------- voice activity / utterances


@pytest.fixture(scope="module")
def speech_mix(media: Path) -> tuple[Path, list[tuple[float, float]], list[tuple[float, float]]]:
    """22.05 kHz WAV: speech placed between digital silence, white noise, and speech over noise.

    Returns the file, where speech was placed, and the speech-free stretches (silence or noise).
    """
    speech, rate = espeak(media, SENTENCE)
    rng = np.random.default_rng(7)

    def silence(s: float) -> np.ndarray:
        return np.zeros(int(s * rate), np.float32)

    def noise(s: float, amplitude: float) -> np.ndarray:
        return (rng.standard_normal(int(s * rate)) * amplitude).astype(np.float32)

    parts: list[tuple[str, np.ndarray]] = [
        ("none", silence(1.5)),
        ("speech", speech),
        ("none", silence(2.0)),
        ("none", noise(3.0, 0.003)),  # about -50 dBFS, starting suddenly after digital silence
        ("speech", speech),
        ("none", noise(2.5, 0.01)),
        ("speech", 0.5 * speech + noise(len(speech) / rate, 0.003)),  # quieter, over noise
        ("none", noise(2.0, 0.003)),
        ("none", silence(1.0)),
    ]
    placed, free, pos = [], [], 0
    for kind, x in parts:
        span = (pos / rate, (pos + len(x)) / rate)
        (placed if kind == "speech" else free).append(span)
        pos += len(x)
    path = media / "mix.wav"
    sf.write(path, np.concatenate([x for _, x in parts]), rate, subtype="PCM_16")
    return path, placed, free


def test_vad_finds_placed_speech_and_nothing_else(speech_mix):
    path, placed, free = speech_mix
    config = SpeechConfig()
    utterances = segment(path, config)
    assert len(utterances) == len(placed), [(u.start, u.end) for u in utterances]
    pre, post = config.pre_roll_ms / 1000, config.post_roll_ms / 1000
    for u, (start, end) in zip(utterances, placed, strict=True):
        # the utterance begins pre-roll before the speech and ends post-roll after it
        assert abs((u.start + pre) - start) < 0.3, (u.start, start)
        assert abs((u.end - post) - end) < 0.3, (u.end, end)
        assert u.pcm.dtype == np.float32 and np.abs(u.pcm).max() <= 1.0
        assert len(u.pcm) == u.total_frames * FRAME_SAMPLES
        assert abs(u.duration - len(u.pcm) / SAMPLE_RATE) < 1e-6
        assert 0 < u.speech_frames <= u.total_frames and not u.cut
    for a, b in free:
        inside = [u for u in utterances if u.start + pre + 0.3 < b and u.end - post - 0.3 > a]
        assert not inside, f"speech found in the speech-free stretch {a:.2f}-{b:.2f}"
    # SNR: clean speech after digital silence is far above the -50 dBFS noise behind the third
    assert utterances[0].snr_db > 40
    assert 10 < utterances[2].snr_db < utterances[1].snr_db


def test_vad_block_size_does_not_matter(speech_mix):
    path, _, _ = speech_mix
    spans_30 = [(round(u.start, 2), round(u.end, 2)) for u in segment(path, block_ms=30)]
    spans_100 = [(round(u.start, 2), round(u.end, 2)) for u in segment(path, block_ms=100)]
    assert spans_30 == spans_100


@pytest.mark.parametrize("amplitude", [0.0, 0.001, 0.003, 0.01])
def test_no_utterances_in_silence_or_white_noise(media: Path, amplitude: float):
    rng = np.random.default_rng(1)
    x = np.concatenate([np.zeros(SAMPLE_RATE), rng.standard_normal(SAMPLE_RATE * 12) * amplitude])
    path = media / f"noise_{amplitude}.wav"
    sf.write(path, x.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    segmenter = SpeechSegmenter()
    utterances = []
    for block in AudioFileSource(path):
        utterances += segmenter.push(block)
    utterances += segmenter.flush()
    assert utterances == []
    if amplitude:
        # the background level is tracked: RMS of the noise in dBFS
        assert segmenter.noise_floor_db == pytest.approx(20 * np.log10(amplitude), abs=2.0)


def test_short_bursts_are_dropped_and_long_speech_is_cut(media: Path):
    speech, rate = espeak(media, SENTENCE)
    burst = speech[: int(0.25 * rate)]
    gap = np.zeros(int(1.5 * rate), np.float32)
    # 5 copies back to back: about 18 s of speech without a pause long enough to end it
    long_speech = np.concatenate([speech] * 5)
    path = media / "bursts.wav"
    sf.write(path, np.concatenate([gap, burst, gap, long_speech, gap]), rate, subtype="PCM_16")
    config = SpeechConfig(max_utterance_ms=4000)
    utterances = segment(path, config)
    assert utterances, "the long speech was not found"
    assert all(u.start > 1.5 + 0.25 + 0.5 for u in utterances), "the 250 ms burst should be dropped"
    assert all(u.duration <= 4.0 + 1e-6 for u in utterances)
    assert sum(u.cut for u in utterances) >= 3
    # the pieces follow on without gaps while speech goes on
    for a, b in itertools.pairwise(utterances):
        if a.cut:
            assert b.start == pytest.approx(a.end, abs=1e-6)


def test_pre_roll_does_not_reach_into_the_previous_utterance(media: Path):
    speech, rate = espeak(media, "Yes. I think so.")
    # longer than the hangover, shorter than pre-roll + post-roll
    gap = np.zeros(int(0.45 * rate), np.float32)
    path = media / "close.wav"
    sf.write(path, np.concatenate([gap, speech, gap, speech, gap, gap]), rate, subtype="PCM_16")
    utterances = segment(path, SpeechConfig(min_utterance_ms=300))
    for a, b in itertools.pairwise(utterances):
        assert b.start >= a.end - 1e-6


def test_gap_in_live_blocks_restarts_framing():
    segmenter = SpeechSegmenter()
    silence = np.zeros(400, np.int16)  # blocks that are not a multiple of a VAD frame
    segmenter.push(AudioBlock(0.0, silence))
    segmenter.push(AudioBlock(0.025, silence))
    segmenter.push(AudioBlock(5.0, silence))  # the source dropped blocks
    assert segmenter._carry_t == pytest.approx(5.0)
    assert segmenter.flush() == []


# ---------------------------------------------------------------- prosody


@pytest.mark.parametrize("f0", [150.0, 220.0])
def test_f0_of_harmonic_tone(f0: float):
    p = utterance_prosody(harmonic_tone(f0, 2.0))
    assert p["f0_mean_hz"] == pytest.approx(f0, abs=3.0)
    assert p["f0_sd_hz"] < 1.0 and p["f0_sd_st"] < 0.1
    assert p["f0_mean_st"] == pytest.approx(12 * np.log2(f0 / 100), abs=0.1)
    assert p["voiced_share"] > 0.95


def test_f0_in_noise_and_glide():
    rng = np.random.default_rng(2)
    noisy = harmonic_tone(150, 2.0) + (rng.standard_normal(2 * SAMPLE_RATE) * 0.02).astype(np.float32)
    assert utterance_prosody(noisy)["f0_mean_hz"] == pytest.approx(150, abs=3.0)
    # a glide from 100 to 200 Hz: one octave, so the semitone range is about 12 * 0.8
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    phase = 2 * np.pi * (100 * t + 25 * t**2)
    glide = (0.3 * sum(np.sin(k * phase) / k for k in range(1, 6)) / 2).astype(np.float32)
    p = utterance_prosody(glide)
    assert p["f0_mean_hz"] == pytest.approx(150, abs=5)
    assert p["f0_range_st"] == pytest.approx(12 * np.log2(180 / 110), abs=1.0)


def test_no_pitch_in_noise_and_nothing_in_silence():
    rng = np.random.default_rng(3)
    p = utterance_prosody((rng.standard_normal(2 * SAMPLE_RATE) * 0.1).astype(np.float32))
    assert p["voiced_s"] == 0 and p["f0_mean_hz"] is None and p["nuclei"] == 0
    p = utterance_prosody(np.zeros(SAMPLE_RATE, np.float32))
    assert p["speech_start"] is None and p["f0_mean_hz"] is None and p["pause_ratio"] is None
    assert utterance_prosody(np.zeros(5, np.float32))["nuclei"] == 0


def test_pause_ratio_of_known_pattern():
    tone = harmonic_tone(150, 0.6)

    def silence(s: float) -> np.ndarray:
        return np.zeros(int(s * SAMPLE_RATE), np.float32)

    # pauses of 0.4 and 0.2 s count, 0.1 s is below the 150 ms minimum; leading and trailing
    # silence is outside the speaking span
    x = np.concatenate(
        [silence(0.3), tone, silence(0.4), tone, silence(0.2), tone, silence(0.1), tone, silence(0.3)]
    )
    p = utterance_prosody(x, t0=10.0)
    assert p["speech_start"] == pytest.approx(10.3, abs=0.02)
    assert p["speech_end"] == pytest.approx(13.4, abs=0.02)
    assert p["pause_count"] == 2
    assert p["pause_s"] == pytest.approx(0.6, abs=0.03)
    assert p["pause_ratio"] == pytest.approx(0.6 / 3.1, abs=0.02)
    assert p["mean_pause_s"] == pytest.approx(0.3, abs=0.02)
    assert p["nuclei"] == 4  # one intensity peak per tone burst


def test_window_prosody_counts_gaps_between_utterances_as_pauses():
    tone_low, tone_high = harmonic_tone(120, 1.0), harmonic_tone(180, 1.0)
    utterances = [
        utterance_prosody(tone_low, t0=1.0),
        utterance_prosody(tone_high, t0=3.0),
        utterance_prosody(tone_low, t0=6.0),
    ]
    w = window_prosody(utterances, 0.0, 10.0)
    assert w["n_utterances"] == 3
    assert w["speech_share"] == pytest.approx(0.3, abs=0.01)
    assert w["pause_ratio"] == pytest.approx(3.0 / 6.0, abs=0.01)  # gaps of 1 s and 2 s
    assert w["mean_pause_s"] == pytest.approx(1.5, abs=0.01)
    assert w["f0_mean_hz"] == pytest.approx((120 * 2 + 180) / 3, abs=2)
    # pooled SD: between-utterance spread, not the (near zero) within-utterance SD
    assert w["f0_sd_hz"] == pytest.approx(np.std([120, 120, 180]), abs=2)
    # the third utterance straddles the end of this window: half of it counts
    half = window_prosody(utterances, 0.0, 6.5)
    assert half["speech_s"] == pytest.approx(2.5, abs=0.02)
    assert half["pause_ratio"] == pytest.approx(3.0 / 5.5, abs=0.01)
    empty = window_prosody(utterances, 20.0, 30.0)
    assert empty["n_utterances"] == 0 and empty["speech_share"] == 0 and empty["pause_ratio"] is None


def test_window_prosody_from_segmented_speech(speech_mix):
    path, placed, _ = speech_mix
    utterances = segment(path)
    prosody = [utterance_prosody(u.pcm, t0=u.start) for u in utterances]
    end = placed[-1][1] + 1.0
    w = window_prosody(prosody, 0.0, end)
    placed_speech = sum(b - a for a, b in placed)
    assert w["speech_s"] == pytest.approx(placed_speech, rel=0.15)
    assert 0.3 < w["pause_ratio"] < 0.8  # long silences between the three sentences
    assert 60 < w["f0_mean_hz"] < 200


def test_speaking_rate_follows_espeak_speed(media: Path):
    rates = {}
    for speed in (100, 250):
        speech, rate = espeak(media, COUNTED, speed)
        path = media / f"rate_{speed}.wav"
        sf.write(path, speech, rate, subtype="PCM_16")
        pcm, _ = read_audio(path)
        p = utterance_prosody(pcm.astype(np.float32) / 32768)
        assert 10 <= p["nuclei"] <= 20  # 17 syllables, counted approximately
        rates[speed] = p["speaking_rate"]
    assert rates[250] > 1.5 * rates[100]


def test_clipped_audio_does_not_break_prosody(media: Path):
    speech, rate = espeak(media, SENTENCE)
    clipped = np.clip(speech * 30, -1, 1).astype(np.float32)
    p = utterance_prosody(clipped, sample_rate=rate)
    assert p["clipped_share"] > 0.1
    assert p["f0_mean_hz"] is None or 60 <= p["f0_mean_hz"] <= 400
    p = utterance_prosody(np.clip(harmonic_tone(150, 1.0) * 50, -1, 1))
    assert p["f0_mean_hz"] == pytest.approx(150, abs=3.0)
    weird = np.array([np.nan, np.inf, -np.inf, 2.0] * 4000, dtype=np.float32)
    utterance_prosody(weird)  # no exception, no warning


@pytest.mark.cpu_budget
def test_cpu_cost_per_second_of_audio(speech_mix, capsys: pytest.CaptureFixture[str]):
    """The speech path's budget is 2 % of real time on one core; VAD and prosody take a small part."""
    path, _, _ = speech_mix
    blocks = list(AudioFileSource(path))
    seconds = len(blocks) * 0.03
    t = time.process_time()
    segmenter = SpeechSegmenter()
    utterances = [u for b in blocks for u in segmenter.push(b)] + segmenter.flush()
    vad_ms = (time.process_time() - t) / seconds * 1000
    speech_seconds = sum(u.duration for u in utterances)
    t = time.process_time()
    for _ in range(3):
        for u in utterances:
            utterance_prosody(u.pcm, t0=u.start)
    prosody_ms = (time.process_time() - t) / 3 / speech_seconds * 1000
    with capsys.disabled():
        print(f"\nCPU per second of audio: VAD {vad_ms:.2f} ms, prosody {prosody_ms:.2f} ms", end=" ")
    # generous bounds (this machine may be busy): 20 ms/s would already be 2 % of real time
    assert vad_ms < 20
    assert prosody_ms < 20


# ---------------------------------------------------------------- reading files


def test_wav_48k_stereo_is_resampled_and_downmixed(media: Path):
    rate = 48000
    t = np.arange(2 * rate) / rate
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, 0.5 * left], axis=1).astype(np.float32)
    path = media / "stereo48k.wav"
    sf.write(path, stereo, rate, subtype="PCM_16")
    pcm, duration = read_audio(path)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert duration == pytest.approx(2.0, abs=0.01)
    assert np.abs(pcm).max() / 32768 == pytest.approx(0.3, abs=0.02)  # mean of the channels
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    assert np.argmax(spectrum) * SAMPLE_RATE / len(pcm) == pytest.approx(440, abs=2)


def test_blocks_are_exact_and_last_one_padded(media: Path):
    path = media / "tone_flac.flac"
    sf.write(path, harmonic_tone(200, 1.01, rate=44100), 44100, subtype="PCM_16")
    source = AudioFileSource(path, block_ms=30)
    blocks = list(source)
    assert all(len(b.pcm) == 480 and b.pcm.dtype == np.int16 for b in blocks)
    assert [b.t for b in blocks[:3]] == pytest.approx([0.0, 0.03, 0.06])
    assert not any(b.padded for b in blocks[:-1])
    last = blocks[-1]
    assert last.padded and 0 < last.valid < 480 and not last.pcm[last.valid :].any()
    assert source.duration == pytest.approx(1.01, abs=0.002)
    assert sum(len(b.samples) for b in blocks) == source.samples_read
    assert len(next(iter(AudioFileSource(path, block_ms=20))).pcm) == 320


def _write_video(path: Path, audio_codec: str | None, seconds: float = 2.0) -> None:
    """A small video with a 440 Hz stereo tone at 44.1 kHz as its audio track (or none)."""
    rate = 44100
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream(audio_codec, rate=rate, layout="stereo") if audio_codec else None
        for i in range(int(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i * 10) % 255, np.uint8), format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is None:
            return
        n = int(seconds * rate)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate) * 32767).astype(np.int16)
        fmt = audio.codec_context.format.name
        step = audio.codec_context.frame_size or 1024
        for k in range(0, n, step):
            chunk = np.stack([tone[k : k + step]] * 2)
            if fmt == "fltp":
                planar = (chunk / 32768).astype(np.float32)
                frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
            else:  # packed s16 (flac, pcm_s16le)
                packed = chunk.T.reshape(1, -1).copy()
                frame = av.AudioFrame.from_ndarray(packed, format="s16", layout="stereo")
            frame.sample_rate = rate
            frame.pts = k
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)


@pytest.mark.parametrize(
    ("name", "codec"), [("clip.mp4", "aac"), ("clip.mkv", "flac"), ("clip.avi", "pcm_s16le")]
)
def test_audio_track_of_video(media: Path, name: str, codec: str):
    path = media / name
    _write_video(path, codec)
    assert has_audio_track(path)
    pcm, duration = read_audio(path)
    assert duration == pytest.approx(2.0, abs=0.05)
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    assert np.argmax(spectrum) * SAMPLE_RATE / len(pcm) == pytest.approx(440, abs=2)
    assert np.abs(pcm).max() / 32768 == pytest.approx(0.3, abs=0.05)


def test_video_without_audio_track(media: Path):
    path = media / "silent_film.mp4"
    _write_video(path, None)
    assert has_audio_track(path) is False
    with pytest.raises(MediaError, match="has no audio track") as err:
        AudioFileSource(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _bad_files(media: Path) -> dict[str, tuple[Path, str]]:
    good = media / "good.wav"
    sf.write(good, harmonic_tone(150, 2.0), SAMPLE_RATE, subtype="PCM_16")
    data = good.read_bytes()
    files = {
        "missing": (media / "missing.wav", "no such file"),
        "directory": (media, "not a file"),
        "empty": (media / "empty.wav", "empty file"),
        "zero_length": (media / "zero.wav", "empty (zero length)"),
        "text": (media / "notes.wav", "not an audio or video file"),
        "truncated_header": (media / "cut_header.wav", "not an audio or video file"),
        "truncated_data": (media / "cut_data.wav", "truncated WAV file"),
    }
    files["empty"][0].write_bytes(b"")
    sf.write(files["zero_length"][0], np.zeros(0, np.float32), SAMPLE_RATE, subtype="PCM_16")
    files["text"][0].write_text("session notes, not audio\n" * 20)
    files["truncated_header"][0].write_bytes(data[:30])
    files["truncated_data"][0].write_bytes(data[: len(data) // 2])
    return files


@pytest.mark.parametrize(
    "case", ["missing", "directory", "empty", "zero_length", "text", "truncated_header", "truncated_data"]
)
def test_bad_files_give_one_line_media_error(media: Path, case: str):
    path, fragment = _bad_files(media)[case]
    with pytest.raises(MediaError) as err:
        read_audio(path)
    message = str(err.value)
    assert fragment in message and str(path) in message and "\n" not in message
    assert err.value.__cause__ is None  # raised "from None": no chained traceback


def test_corrupt_video_never_raises_anything_but_media_error(media: Path):
    good = media / "to_corrupt.mkv"
    _write_video(good, "flac")
    data = good.read_bytes()
    rng = np.random.default_rng(11)
    for i in range(6):
        damaged = bytearray(data)
        at = int(rng.integers(len(data) // 4, len(data) - 1000))
        damaged[at : at + 1000] = rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()
        path = media / f"corrupt_{i}.mkv"
        path.write_bytes(bytes(damaged))
        try:
            read_audio(path)  # FFmpeg may well decode around the damage
        except MediaError as err:
            assert str(path) in str(err) and "\n" not in str(err)


def test_has_audio_track_on_bad_input(media: Path):
    files = _bad_files(media)
    with pytest.raises(MediaError, match="not an audio or video file"):
        has_audio_track(files["text"][0])
    with pytest.raises(MediaError, match="no such file"):
        has_audio_track(files["missing"][0])


# ---------------------------------------------------------------- configuration


def test_speech_config_defaults_and_checks():
    speech = config_from_dict({}).speech
    assert speech.vad_aggressiveness == 2 and speech.max_utterance_ms == 8000
    custom = config_from_dict({"speech": {"vad_aggressiveness": 3, "pre_roll_ms": 200}}).speech
    assert custom.pre_roll_ms == 200 and custom.vad_aggressiveness == 3
    for document, fragment in [
        ({"speech": {"vad_aggressiveness": 4}}, "speech.vad_aggressiveness: must be between 0 and 3"),
        ({"speech": {"post_roll_ms": 500}}, "speech.post_roll_ms: must not exceed speech.hangover_ms"),
        ({"speech": {"min_utterance_ms": 5000, "max_utterance_ms": 4000}}, "speech.min_utterance_ms"),
        ({"speech": {"vad_agressiveness": 1}}, "speech.vad_agressiveness: unknown key"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            config_from_dict(document)


def test_safe_until_never_runs_ahead_of_an_utterance_still_to_come(tmp_path: Path):
    """The live daemon closes windows up to `safe_until`: no later utterance may start before it."""
    from tests.media import session_audio

    pcm, _ = session_audio(tmp_path, 14.0, [1.0, 5.0, 9.5])
    samples = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
    segmenter = SpeechSegmenter()
    block = 480  # 30 ms
    marks: list[float] = []
    starts: list[float] = []
    for k in range(0, len(samples), block):
        for utterance in segmenter.push(AudioBlock(k / 16000, samples[k : k + block])):
            assert not marks or utterance.start >= max(marks) - 1e-6, (utterance.start, max(marks))
            starts.append(utterance.start)
        safe = segmenter.safe_until
        if safe is not None:
            assert not marks or safe >= marks[-1] - 1e-6  # it only moves forward
            marks.append(safe)
    for utterance in segmenter.flush():
        assert utterance.start >= max(marks) - 1e-6
        starts.append(utterance.start)
    assert len(starts) == 3 and marks[-1] > 13.0
