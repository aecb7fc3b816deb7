"""Prosody: how a patient speaks (pitch, loudness, tempo, pauses), measured per utterance and per window.

Clinicians describe depressed speech as slower, quieter, more monotonous (flat pitch and flat
loudness) and with more and longer pauses; these measures put numbers on exactly that, as an
aid to the clinician's own listening. None of them is a diagnosis, and each varies a lot between
people: they are most useful against the same patient's earlier sessions.

`utterance_prosody(pcm)` measures one utterance from the speech segmenter; `window_prosody(...)`
combines the utterances of one aggregation window (and adds the silences between them).

Measures (all from numpy, on 10 ms frames):

- Pitch (F0) by YIN (de Cheveigné & Kawahara 2002, "YIN, a fundamental frequency estimator for
  speech and music", JASA 111(4)), searched between 60 and 400 Hz on the signal low-passed and
  decimated to about 8 kHz. A frame is voiced when its cumulative-mean-normalised difference
  dips below 0.35 and it is not silent; voiced runs shorter than 30 ms are dropped as spurious.
  Reported as mean and standard deviation in Hz and in semitones (re 100 Hz), and the 10th-90th
  percentile range in semitones. Read: the SD and range in semitones are "how much the voice
  moves"; low values are the monotonous speech clinicians hear. Semitones make men's and
  women's voices comparable.
- Voiced share: voiced time over the speaking span. Read: mostly a quality check; it also drops
  with whispered or creaky, low-energy voice.
- Energy: frame RMS (30 ms) in dBFS over voiced frames, mean and SD. Read: the mean depends on
  microphone distance and gain, so compare within a session; the SD is loudness variation, low
  in flat, monotonous speech.
- Speaking rate: syllable nuclei per second, after de Jong & Wempe 2009 ("Praat script to detect
  syllable nuclei and measure speech rate automatically", Behavior Research Methods 41(2)): peaks
  of the smoothed intensity that are above the silence threshold, stand at least 2 dB above the
  dip to the neighbouring peak, and are voiced. `speaking_rate` counts pauses in the time
  (speech rate), `articulation_rate` does not. Read: slower speech gives lower values; the
  absolute count is approximate, the change across sessions is what matters.
- Pauses: silent gaps of at least `min_pause_s` (default 150 ms) inside the speaking span, from
  the same silence threshold (99th percentile of intensity minus 25 dB, as de Jong & Wempe, raised
  towards the background level when the recording is noisy). `pause_ratio` = pause time / speaking
  span, `mean_pause_s` = their mean length. Read: more and longer pauses go with slowed,
  effortful speech (psychomotor retardation).

Cost: about 2 ms of CPU (time.process_time) per second of speech on the x86 development machine,
well under the 5 ms aim; tests/test_audio.py measures and prints it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

HOP_S = 0.010  # frame step for every contour
F0_MIN_HZ = 60.0
F0_MAX_HZ = 400.0
F0_REF_HZ = 100.0  # semitone reference
YIN_WINDOW_S = 0.030  # integration window: at least one period of the lowest F0 (16.7 ms at 60 Hz)
YIN_THRESHOLD = 0.15  # YIN's absolute threshold: the first dip below it is the period
VOICING_THRESHOLD = 0.35  # a frame is voiced when the chosen dip is below this (fast speech's
# formant transitions keep real voiced frames well above YIN's 0.1-0.15; white noise stays near 1)
MIN_VOICED_RUN = 3  # frames; shorter voiced runs are chance dips in noise
SILENCE_BELOW_PEAK_DB = 25.0  # de Jong & Wempe's silence threshold under the 99th percentile
NUCLEUS_MIN_DIP_DB = 2.0  # de Jong & Wempe's minimum dip between two syllable peaks
ABS_SILENCE_DBFS = -70.0  # quieter than this is silence whatever the recording's level
_POWER_FLOOR = 1e-10
_CLIP_LEVEL = 0.999
_INTENSITY_KERNEL = np.hanning(9)[1:-1] / np.hanning(9)[1:-1].sum()  # ~70 ms, like Praat's at 50 Hz
_ENERGY_KERNEL = np.ones(3) / 3.0  # 30 ms RMS windows


def _lowpass_taps(cutoff: float, taps: int = 31) -> np.ndarray:
    """Windowed-sinc low-pass FIR; `cutoff` as a fraction of the sample rate."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff * n) * np.hamming(taps)
    return h / h.sum()


def _db(power: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(power, _POWER_FLOOR))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs in a boolean array."""
    if not mask.any():
        return []
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _yin(x: np.ndarray, sample_rate: int, n_frames: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Per 10 ms frame: F0 in Hz (0 where unvoiced by periodicity) and the YIN aperiodicity."""
    # Decimate to about 8 kHz: F0 and its first harmonics are all below 4 kHz, and the
    # difference function costs a quarter as much.
    q = max(1, sample_rate // 8000)
    if q > 1:
        x = np.convolve(x, _lowpass_taps(0.45 / q), mode="same")[::q]
    rate = sample_rate / q
    step = hop // q
    w = round(YIN_WINDOW_S * rate)
    tau_min = int(np.floor(rate / F0_MAX_HZ))
    tau_max = int(np.ceil(rate / F0_MIN_HZ))
    length = w + tau_max
    # centre each analysis window on its 10 ms frame so pitch and intensity line up
    pad_front = max(0, w // 2 - step // 2)
    padded = np.zeros(pad_front + n_frames * step + length, dtype=np.float64)
    padded[pad_front : pad_front + len(x)] = x[: len(padded) - pad_front]
    frames = np.lib.stride_tricks.sliding_window_view(padded, length)[::step][:n_frames]
    nfft = 1 << int(np.ceil(np.log2(length)))
    # difference function d(tau) = E(window) + E(window shifted by tau) - 2 r(tau), with the
    # cross-correlation r by FFT (the window is zero beyond w, so no circular wrap-around)
    spec_a = np.fft.rfft(frames[:, :w], nfft)
    spec_b = np.fft.rfft(frames, nfft)
    r = np.fft.irfft(np.conj(spec_a) * spec_b, nfft)[:, : tau_max + 1]
    cum = np.concatenate([np.zeros((n_frames, 1)), np.cumsum(frames**2, axis=1)], axis=1)
    e_shift = cum[:, w : w + tau_max + 1] - cum[:, : tau_max + 1]
    d = np.maximum(e_shift[:, :1] + e_shift - 2.0 * r, 0.0)
    # cumulative-mean-normalised difference d'(tau) = d(tau) * tau / sum_{1..tau} d
    running = np.cumsum(d[:, 1:], axis=1)
    dn = np.ones_like(d)
    taus = np.arange(1, tau_max + 1)
    np.divide(d[:, 1:] * taus, running, out=dn[:, 1:], where=running > 0)
    search = dn[:, tau_min : tau_max + 1]
    below = search < YIN_THRESHOLD
    has_dip = below.any(axis=1)
    # YIN step 4: the first dip under the threshold, then the bottom of that dip (the local
    # minimum before the curve climbs back over the threshold)
    first = np.argmax(below, axis=1)
    cols = np.arange(search.shape[1])
    started = cols >= first[:, None]
    in_first_dip = np.logical_and.accumulate(below | ~started, axis=1) & started
    dip_bottom = np.argmin(np.where(in_first_dip, search, np.inf), axis=1)
    best = np.where(has_dip, dip_bottom, np.argmin(search, axis=1))
    tau = best + tau_min
    aperiodicity = search[np.arange(n_frames), best]
    # YIN step 5: parabolic interpolation around the chosen lag for sub-sample precision
    rows = np.arange(n_frames)
    left = dn[rows, np.maximum(tau - 1, 1)]
    mid = dn[rows, tau]
    right = dn[rows, np.minimum(tau + 1, tau_max)]
    denom = left - 2.0 * mid + right
    shift = np.zeros(n_frames)
    np.divide(left - right, 2.0 * denom, out=shift, where=np.abs(denom) > 1e-12)
    shift = np.clip(shift, -1.0, 1.0)
    f0 = np.where(aperiodicity < VOICING_THRESHOLD, rate / (tau + shift), 0.0)
    return f0, aperiodicity


def _nuclei(intensity_db: np.ndarray, threshold_db: float, voiced: np.ndarray, lo: int, hi: int) -> int:
    """Syllable nuclei in frames [lo, hi): intensity peaks after de Jong & Wempe 2009."""
    seg = intensity_db[lo:hi]
    if len(seg) < 3:
        return 0
    peaks = np.flatnonzero((seg[1:-1] > seg[:-2]) & (seg[1:-1] >= seg[2:]) & (seg[1:-1] > threshold_db)) + 1
    kept: list[int] = []
    for p in peaks.tolist():
        if not kept:
            kept.append(p)
            continue
        last = kept[-1]
        dip = float(seg[last : p + 1].min())
        if seg[last] - dip >= NUCLEUS_MIN_DIP_DB and seg[p] - dip >= NUCLEUS_MIN_DIP_DB:
            kept.append(p)
        elif seg[p] > seg[last]:
            kept[-1] = p  # the same syllable: keep its higher peak
    # only voiced peaks are vowels (this drops loud fricatives and bursts)
    v = voiced[lo:hi]
    near = v | np.concatenate([v[1:], [False]]) | np.concatenate([[False], v[:-1]])
    return sum(1 for p in kept if near[p])


def _mean_sd(values: np.ndarray) -> tuple[float | None, float | None]:
    if len(values) == 0:
        return None, None
    return float(values.mean()), float(values.std())


def utterance_prosody(pcm: np.ndarray, sample_rate: int = 16000, *, t0: float = 0.0,
                      min_pause_s: float = 0.15) -> dict[str, Any]:
    """Prosody of one utterance (float32 PCM in [-1, 1]); see the module docstring for each measure.

    `t0` is the utterance's start in item time; it only places `speech_start`/`speech_end`, which
    `window_prosody` needs. Measures that do not exist for this audio (no voiced frame, no pause)
    are None, so the result is JSON-ready. Clipped or silent input is handled, never raised on.
    """
    x = np.asarray(pcm, dtype=np.float64).reshape(-1)
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    hop = max(1, round(HOP_S * sample_rate))
    n_frames = len(x) // hop
    result: dict[str, Any] = {
        "duration_s": len(x) / sample_rate, "speech_start": None, "speech_end": None,
        "span_s": 0.0, "phonation_s": 0.0, "voiced_s": 0.0, "voiced_share": None,
        "f0_mean_hz": None, "f0_sd_hz": None, "f0_mean_st": None, "f0_sd_st": None, "f0_range_st": None,
        "energy_mean_db": None, "energy_sd_db": None,
        "nuclei": 0, "speaking_rate": None, "articulation_rate": None,
        "pause_count": 0, "pause_s": 0.0, "pause_ratio": None, "mean_pause_s": None,
        "clipped_share": float(np.mean(np.abs(x) >= _CLIP_LEVEL)) if len(x) else 0.0,
    }
    if n_frames < 3:
        return result
    block_power = np.mean(x[: n_frames * hop].reshape(n_frames, hop) ** 2, axis=1)
    energy_db = _db(np.convolve(block_power, _ENERGY_KERNEL, mode="same"))
    intensity_db = _db(np.convolve(block_power, _INTENSITY_KERNEL, mode="same"))
    peak = float(np.percentile(intensity_db, 99))
    # de Jong & Wempe's threshold, raised towards the background in noisy recordings (whose
    # quietest frames are the noise) so pauses still show, yet never within 12 dB of the peak
    floor = float(np.percentile(intensity_db, 5))
    threshold = max(peak - SILENCE_BELOW_PEAK_DB, min(floor + 6.0, peak - 12.0), ABS_SILENCE_DBFS)
    # silence is judged on unsmoothed 10 ms frames: smoothing would shorten every gap by the
    # kernel's width and hide pauses near the minimum length
    sounding = _db(block_power) > threshold
    if not sounding.any():
        return result
    lo = int(np.argmax(sounding))
    hi = n_frames - int(np.argmax(sounding[::-1]))
    span_frames = hi - lo

    f0, _ = _yin(x, sample_rate, n_frames, hop)
    voiced = (f0 > 0) & (energy_db > threshold)
    for a, b in _runs(voiced):
        if b - a < MIN_VOICED_RUN:
            voiced[a:b] = False

    min_pause = max(1, round(min_pause_s / HOP_S))
    pauses = [(a, b) for a, b in _runs(~sounding[lo:hi]) if b - a >= min_pause]
    pause_frames = sum(b - a for a, b in pauses)
    span_s = span_frames * HOP_S
    phonation_s = (span_frames - pause_frames) * HOP_S
    voiced_frames = int(voiced.sum())

    f0_voiced = f0[voiced]
    semitones = 12.0 * np.log2(f0_voiced / F0_REF_HZ) if len(f0_voiced) else f0_voiced
    f0_mean, f0_sd = _mean_sd(f0_voiced)
    st_mean, st_sd = _mean_sd(semitones)
    e_mean, e_sd = _mean_sd(energy_db[voiced])
    nuclei = _nuclei(intensity_db, threshold, voiced, lo, hi)
    result.update({
        "speech_start": t0 + lo * HOP_S,
        "speech_end": t0 + hi * HOP_S,
        "span_s": span_s,
        "phonation_s": phonation_s,
        "voiced_s": voiced_frames * HOP_S,
        "voiced_share": voiced_frames / span_frames,
        "f0_mean_hz": f0_mean, "f0_sd_hz": f0_sd, "f0_mean_st": st_mean, "f0_sd_st": st_sd,
        "f0_range_st": float(np.subtract(*np.percentile(semitones, [90, 10]))) if len(semitones) else None,
        "energy_mean_db": e_mean, "energy_sd_db": e_sd,
        "nuclei": nuclei,
        "speaking_rate": nuclei / span_s,
        "articulation_rate": nuclei / phonation_s if phonation_s > 0 else None,
        "pause_count": len(pauses),
        "pause_s": pause_frames * HOP_S,
        "pause_ratio": pause_frames / span_frames,
        "mean_pause_s": pause_frames * HOP_S / len(pauses) if pauses else None,
    })
    return result


class _Pooled:
    """Weighted mean and standard deviation pooled from per-utterance means and SDs."""

    def __init__(self) -> None:
        self.weight = 0.0
        self.total = 0.0
        self.squares = 0.0

    def add(self, mean: float | None, sd: float | None, weight: float) -> None:
        if mean is None or sd is None or weight <= 0:
            return
        self.weight += weight
        self.total += weight * mean
        self.squares += weight * (sd * sd + mean * mean)

    def result(self) -> tuple[float | None, float | None]:
        if self.weight <= 0:
            return None, None
        mean = self.total / self.weight
        return mean, float(np.sqrt(max(self.squares / self.weight - mean * mean, 0.0)))


def window_prosody(utterances: Iterable[Mapping[str, Any]], window_start: float, window_end: float,
                   min_pause_s: float = 0.15) -> dict[str, Any]:
    """Prosody of one aggregation window from the `utterance_prosody` results of its utterances.

    Each result must have been computed with `t0` = the utterance's start. An utterance that
    straddles the window boundary counts with the share of its speaking span inside the window.
    The silences between utterances count as pauses (when at least `min_pause_s`); silence
    before the first and after the last speech in the window does not, since the window edges
    are arbitrary. F0 and energy statistics are pooled over utterances weighted by voiced time.

    - speech_share: speaking time (pauses excluded) over window length; read: how much of the
      window the patient (or anyone in the room: the segmenter does not tell speakers apart)
      spent talking;
    - pause_ratio, mean_pause_s, pause_count: over the span from first to last speech;
    - speaking_rate (pauses included) and articulation_rate (pauses excluded) in syllables/s;
    - f0_mean_hz, f0_sd_hz, f0_mean_st, f0_sd_st, energy_mean_db, energy_sd_db: as per utterance.
    """
    length = max(window_end - window_start, 1e-9)
    spans: list[tuple[float, float]] = []
    speech = internal_pause = internal_count = nuclei = voiced = 0.0
    f0_hz, f0_st, energy = _Pooled(), _Pooled(), _Pooled()
    for u in utterances:
        s, e = u.get("speech_start"), u.get("speech_end")
        if s is None or e is None or e <= s:
            continue
        overlap = min(e, window_end) - max(s, window_start)
        if overlap <= 0:
            continue
        share = overlap / (e - s)
        spans.append((max(s, window_start), min(e, window_end)))
        speech += u["phonation_s"] * share
        internal_pause += u["pause_s"] * share
        internal_count += u["pause_count"] * share
        nuclei += u["nuclei"] * share
        w = u["voiced_s"] * share
        voiced += w
        f0_hz.add(u["f0_mean_hz"], u["f0_sd_hz"], w)
        f0_st.add(u["f0_mean_st"], u["f0_sd_st"], w)
        energy.add(u["energy_mean_db"], u["energy_sd_db"], w)
    spans.sort()
    gap_time, gap_count = 0.0, 0
    for (_, prev_end), (start, _) in itertools.pairwise(spans):
        gap = start - prev_end
        if gap >= min_pause_s:
            gap_time += gap
            gap_count += 1
    pause = internal_pause + gap_time
    count = internal_count + gap_count
    talk = speech + pause
    f0_mean, f0_sd = f0_hz.result()
    st_mean, st_sd = f0_st.result()
    e_mean, e_sd = energy.result()
    return {
        "n_utterances": len(spans),
        "speech_s": speech,
        "speech_share": min(speech / length, 1.0),
        "voiced_s": voiced,
        "pause_ratio": pause / talk if talk > 0 else None,
        "pause_count": count,
        "mean_pause_s": pause / count if count > 0 else None,
        "speaking_rate": nuclei / talk if talk > 0 else None,
        "articulation_rate": nuclei / speech if speech > 0 else None,
        "f0_mean_hz": f0_mean, "f0_sd_hz": f0_sd, "f0_mean_st": st_mean, "f0_sd_st": st_sd,
        "energy_mean_db": e_mean, "energy_sd_db": e_sd,
    }
