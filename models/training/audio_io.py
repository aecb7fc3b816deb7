"""Training-only audio reading (soundfile + a numpy polyphase resampler); the appliance decodes with PyAV
(device/capture/audio_file.py), which reads the same 16-bit files to the same samples.

Read audio files as float32 mono 16 kHz PCM: soundfile decoding, downmix, numpy resampling.

`read_audio(path)` accepts anything libsndfile reads (WAV, FLAC, OGG, ...) at any sample rate
and channel count. Channels are averaged; other rates are converted with `resample`, a
windowed-sinc polyphase resampler written in numpy (no SciPy), so the device and the training
code produce the same samples from a 48 kHz original and from its 16 kHz FLAC copy (up to the
FLAC's 16-bit rounding). Every failure is a one-line `MediaError`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from device.errors import MediaError

TARGET_RATE = 16000
_ZERO_CROSSINGS = 16  # half-width of the sinc kernel in zero crossings of the lower rate
_KAISER_BETA = 8.0  # about 80 dB stop-band attenuation
_BLOCK = 1 << 15  # output samples computed per vectorised block (bounds memory)


@lru_cache(maxsize=16)
def _polyphase_table(up: int, down: int) -> tuple[np.ndarray, int]:
    """Kaiser-windowed sinc taps [up phases, taps] and the left offset, for rate ratio up/down."""
    cutoff = min(1.0, up / down)  # low-pass corner as a fraction of the input Nyquist frequency
    half_width = _ZERO_CROSSINGS / cutoff  # in input samples
    left = math.ceil(half_width) - 1
    taps = 2 * math.ceil(half_width)
    phases = np.arange(up, dtype=np.float64)[:, None] / up  # fractional position of each output phase
    offsets = np.arange(taps, dtype=np.float64)[None, :] - left  # input sample k relative to floor(t)
    tau = offsets - phases  # distance (input samples) from the output instant to each tap
    kernel = cutoff * np.sinc(cutoff * tau)
    window = np.kaiser(2 * 4096 + 1, _KAISER_BETA)
    pos = np.clip(np.round((tau / half_width + 1.0) * 4096).astype(int), 0, 2 * 4096)
    weights = kernel * np.where(np.abs(tau) <= half_width, window[pos], 0.0)
    weights /= weights.sum(axis=1, keepdims=True)  # unity DC gain for every phase
    return weights.astype(np.float32), left


def resample(pcm: np.ndarray, rate_in: int, rate_out: int = TARGET_RATE) -> np.ndarray:
    """Band-limited resampling of mono float PCM from `rate_in` to `rate_out` (polyphase, numpy only)."""
    x = np.asarray(pcm, dtype=np.float32)
    if rate_in == rate_out or len(x) == 0:
        return x.copy()
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive (got {rate_in} -> {rate_out})")
    g = math.gcd(int(rate_in), int(rate_out))
    up, down = int(rate_out) // g, int(rate_in) // g
    weights, left = _polyphase_table(up, down)
    taps = weights.shape[1]
    n_out = -(-len(x) * up // down)  # ceil
    padded = np.concatenate([np.zeros(left, np.float32), x, np.zeros(taps, np.float32)])
    out = np.empty(n_out, dtype=np.float32)
    k = np.arange(taps)
    for start in range(0, n_out, _BLOCK):
        n = np.arange(start, min(start + _BLOCK, n_out), dtype=np.int64)
        base = (n * down) // up  # floor of the output instant in input samples
        phase = (n * down) % up
        frames = padded[base[:, None] + k[None, :]]  # [block, taps]; padded index = input index + left
        out[start : start + len(n)] = np.einsum("ij,ij->i", frames, weights[phase])
    return out


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Average channels ([n] or [n, channels]) and resample to 16 kHz; float32 in [-1, 1]."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    return resample(x, int(rate), TARGET_RATE)


def read_audio(path: str | Path) -> np.ndarray:
    """Samples of an audio file as float32 mono 16 kHz; one-line MediaError when unusable."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise MediaError(f"{path}: not an audio file that can be read ({reason})") from None
    if samples.size == 0:
        raise MediaError(f"{path}: holds no audio samples")
    if not np.isfinite(samples).all():
        raise MediaError(f"{path}: holds non-finite samples")
    return to_mono_16k(samples, rate)
