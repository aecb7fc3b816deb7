"""The speech-emotion model's input features, shared by the device and the training code.

`speech_features(pcm)` turns float32 mono 16 kHz samples in [-1, 1] into exactly the tensor the
model reads (without the batch axis): [N_FRAMES, N_MELS] float32. The training code imports
this module, so the device computes the very features the model was trained and validated on.

Steps (python_speech_features + numpy):
1. log mel filterbank: 25 ms Hamming windows every 10 ms, 512-point FFT, pre-emphasis 0.97,
   N_MELS triangular mel bands between LOW_HZ and HIGH_HZ, log(energy + floor);
2. silence trim: frames from the first to the last whose energy is within TRIM_DB of the
   loudest frame (acted corpora carry up to a second of silence around each sentence; the
   device's VAD utterances carry some too);
3. per-utterance normalisation: each band's mean over the kept frames is removed (cancels the
   microphone's and room's spectral colouring and the recording gain), then everything is divided
   by one standard deviation over all bands and frames (keeps the relative band dynamics),
   and clipped to +-CLIP;
4. fixed length: centre crop to N_FRAMES (2.56 s), or zero-pad both sides equally (zero = the
   utterance's mean after normalisation).

Longer speech is covered by `speech_feature_windows`: the trimmed utterance is cut into evenly
spaced, overlapping windows of N_FRAMES frames, each normalised on its own exactly as above;
the classifier averages the windows' logits. Silence (nothing above the floor) gives zeros.
"""

from __future__ import annotations

import math

import numpy as np
from python_speech_features import fbank

SAMPLE_RATE = 16000
WIN_SECONDS = 0.025
HOP_SECONDS = 0.010
N_FFT = 512
N_MELS = 40
LOW_HZ = 50.0
HIGH_HZ = 8000.0
PREEMPHASIS = 0.97
N_FRAMES = 256  # 2.56 s of audio per model input
TRIM_DB = 35.0  # frames quieter than the loudest by more than this are leading/trailing silence
SILENCE_DB = -90.0  # frame energy (dB re full-scale power sum) below which audio counts as digital silence
ENERGY_FLOOR = 1e-10  # added to band energies before the log (about -100 dB): no log(0)
CLIP = 6.0  # normalised values are clipped to +-CLIP standard deviations
FEATURE_SHAPE = (N_FRAMES, N_MELS)
WINDOW_SAMPLES = int(round(WIN_SECONDS * SAMPLE_RATE))
HOP_SAMPLES = int(round(HOP_SECONDS * SAMPLE_RATE))

DESCRIPTION = (
    f"log mel filterbank, {N_MELS} bands {LOW_HZ:g}-{HIGH_HZ:g} Hz, {WIN_SECONDS * 1000:g} ms Hamming "
    f"windows every {HOP_SECONDS * 1000:g} ms, {N_FFT}-point FFT, pre-emphasis {PREEMPHASIS}, "
    f"of 16 kHz mono audio; leading/trailing frames more than {TRIM_DB:g} dB below the loudest "
    f"trimmed; per-band mean removed and divided by one global standard deviation, clipped to "
    f"+-{CLIP:g}; centre-cropped or zero-padded to {N_FRAMES} frames ({N_FRAMES * HOP_SECONDS:g} s); "
    f"longer utterances are split into overlapping {N_FRAMES}-frame windows whose logits are averaged "
    f"(device/audio/features.py)"
)


def _as_pcm(pcm: np.ndarray) -> np.ndarray:
    x = np.asarray(pcm, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"speech features need mono samples of shape [n] (got shape {list(x.shape)})")
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return x


def log_mel(pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log mel energies [frames, N_MELS], frame energy in dB [frames]) of 16 kHz mono PCM."""
    x = _as_pcm(pcm).astype(np.float64)
    if len(x) < WINDOW_SAMPLES:  # at least one full frame
        x = np.pad(x, (0, WINDOW_SAMPLES - len(x)))
    bands, energy = fbank(
        x, samplerate=SAMPLE_RATE, winlen=WIN_SECONDS, winstep=HOP_SECONDS, nfilt=N_MELS, nfft=N_FFT,
        lowfreq=LOW_HZ, highfreq=HIGH_HZ, preemph=PREEMPHASIS, winfunc=np.hamming,
    )
    return np.log(bands + ENERGY_FLOOR), 10.0 * np.log10(energy + ENERGY_FLOOR)


def speech_frames(energy_db: np.ndarray) -> tuple[int, int]:
    """[first, last + 1) frame range of the speech (within TRIM_DB of the loudest); (0, 0) for silence."""
    if len(energy_db) == 0:
        return 0, 0
    top = float(energy_db.max())
    if top < SILENCE_DB:
        return 0, 0
    loud = np.flatnonzero(energy_db >= top - TRIM_DB)
    return int(loud[0]), int(loud[-1]) + 1


def normalise(frames: np.ndarray) -> np.ndarray:
    """Per-band mean removal, one global standard deviation, clip; [T, N_MELS] float32 (T >= 1)."""
    centred = frames - frames.mean(axis=0, keepdims=True)
    scale = float(centred.std())
    if scale < 1e-6:
        return np.zeros(frames.shape, dtype=np.float32)
    return np.clip(centred / scale, -CLIP, CLIP).astype(np.float32)


def fix_length(frames: np.ndarray, n_frames: int = N_FRAMES) -> np.ndarray:
    """Centre crop or symmetric zero pad along time to exactly n_frames."""
    t = frames.shape[0]
    if t >= n_frames:
        start = (t - n_frames) // 2
        return np.ascontiguousarray(frames[start : start + n_frames], dtype=np.float32)
    out = np.zeros((n_frames, frames.shape[1]), dtype=np.float32)
    start = (n_frames - t) // 2
    out[start : start + t] = frames
    return out


def trimmed_log_mel(pcm: np.ndarray) -> np.ndarray:
    """Log mel frames of the speech part only; [T, N_MELS], T = 0 for silence."""
    bands, energy_db = log_mel(pcm)
    first, last = speech_frames(energy_db)
    return bands[first:last]


def speech_features(pcm: np.ndarray) -> np.ndarray:
    """The model's input tensor for one utterance: float32 [N_FRAMES, N_MELS] (see the module doc)."""
    frames = trimmed_log_mel(pcm)
    if len(frames) == 0:
        return np.zeros(FEATURE_SHAPE, dtype=np.float32)
    return fix_length(normalise(frames))


def window_starts(n_frames: int, window: int = N_FRAMES, max_hop: int = N_FRAMES // 2) -> list[int]:
    """Evenly spaced window starts covering n_frames, consecutive windows at most max_hop apart."""
    if n_frames <= window:
        return [0]
    count = 1 + math.ceil((n_frames - window) / max_hop)
    return [int(round(i * (n_frames - window) / (count - 1))) for i in range(count)]


def speech_feature_windows(pcm: np.ndarray) -> np.ndarray:
    """Model inputs for an utterance of any length: float32 [K, N_FRAMES, N_MELS], K >= 1.

    Up to N_FRAMES of speech this is `speech_features(pcm)[None]`; longer speech is cut into
    windows of N_FRAMES frames, at most half a window apart, each normalised on its own.
    """
    frames = trimmed_log_mel(pcm)
    if len(frames) <= N_FRAMES:
        if len(frames) == 0:
            return np.zeros((1, *FEATURE_SHAPE), dtype=np.float32)
        return fix_length(normalise(frames))[None]
    return np.stack([normalise(frames[s : s + N_FRAMES]) for s in window_starts(len(frames))])
