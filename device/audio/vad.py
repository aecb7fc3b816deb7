"""Cut a stream of audio blocks into utterances: stretches of speech worth one speech-model call.

`SpeechSegmenter` runs the WebRTC voice activity detector on 30 ms frames and adds what a raw
frame-by-frame decision lacks:

- energy gate: a frame counts as speech only if the VAD says so and it is `energy_gate_db` above
  the quietest frame of the last second (a minimum-statistics floor, independent of the VAD).
  WebRTC's own noise model adapts slowly to a noise that starts suddenly (a fan switched on,
  or noise after digital silence) and calls it speech for seconds; the gate limits that to at
  most a second, and the stationarity check below drops what remains;
- stationarity: an utterance whose speech frames all have about the same level (spread of
  frame energy under 6 dB) is steady noise, not speech, and is dropped;
- onset: an utterance starts only when `onset_ms` of speech falls within a short stretch, so a
  single click or cough frame does not open one;
- pre-roll: the utterance starts `pre_roll_ms` before the detected onset (soft consonants and
  breathy word beginnings are often missed by the VAD), taken from a small ring buffer;
- hangover: non-speech shorter than `hangover_ms` (gaps between words, stop closures) does not
  end the utterance; when it does end, only `post_roll_ms` of the trailing non-speech is kept;
- minimum length: utterances whose speech (first to last speech frame) is shorter than
  `min_utterance_ms` are dropped;
- maximum length: speech longer than `max_utterance_ms` is cut into consecutive utterances, which
  bounds both the latency of the speech model and the memory held here.

It also tracks the background level (power of the non-speech frames between utterances) and
gives each utterance an estimated SNR, which the analyzer can turn into observation quality.

Memory is bounded at all times: a ring of pre-roll frames, at most `max_utterance_ms` of audio for
the open utterance, and less than one frame of carried samples.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from device.config import SpeechConfig
from device.observation import SAMPLE_RATE, AudioBlock

FRAME_MS = 30  # webrtcvad accepts 10, 20 or 30 ms; 30 ms is the cheapest per second of audio
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_S = FRAME_MS / 1000.0
_FULL_SCALE = 32768.0
# Power floor for dB conversion: below one LSB of int16 (about -96 dBFS), so digital silence
# gives a finite, very high SNR instead of a division by zero.
_POWER_FLOOR = 1e-10
# The background level follows slow changes (a fan starting, a window opened) over seconds.
_NOISE_TIME_CONSTANT_S = 3.0
# Window of the minimum-statistics floor behind the energy gate: long enough to span the quiet
# gaps between syllables of fluent speech, short enough that a sudden steady noise is rejected
# within about a second.
_FLOOR_WINDOW_S = 1.0
# Speech varies in level from syllable to syllable by well over 10 dB (10th to 90th percentile of
# frame energy); steady noise that fooled the VAD varies by a dB or two.
_MIN_SPEECH_SPREAD_DB = 6.0


@dataclass(frozen=True, eq=False)
class Utterance:
    """One stretch of speech: float32 PCM in [-1, 1] at 16 kHz covering [start, end) in item time.

    `speech_frames` of the `total_frames` 30 ms frames were judged speech by the VAD. `snr_db` is
    the mean power of those speech frames over the background level. `cut` is True when the
    utterance was ended by the maximum length, i.e. the speech goes on in the next utterance.
    """

    start: float
    end: float
    pcm: np.ndarray
    speech_frames: int
    total_frames: int
    snr_db: float
    cut: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def speech_share(self) -> float:
        return self.speech_frames / self.total_frames if self.total_frames else 0.0


@dataclass
class _VadFrame:
    t: float
    pcm: np.ndarray  # int16, FRAME_SAMPLES
    speech: bool
    power: float  # mean square, full scale = 1


def _db(power: float) -> float:
    return 10.0 * math.log10(max(power, _POWER_FLOOR))


class SpeechSegmenter:
    """Streaming utterance segmentation: `push(block)` as audio arrives, `flush()` at the end."""

    def __init__(self, config: SpeechConfig | None = None) -> None:
        c = config or SpeechConfig()
        self.config = c
        self._vad = webrtcvad.Vad(c.vad_aggressiveness)
        self.onset_frames = max(1, math.ceil(c.onset_ms / FRAME_MS))
        # "onset_frames of speech within a stretch of 2*onset_frames-1": a majority, so one
        # dropped frame inside the onset does not delay the start
        self.onset_window = 2 * self.onset_frames - 1
        self.pre_roll_frames = round(c.pre_roll_ms / FRAME_MS)
        self.hangover_frames = max(1, math.ceil(c.hangover_ms / FRAME_MS))
        self.post_roll_frames = min(round(c.post_roll_ms / FRAME_MS), self.hangover_frames)
        self.min_speech_frames = max(1, math.ceil(c.min_utterance_ms / FRAME_MS))
        self.max_frames = max(self.onset_window + self.pre_roll_frames + 1, c.max_utterance_ms // FRAME_MS)
        self.gate_db = float(c.energy_gate_db)
        self._recent_db: deque[float] = deque(maxlen=round(_FLOOR_WINDOW_S / FRAME_S))
        # every frame passes through the ring, so pre-roll is there when an onset is confirmed
        self._ring: deque[_VadFrame] = deque(maxlen=self.pre_roll_frames + self.onset_window)
        self._frames: list[_VadFrame] = []  # the open utterance; never longer than max_frames
        self._active = False
        self._last_speech = -1  # index in _frames of the latest speech frame, -1 = none yet
        self._silence_run = 0  # non-speech frames since the latest speech frame
        self._last_end = -math.inf  # pre-roll never reaches back into the previous utterance
        self._carry = np.zeros(0, dtype=np.int16)  # < one frame of samples between blocks
        self._carry_t = 0.0
        self._noise_power: float | None = None
        self._noise_frames = 0
        self.frames_seen = 0
        self.speech_frames_seen = 0
        self.utterances_dropped = 0  # too short, or steady noise

    @property
    def noise_floor_db(self) -> float | None:
        """Background level in dBFS (RMS of the non-speech frames), None before any was heard."""
        return None if self._noise_power is None else _db(self._noise_power)

    @property
    def active(self) -> bool:
        """True while an utterance is open."""
        return self._active

    @property
    def safe_until(self) -> float | None:
        """No utterance still to come can start before this item time; None before any audio.

        An open utterance started at its first frame; otherwise a new one can reach back at most
        to the oldest frame of the pre-roll/onset ring. Observations of speech are stamped at an
        utterance's middle, so none still to come is earlier than this: the aggregator can close
        the windows before it without waiting for the worst-case utterance length.
        """
        if self._active and self._frames:
            return self._frames[0].t
        if self._ring:
            return self._ring[0].t
        return None

    def push(self, block: AudioBlock) -> list[Utterance]:
        """Feed one block; return the utterances it completed (usually none)."""
        samples = block.samples
        if len(samples) == 0:
            return []
        expected_t = self._carry_t + len(self._carry) / SAMPLE_RATE
        if len(self._carry) == 0 or abs(block.t - expected_t) > FRAME_S:
            # first block, or a gap (a live source dropped blocks): restart framing at this block
            # so frame times stay true to item time; the few carried samples are dropped
            self._carry = samples
            self._carry_t = block.t
        else:
            self._carry = np.concatenate([self._carry, samples])
        whole = len(self._carry) // FRAME_SAMPLES
        out: list[Utterance] = []
        for i in range(whole):
            frame = self._carry[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
            out.extend(self._step(self._carry_t + i * FRAME_S, frame))
        self._carry = self._carry[whole * FRAME_SAMPLES :].copy()
        self._carry_t += whole * FRAME_S
        return out

    def flush(self) -> list[Utterance]:
        """End of stream: close the open utterance (if long enough) and reset the framing.

        The background level is kept, so a segmenter can carry on into the next recording.
        """
        out: list[Utterance] = []
        if self._active:
            out.extend(self._close(cut=False))
        self._active = False
        self._frames = []
        self._ring.clear()
        self._carry = np.zeros(0, dtype=np.int16)
        self._last_end = -math.inf
        return out

    def _step(self, t: float, pcm: np.ndarray) -> list[Utterance]:
        x = pcm.astype(np.float32) / _FULL_SCALE
        power = float(np.dot(x, x)) / len(x)
        level = _db(power)
        self._recent_db.append(level)
        loud_enough = level >= min(self._recent_db) + self.gate_db
        speech = loud_enough and self._vad.is_speech(pcm.tobytes(), SAMPLE_RATE)
        frame = _VadFrame(t, pcm.copy(), speech, power)
        self.frames_seen += 1
        self.speech_frames_seen += int(speech)
        self._ring.append(frame)
        if not self._active:
            if not speech:
                self._track_noise(frame.power)
                return []
            # frames already given to the previous utterance do not count towards a new onset
            recent = [f for f in list(self._ring)[-self.onset_window :] if f.t >= self._last_end - 1e-6]
            if sum(f.speech for f in recent) >= self.onset_frames:
                self._open()
            return []
        self._append(frame)
        if self._silence_run >= self.hangover_frames:
            return self._close(cut=False)
        if len(self._frames) >= self.max_frames:
            return self._close(cut=True)
        return []

    def _track_noise(self, power: float) -> None:
        # running mean over the first frames, then an exponential average (time constant a few s)
        self._noise_frames += 1
        alpha = max(FRAME_S / _NOISE_TIME_CONSTANT_S, 1.0 / self._noise_frames)
        if self._noise_power is None:
            self._noise_power = power
        else:
            self._noise_power += alpha * (power - self._noise_power)

    def _append(self, frame: _VadFrame) -> None:
        self._frames.append(frame)
        if frame.speech:
            self._last_speech = len(self._frames) - 1
            self._silence_run = 0
        else:
            self._silence_run += 1

    def _open(self) -> None:
        ring = list(self._ring)
        first_recent = len(ring) - min(self.onset_window, len(ring))
        onset = next(i for i in range(first_recent, len(ring))
                     if ring[i].speech and ring[i].t >= self._last_end - 1e-6)
        # small tolerance: frame times are sums of floats
        pre = [f for f in ring[max(0, onset - self.pre_roll_frames) : onset] if f.t >= self._last_end - 1e-6]
        self._frames = []
        self._last_speech = -1
        self._silence_run = 0
        self._active = True
        for f in pre + ring[onset:]:
            self._append(f)

    def _close(self, cut: bool) -> list[Utterance]:
        frames = self._frames
        if self._last_speech < 0:
            keep, rest = 0, frames
        elif cut and self._silence_run == 0:
            keep, rest = len(frames), []
        else:
            keep = min(len(frames), self._last_speech + 1 + self.post_roll_frames)
            rest = frames[keep:]
        emitted = frames[:keep]
        if cut:
            # speech goes on: the next utterance starts right here, without pre-roll; trailing
            # non-speech already seen stays with it and keeps counting towards the hangover
            silence = self._silence_run
            self._frames = []
            self._last_speech = -1
            for f in rest:
                self._append(f)
            self._silence_run = silence
        else:
            self._active = False
            self._frames = []
            self._last_speech = -1
            self._silence_run = 0
        if not emitted:
            return []
        self._last_end = emitted[-1].t + FRAME_S
        utterance = self._make(emitted, cut)
        if utterance is None:
            self.utterances_dropped += 1
            return []
        return [utterance]

    def _make(self, frames: list[_VadFrame], cut: bool) -> Utterance | None:
        flags = [f.speech for f in frames]
        first = flags.index(True)
        last = len(flags) - 1 - flags[::-1].index(True)
        if last - first + 1 < self.min_speech_frames:
            return None
        speech_powers = np.array([f.power for f in frames if f.speech])
        low, high = np.percentile(10.0 * np.log10(np.maximum(speech_powers, _POWER_FLOOR)), [10, 90])
        if high - low < _MIN_SPEECH_SPREAD_DB:
            return None
        speech_power = float(np.mean(speech_powers))
        if self._noise_power is not None:
            noise_power = self._noise_power
        else:
            # no background heard yet (speech from the first frame): the quietest tenth of this
            # utterance's frames is the best guess of it
            noise_power = float(np.percentile([f.power for f in frames], 10))
        pcm = np.concatenate([f.pcm for f in frames]).astype(np.float32) / _FULL_SCALE
        return Utterance(
            start=frames[0].t,
            end=frames[-1].t + FRAME_S,
            pcm=pcm,
            speech_frames=sum(flags),
            total_frames=len(frames),
            snr_db=_db(speech_power) - _db(noise_power),
            cut=cut,
        )
