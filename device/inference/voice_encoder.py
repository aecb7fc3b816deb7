"""The speaker-embedding model: Resemblyzer's GE2E voice encoder, run in numpy.

Resemblyzer 0.1.4 (Apache-2.0, PyPI) ships `pretrained.pt`: a 3-layer LSTM (40 mel bands in,
256 hidden), a linear layer to 256 and a ReLU; the embedding is the L2-normalised output for the
last frame. setup.sh fetches that file from the pinned wheel (models/third_party.json); here it is
read with `device.inference.torch_weights` (no PyTorch) and the network is evaluated in float32
numpy. bench/voice_encoder_equivalence.py checks it against the reference (PyTorch + librosa).

`embed(pcm)` follows `VoiceEncoder.embed_utterance`: the audio is brought up to -30 dBFS (never
down, as Resemblyzer's `preprocess_wav`), cut into 1.6 s partials at 1.3 per second (a short
utterance is zero-padded to one partial), each partial's embedding is computed, and their mean is
L2-normalised. Resemblyzer's own silence trimming is left out: the device embeds VAD utterances,
whose leading and trailing silence is short. Utterances longer than MAX_SECONDS are embedded from
their first MAX_SECONDS (enough for a voice; bounds the cost). The mel front end reproduces
`librosa.feature.melspectrogram` (25 ms periodic Hann window, 10 ms hop, centred frames padded
with zeros, power spectrum, 40 Slaney-normalised mel bands).
"""

from __future__ import annotations

import ctypes
import math
from pathlib import Path

import numpy as np

from device.errors import ModelError
from device.inference.torch_weights import load_checkpoint

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
PARTIAL_RATE = 1.3  # partials per second
MIN_COVERAGE = 0.75  # a last partial less covered than this is dropped (unless it is the only one)
TARGET_DBFS = -30.0
HIDDEN = 256
LAYERS = 3
EMBEDDING_SIZE = 256
MAX_SECONDS = 8.0
MODEL_NAME = "resemblyzer_voice_encoder"


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = math.log(6.4) / 27.0
    mels = f / f_sp
    log_part = f >= min_log_hz
    mels[log_part] = min_log_hz / f_sp + np.log(f[log_part] / min_log_hz) / logstep
    return mels


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    freqs = f_sp * m
    log_part = m >= min_log_mel
    freqs[log_part] = min_log_hz * np.exp(logstep * (m[log_part] - min_log_mel))
    return freqs


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters, area-normalised (librosa.filters.mel defaults)."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sr / 2.0]))[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, len(fft_freqs)))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


_MEL = mel_filterbank()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """[frames, N_MELS] mel power spectrogram (not log) of 16 kHz float samples."""
    x = np.pad(np.asarray(wav, dtype=np.float32), N_FFT // 2)
    n_frames = 1 + (len(x) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(x, shape=(n_frames, N_FFT), strides=(x.strides[0] * HOP, x.strides[0]),
                                             writeable=False)
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2
    return (power.astype(np.float32) @ _MEL.T).astype(np.float32)


def partial_slices(n_samples: int) -> list[slice]:
    """The mel-frame ranges of the partial utterances (Resemblyzer's compute_partial_slices)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = int(np.round((SAMPLE_RATE / PARTIAL_RATE) / HOP))
    steps = max(1, n_frames - PARTIAL_FRAMES + frame_step + 1)
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices = slices[:-1]
    return slices


def limit_blas_threads(threads: int = 1) -> bool:
    """Run OpenBLAS single-threaded in this process (what threadpoolctl does, without the package).

    The encoder's cost is 480 vector-matrix products of 256 x 1024 per partial: too small to share
    between cores, so OpenBLAS's threads only spin (twice the CPU for the same wall time here) and
    take a core from the face worker. Returns whether an OpenBLAS library was found and set.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as handle:
            paths = {line.split()[-1] for line in handle if "openblas" in line.lower() and "/" in line}
    except OSError:
        return False
    done = False
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                       "openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(library, symbol, None)
            if setter is not None:
                setter(ctypes.c_int(threads))
                done = True
                break
    return done


def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Raise the level to `target_dbfs` (RMS); louder audio is left as it is."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    if rms <= 0:
        return wav
    change_db = target_dbfs - 20 * math.log10(rms)
    return wav if change_db < 0 else (wav * (10 ** (change_db / 20))).astype(np.float32)


class VoiceEncoder:
    """GE2E speaker encoder: float32 mono 16 kHz utterance in, unit 256-d embedding out."""

    def __init__(self, state: dict[str, np.ndarray], path: Path | None = None) -> None:
        try:
            self.layers = []
            for layer in range(LAYERS):
                w_ih = state[f"lstm.weight_ih_l{layer}"].astype(np.float32)
                w_hh = state[f"lstm.weight_hh_l{layer}"].astype(np.float32)
                bias = (state[f"lstm.bias_ih_l{layer}"] + state[f"lstm.bias_hh_l{layer}"]).astype(np.float32)
                inputs = N_MELS if layer == 0 else HIDDEN
                expected = ((4 * HIDDEN, inputs), (4 * HIDDEN, HIDDEN), (4 * HIDDEN,))
                if (w_ih.shape, w_hh.shape, bias.shape) != expected:
                    raise ModelError(f"voice encoder: layer {layer} has unexpected shapes")
                # PyTorch's gate order (i, f, g, o) -> (i, f, o, g): one sigmoid call for three gates
                order = np.r_[0:2 * HIDDEN, 3 * HIDDEN:4 * HIDDEN, 2 * HIDDEN:3 * HIDDEN]
                self.layers.append((np.ascontiguousarray(w_ih[order].T), np.ascontiguousarray(w_hh[order].T),
                                    np.ascontiguousarray(bias[order])))
            self.linear_w = np.ascontiguousarray(state["linear.weight"].astype(np.float32).T)
            self.linear_b = state["linear.bias"].astype(np.float32)
        except KeyError as exc:
            raise ModelError(f"voice encoder: weights lack {exc.args[0]}") from None
        if self.linear_w.shape != (HIDDEN, EMBEDDING_SIZE):
            raise ModelError("voice encoder: linear layer has an unexpected shape")
        self.path = path

    @classmethod
    def from_file(cls, path: str | Path) -> VoiceEncoder:
        path = Path(path)
        checkpoint = load_checkpoint(path)
        state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise ModelError(f"{path}: not a Resemblyzer checkpoint (no model_state)")
        limit_blas_threads(1)
        return cls(state, path)

    def forward(self, mels: np.ndarray) -> np.ndarray:
        """[batch, frames, N_MELS] mel partials -> [batch, EMBEDDING_SIZE] unit embeddings."""
        x = np.asarray(mels, dtype=np.float32)
        # one partial at a time: OpenBLAS's vector-matrix product is several times faster per row
        # than its small-matrix product here, and the recurrence is the whole cost
        return np.stack([self._forward_one(partial) for partial in x])

    def _forward_one(self, frames: np.ndarray) -> np.ndarray:
        x = frames
        h = np.zeros(HIDDEN, np.float32)
        gates = np.empty(4 * HIDDEN, np.float32)
        for w_ih, w_hh, bias in self.layers:
            gates_in = x @ w_ih + bias  # the input projection of every step at once
            h = np.zeros(HIDDEN, np.float32)
            c = np.zeros(HIDDEN, np.float32)
            outputs = np.empty((len(x), HIDDEN), np.float32)
            sig = gates[: 3 * HIDDEN]  # gates reordered to (input, forget, output | cell)
            i, f, o = gates[:HIDDEN], gates[HIDDEN:2 * HIDDEN], gates[2 * HIDDEN:3 * HIDDEN]
            g = gates[3 * HIDDEN:]
            for t in range(len(x)):
                np.matmul(h, w_hh, out=gates)
                gates += gates_in[t]
                sig *= 0.5  # sigmoid(z) = (1 + tanh(z / 2)) / 2, one call for three gates
                np.tanh(sig, out=sig)
                sig += 1.0
                sig *= 0.5
                np.tanh(g, out=g)
                c *= f
                c += i * g
                h = o * np.tanh(c)
                outputs[t] = h
            x = outputs
        raw = np.maximum(h @ self.linear_w + self.linear_b, 0.0)
        return raw / max(float(np.linalg.norm(raw)), 1e-12)

    def embed(self, pcm: np.ndarray, max_partials: int | None = None) -> np.ndarray:
        """Unit embedding of one utterance (float samples in [-1, 1] or int16).

        `max_partials` keeps that many evenly spaced partials (1: the middle one), which bounds
        the cost (about 14 ms of CPU per partial here); None keeps them all, as Resemblyzer does.
        """
        wav = np.asarray(pcm)
        if wav.dtype == np.int16:
            wav = wav.astype(np.float32) / 32768.0
        wav = np.nan_to_num(wav.astype(np.float32)[: int(MAX_SECONDS * SAMPLE_RATE)])
        wav = normalize_volume(wav)
        slices = partial_slices(len(wav))
        if max_partials is not None and len(slices) > max_partials:
            keep = np.linspace(0, len(slices) - 1, max(1, max_partials) + 2)[1:-1].round().astype(int)
            slices = [slices[k] for k in sorted(set(keep.tolist()))]
        needed = slices[-1].stop * HOP
        if needed >= len(wav):
            wav = np.pad(wav, (0, needed - len(wav)))
        mel = mel_spectrogram(wav)
        partials = self.forward(np.stack([mel[s] for s in slices]))
        mean = partials.mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
