"""Speech corpora for training: file lists, waveform augmentation, and a feature cache.

Files are listed from RAVDESS (`Actor_XX/03-01-EE-...`) and TESS (`<SPK>_<emotion>/...`) folders,
.wav or .flac at any rate (48 kHz originals and the 16 kHz copies alike), and labelled by the
device's own file-name parser (device/evaluate_speech.py), so training and `affectbox eval
speech` agree on every mapping (calm -> neutral, pleasant_surprise -> surprise).

Features are always computed by the device's `speech_features` / `speech_feature_windows`.
For each file the cache holds the clean input tensor, `n_aug` augmented versions (speed
perturbation, synthetic reverberation, coloured noise at random SNR, gain; each from a seeded
generator) and, for evaluation, the clean windows exactly as the device classifier cuts them.
The cache lives in ~/.cache/affectbox/speech/<key>, the key hashing the feature code, the
augmentation settings and the file list, so any change recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from device.audio import features as feat  # noqa: E402
from device.evaluate_speech import AUDIO_SUFFIXES, parse_speech_name  # noqa: E402
from device.labels import LABELS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio_io import TARGET_RATE, read_audio, resample  # noqa: E402

CACHE_ROOT = Path(os.environ.get("AFFECTBOX_CACHE", Path.home() / ".cache" / "affectbox")) / "speech"
AUG_VERSION = "aug-v1: speed 0.9-1.1 (p .8), reverb rt60 .15-.6 s (p .3), noise white/pink/brown 5-30 dB " \
              "SNR (p .7), gain -12..+6 dB"


@dataclass(frozen=True)
class Utterance:
    path: Path
    corpus: str
    label: int
    speaker: str  # e.g. ravdess-07, tess-OAF


def list_corpus(root: Path) -> list[Utterance]:
    out = []
    for path in sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        item = parse_speech_name(path.name)
        if item is None or item.label is None:
            continue
        if item.corpus == "ravdess" and not path.stem.startswith("03-01-"):
            continue  # audio-only speech; song files are not used for training
        out.append(Utterance(path, item.corpus, item.label_index, item.speaker))
    if not out:
        raise SystemExit(f"{root}: no RAVDESS/TESS files found")
    return out


def actor_of(u: Utterance) -> int:
    return int(u.speaker.split("-")[1]) if u.corpus == "ravdess" else 0


# ---------------------------------------------------------------- augmentation (waveform, numpy)

def _coloured_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    white = rng.standard_normal(n)
    kind = rng.integers(3)
    if kind == 0:
        return white
    spectrum = np.fft.rfft(white)
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    spectrum /= np.sqrt(f) if kind == 1 else f  # pink 1/f, brown 1/f^2 power
    return np.fft.irfft(spectrum, n)


def _reverb(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    from scipy.signal import fftconvolve

    rt60 = rng.uniform(0.15, 0.6)
    n = int(rt60 * TARGET_RATE)
    t = np.arange(n) / TARGET_RATE
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    rir[0] = 1.0 / rng.uniform(0.3, 1.0)  # direct path vs. reverberant energy
    rir /= np.sqrt(np.sum(rir**2))
    return fftconvolve(x, rir)[: len(x)]


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random perturbation of a 16 kHz utterance (speaker/channel variety, see AUG_VERSION)."""
    y = x.astype(np.float64)
    if rng.random() < 0.8:  # speed perturbation (tempo and pitch together, as Kaldi's)
        factor = rng.uniform(0.9, 1.1)
        rate_in = int(round(TARGET_RATE * factor / 200)) * 200
        y = resample(y.astype(np.float32), rate_in, TARGET_RATE).astype(np.float64)
    if rng.random() < 0.3:
        y = _reverb(rng, y)
    if rng.random() < 0.7:
        power = np.mean(y**2)
        # speech power is about twice the mean power of a sentence recording with its pauses
        snr_db = rng.uniform(5, 30)
        noise = _coloured_noise(rng, len(y))
        noise *= np.sqrt(2 * power / 10 ** (snr_db / 10) / max(np.mean(noise**2), 1e-20))
        y = y + noise
    peak = np.max(np.abs(y)) if len(y) else 1.0
    gain = 10 ** (rng.uniform(-12, 6) / 20)
    y = y / max(peak, 1e-9) * min(0.99, peak * gain) if peak > 0 else y
    return np.clip(y, -1, 1).astype(np.float32)


# ---------------------------------------------------------------- feature cache

def _work(args: tuple[str, int, int, bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path, seed, n_aug, want_windows = args
    x = read_audio(path)
    clean = feat.speech_features(x)
    rng = np.random.default_rng(seed)
    augs = np.stack([feat.speech_features(augment(x, rng)) for _ in range(n_aug)]) if n_aug else \
        np.zeros((0, *feat.FEATURE_SHAPE), np.float32)
    windows = feat.speech_feature_windows(x) if want_windows else np.zeros((0, *feat.FEATURE_SHAPE), np.float32)
    return clean, augs, windows


def cache_key(items: list[Utterance], n_aug: int, seed: int) -> str:
    h = hashlib.sha256()
    for module in (feat.__file__, sys.modules[read_audio.__module__].__file__):
        h.update(Path(module).read_bytes())
    h.update(f"{AUG_VERSION}|{n_aug}|{seed}".encode())
    for u in items:
        h.update(f"{u.path.name}|{u.label}|{u.path.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


@dataclass
class FeatureSet:
    items: list[Utterance]
    clean: np.ndarray  # [N, T, F] float32
    aug: np.ndarray  # [N, n_aug, T, F] float16
    windows: np.ndarray  # [W, T, F] float32 (RAVDESS only), the device's windows
    window_offsets: np.ndarray  # [N + 1]; item i's windows are windows[off[i]:off[i+1]]

    @property
    def labels(self) -> np.ndarray:
        return np.array([u.label for u in self.items])


def load_features(items: list[Utterance], n_aug: int, seed: int, workers: int = 2) -> FeatureSet:
    key = cache_key(items, n_aug, seed)
    folder = CACHE_ROOT / key
    path = folder / "features.npz"
    if path.exists():
        data = np.load(path)
        print(f"features: cached {path}", flush=True)
        return FeatureSet(items, data["clean"], data["aug"], data["windows"], data["window_offsets"])
    folder.mkdir(parents=True, exist_ok=True)
    print(f"features: computing {len(items)} files x (1 + {n_aug} augmented) into {folder}", flush=True)
    jobs = [(str(u.path), seed * 100003 + i, n_aug, u.corpus == "ravdess") for i, u in enumerate(items)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_work, jobs, chunksize=16))
    clean = np.stack([r[0] for r in results])
    aug = np.stack([r[1] for r in results]).astype(np.float16)
    counts = np.array([len(r[2]) for r in results])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    windows = np.concatenate([r[2] for r in results]) if counts.sum() else np.zeros((0, *feat.FEATURE_SHAPE))
    tmp = folder / "features.tmp.npz"
    np.savez(tmp, clean=clean, aug=aug, windows=windows.astype(np.float32), window_offsets=offsets)
    tmp.replace(path)
    (folder / "info.json").write_text(json.dumps({
        "files": len(items), "n_aug": n_aug, "seed": seed, "augmentation": AUG_VERSION,
        "features": feat.DESCRIPTION, "labels": list(LABELS),
    }, indent=2))
    return FeatureSet(items, clean, aug, windows.astype(np.float32), offsets)
