"""Train the speech-emotion model on RAVDESS + TESS, validate it actor-independently, export int8.

One command reproduces the committed model (see models/MODEL_CARD_speech.md):

    .venv-train/bin/python models/training/train_speech.py --ravdess ../shared/datasets/ravdess \
        --tess ../shared/datasets/tess --work build/speech-train

Then `python models/training/publish_speech.py --work build/speech-train` copies it into models/.

Features are the device's own (`device.audio.features.speech_features`, imported, never copied):
a [256 frames x 40 mel bands] log-mel patch per 2.56 s of speech. Labels follow the project's
order (angry, disgust, fear, happy, sad, surprise, neutral; RAVDESS calm -> neutral, TESS
pleasant_surprise -> surprise).

Stages (each resumable: a finished fold or stage is skipped on re-run):
1. features: every file's clean input tensor, N_AUG augmented versions (speed perturbation
   0.9-1.1, synthetic reverberation, coloured noise at 5-30 dB SNR, gain) and the device's
   evaluation windows, cached in ~/.cache/affectbox/speech/<key>.
2. cv: 6 folds of 3 RAVDESS actors (both sexes in every fold; actor n is in fold (n-1)//3).
   Each fold model trains on the other 15 actors plus all of TESS (TESS is never used for
   validation: two speakers, nearly trivially separable), for a fixed number of epochs, with
   SpecAugment-style time/frequency masks and time shifts on top of the waveform augmentation.
   No checkpoint is picked on the held-out actors. Each fold model is exported to full int8 and
   its held-out actors are scored with the int8 file in LiteRT, windows and logit averaging
   exactly as on the device.
3. final: the same recipe trained once on all 18 actors + TESS (the cross-validation estimates
   this recipe's actor-independent accuracy; the final model has seen every actor, so it has no
   held-out score of its own), exported to full int8 (int8 input and output, logits out) with
   real feature tensors as the representative set.
4. calibrate + metrics: the softmax temperature is fitted by minimising the NLL of the pooled
   out-of-fold int8 logits (held-out actors only); per-fold, mean and pooled figures, ECE,
   file size and CPU time per second of audio are written to <work>/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speech_data import AUG_VERSION, FeatureSet, Utterance, actor_of, list_corpus, load_features
from tflite_util import convert_full_int8

from device.audio import features as feat
from device.calibration import expected_calibration_error as ece
from device.calibration import fit_temperature, negative_log_likelihood, softmax
from device.labels import LABELS
from device.metrics import classification_report

K = len(LABELS)
BATCH = 64
MODEL_FILE = "speech_emotion_int8.tflite"
FOLDS = [list(range(3 * f + 1, 3 * f + 4)) for f in range(6)]  # actors 1-3, 4-6, ... 16-18


# ---------------------------------------------------------------- model

def build_model(arch: str = "sep1d", width: float = 1.0, dropout: float = 0.3):
    """Small CNN over a [256, 40] log-mel patch; 7 logits out."""
    import keras
    from keras import layers

    def ch(n: int) -> int:
        return max(8, int(round(n * width / 8)) * 8)

    inputs = keras.Input(feat.FEATURE_SHAPE, name="logmel")
    if arch == "sep1d":
        # Temporal convolutions with the mel bands as channels (TC-ResNet style): cheap on one core.
        def block(x, filters, stride):
            shortcut = x
            if stride != 1 or x.shape[-1] != filters:
                shortcut = layers.Conv1D(filters, 1, strides=stride, use_bias=False)(x)
                shortcut = layers.BatchNormalization()(shortcut)
            y = layers.DepthwiseConv1D(9, strides=stride, padding="same", use_bias=False)(x)
            y = layers.Conv1D(filters, 1, use_bias=False)(y)
            y = layers.BatchNormalization()(y)
            y = layers.ReLU()(y)
            y = layers.DepthwiseConv1D(9, padding="same", use_bias=False)(y)
            y = layers.Conv1D(filters, 1, use_bias=False)(y)
            y = layers.BatchNormalization()(y)
            return layers.ReLU()(layers.Add()([y, shortcut]))

        x = layers.Conv1D(ch(64), 5, strides=2, padding="same", use_bias=False)(inputs)  # 128 frames
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = block(x, ch(64), 1)
        x = block(x, ch(96), 2)  # 64
        x = block(x, ch(128), 2)  # 32
        x = block(x, ch(160), 2)  # 16
        x = layers.Concatenate()([layers.GlobalAveragePooling1D()(x), layers.GlobalMaxPooling1D()(x)])
    elif arch == "cnn2d":
        # Time x frequency convolutions: full 3x3 convs early, separable later.
        def conv_bn(x, filters, stride=(1, 1)):
            x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            return layers.ReLU()(x)

        def sep(x, filters):
            x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            return layers.ReLU()(x)

        x = layers.Reshape((*feat.FEATURE_SHAPE, 1))(inputs)
        x = conv_bn(x, ch(24), (2, 2))  # 128 x 20
        x = conv_bn(x, ch(32))
        x = layers.MaxPooling2D(2)(x)  # 64 x 10
        x = sep(x, ch(64))
        x = sep(x, ch(64))
        x = layers.MaxPooling2D(2)(x)  # 32 x 5
        x = sep(x, ch(128))
        x = sep(x, ch(128))
        x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    else:
        raise ValueError(f"unknown arch {arch}")
    x = layers.Dropout(dropout)(x)
    logits = layers.Dense(K, name="logits")(x)
    return keras.Model(inputs, logits, name="affectbox_speech")


# ---------------------------------------------------------------- training data per epoch

def spec_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random time shift (+-24 frames, zero fill), 2 frequency masks (<= 6 bands), 2 time masks (<= 24 frames)."""
    n, t, f = x.shape
    out = np.zeros_like(x)
    shifts = rng.integers(-24, 25, size=n)
    for i, s in enumerate(shifts):
        if s >= 0:
            out[i, s:] = x[i, : t - s]
        else:
            out[i, :s] = x[i, -s:]
    for _ in range(2):
        width = rng.integers(0, 7, size=n)
        start = rng.integers(0, f - width + 1)
        band = np.arange(f)[None, :]
        mask = (band >= start[:, None]) & (band < (start + width)[:, None])
        out *= ~mask[:, None, :]
        width = rng.integers(0, 25, size=n)
        start = rng.integers(0, t - width + 1)
        frame = np.arange(t)[None, :]
        mask = (frame >= start[:, None]) & (frame < (start + width)[:, None])
        out *= ~mask[:, :, None]
    return out


def epoch_arrays(fs: FeatureSet, train_idx: np.ndarray, ravdess_repeat: int, rng: np.random.Generator,
                 class_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch: every training file drawn once (RAVDESS files `ravdess_repeat` times), each draw a
    random version (clean or one of the augmented), SpecAugment on top; a whole number of batches."""
    is_rav = np.array([fs.items[i].corpus == "ravdess" for i in train_idx])
    draws = np.concatenate([train_idx] + [train_idx[is_rav]] * (ravdess_repeat - 1))
    rng.shuffle(draws)
    draws = draws[: len(draws) // BATCH * BATCH]  # full batches only (oneDNN, FIELD_NOTES)
    n_aug = fs.aug.shape[1]
    version = rng.integers(0, n_aug + 1, size=len(draws))
    x = np.empty((len(draws), *feat.FEATURE_SHAPE), dtype=np.float32)
    for j, (i, v) in enumerate(zip(draws, version, strict=True)):
        x[j] = fs.clean[i] if v == 0 else fs.aug[i, v - 1]
    x = spec_augment(x, rng)
    labels = fs.labels[draws]
    y = np.full((len(draws), K), 0.0, dtype=np.float32)
    y[np.arange(len(draws)), labels] = 1.0
    return x, y, class_weight[labels].astype(np.float32)


def train_model(args: argparse.Namespace, fs: FeatureSet, train_idx: np.ndarray, out: Path, seed: int) -> Path:
    import keras

    weights = out / "model.weights.h5"
    if weights.exists():
        print(f"train: {weights} exists; skipping", flush=True)
        return weights
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    labels = fs.labels[train_idx]
    is_rav = np.array([fs.items[i].corpus == "ravdess" for i in train_idx])
    counts = np.bincount(labels, minlength=K) + (args.ravdess_repeat - 1) * np.bincount(labels[is_rav], minlength=K)
    class_weight = np.sqrt(counts.max() / counts)
    class_weight = class_weight / (class_weight * counts).sum() * counts.sum()
    model = build_model(args.arch, args.width, args.dropout)
    steps = (len(train_idx) + (args.ravdess_repeat - 1) * int(is_rav.sum())) // BATCH
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.lr / 10, decay_steps=steps * (args.epochs - args.warmup),
        warmup_target=args.lr, warmup_steps=steps * args.warmup, alpha=0.01,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        metrics=["accuracy"],
    )
    if seed == args.seed:
        model.summary(print_fn=lambda s: print(s, flush=True))
    log = (out / "history.csv").open("w")
    log.write("epoch,loss,accuracy,seconds\n")
    for epoch in range(args.epochs):
        t0 = time.time()
        x, y, w = epoch_arrays(fs, train_idx, args.ravdess_repeat, rng, class_weight)
        hist = model.fit(x, y, sample_weight=w, batch_size=BATCH, epochs=epoch + 1, initial_epoch=epoch,
                         shuffle=False, verbose=0)
        loss, acc = hist.history["loss"][-1], hist.history["accuracy"][-1]
        log.write(f"{epoch},{loss:.4f},{acc:.4f},{time.time() - t0:.1f}\n")
        log.flush()
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f"  {out.name} epoch {epoch + 1}/{args.epochs}: loss {loss:.3f} acc {acc:.3f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    log.close()
    model.save_weights(str(weights))
    return weights


def float_logits(args: argparse.Namespace, weights: Path, x: np.ndarray) -> np.ndarray:
    """Keras float logits, padded to whole batches."""
    model = build_model(args.arch, args.width, args.dropout)
    model.load_weights(str(weights))
    pad = (-len(x)) % BATCH
    xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    return model.predict(xp, batch_size=BATCH, verbose=0)[: len(x)]


# ---------------------------------------------------------------- int8 export and LiteRT scoring

def export_int8(args: argparse.Namespace, weights: Path, fs: FeatureSet, train_idx: np.ndarray, out: Path) -> Path:

    path = out / MODEL_FILE
    if path.exists():
        return path
    model = build_model(args.arch, args.width, args.dropout)
    model.load_weights(str(weights))
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(train_idx, size=min(500, len(train_idx)), replace=False)
    # real feature tensors: clean and augmented versions of training files
    sample = [fs.clean[i] if k % 2 == 0 else fs.aug[i, k % fs.aug.shape[1]].astype(np.float32)
              for k, i in enumerate(pick)]

    path.write_bytes(convert_full_int8(model, (x[None] for x in sample)))
    print(f"export: wrote {path} ({path.stat().st_size} bytes)", flush=True)
    return path


class Int8Runner:
    """The int8 file in LiteRT, one thread, one window per invoke (as on the device)."""

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_path=str(path), num_threads=1)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.in_scale, self.in_zero = self.inp["quantization"]
        self.out_scale, self.out_zero = self.out["quantization"]

    def __call__(self, window: np.ndarray) -> np.ndarray:
        q = np.clip(np.round(window / self.in_scale + self.in_zero), -128, 127).astype(np.int8)
        self.interp.set_tensor(self.inp["index"], q[None])
        self.interp.invoke()
        raw = self.interp.get_tensor(self.out["index"])[0].astype(np.float32)
        return (raw - self.out_zero) * self.out_scale


def file_logits(runner: Int8Runner, fs: FeatureSet, idx: np.ndarray) -> np.ndarray:
    """Per file: mean int8 logits over the device's windows of that file."""
    out = np.empty((len(idx), K), dtype=np.float32)
    for j, i in enumerate(idx):
        windows = fs.windows[fs.window_offsets[i] : fs.window_offsets[i + 1]]
        out[j] = np.mean([runner(w) for w in windows], axis=0)
    return out


def run_fold(args: argparse.Namespace, fs: FeatureSet, fold: int) -> dict:
    out = Path(args.work) / f"fold{fold}"
    result_path = out / "eval.json"
    if result_path.exists():
        print(f"cv: fold {fold} already evaluated ({result_path}); skipping", flush=True)
        return json.loads(result_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    held = set(FOLDS[fold])
    actors = np.array([actor_of(u) for u in fs.items])
    is_rav = np.array([u.corpus == "ravdess" for u in fs.items])
    val_idx = np.flatnonzero(is_rav & np.isin(actors, list(held)))
    train_idx = np.flatnonzero(~(is_rav & np.isin(actors, list(held))))
    assert not set(actors[train_idx][is_rav[train_idx]]) & held, "an actor is in train and validation"
    print(f"cv: fold {fold} holds out actors {sorted(held)}: train {len(train_idx)} files, "
          f"validate {len(val_idx)}", flush=True)
    t0 = time.time()
    weights = train_model(args, fs, train_idx, out, args.seed + fold)
    model_path = export_int8(args, weights, fs, train_idx, out)
    runner = Int8Runner(model_path)
    logits = file_logits(runner, fs, val_idx)
    labels = fs.labels[val_idx]
    # float reference (clean centre crop) to see what int8 costs
    float_pred = float_logits(args, weights, fs.clean[val_idx]).argmax(1)
    report = classification_report(labels, logits.argmax(1))
    result = {
        "fold": fold,
        "actors": sorted(held),
        "int8": report,
        "float_accuracy_centre_crop": float((float_pred == labels).mean()),
        "logits": logits.tolist(),
        "labels": labels.tolist(),
        "files": [fs.items[i].path.name for i in val_idx],
        "minutes": round((time.time() - t0) / 60, 1),
    }
    result_path.write_text(json.dumps(result))
    print(f"cv: fold {fold} actors {sorted(held)}: int8 accuracy {report['accuracy']:.3f}, macro recall "
          f"{report['macro_recall']:.3f} (float {result['float_accuracy_centre_crop']:.3f}), "
          f"{result['minutes']} min", flush=True)
    return result


# ---------------------------------------------------------------- calibration and metrics

def measure_cost(model_path: Path, fs: FeatureSet) -> dict:
    """CPU time (one thread): model per invoke, features per second of audio, over RAVDESS files."""
    from audio_io import read_audio

    runner = Int8Runner(model_path)
    window = fs.windows[0]
    for _ in range(20):
        runner(window)
    n = 300
    t0 = time.process_time()
    for _ in range(n):
        runner(window)
    invoke_ms = (time.process_time() - t0) / n * 1000
    paths = [u.path for u in fs.items if u.corpus == "ravdess"][::27][:40]
    pcm = [read_audio(p) for p in paths]
    seconds = sum(len(x) for x in pcm) / feat.SAMPLE_RATE
    t0 = time.process_time()
    n_windows = 0
    for x in pcm:
        n_windows += len(feat.speech_feature_windows(x))
    features_ms = (time.process_time() - t0) * 1000
    model_ms = n_windows * invoke_ms
    return {
        "cpu_ms_per_invoke_one_thread": round(invoke_ms, 4),
        "window_seconds": feat.N_FRAMES * feat.HOP_SECONDS,
        "model_cpu_ms_per_audio_second_single_window": round(invoke_ms / (feat.N_FRAMES * feat.HOP_SECONDS), 4),
        "measured_on": f"{len(pcm)} RAVDESS files, {seconds:.1f} s of audio, {n_windows} windows",
        "features_cpu_ms_per_audio_second": round(features_ms / seconds, 3),
        "model_cpu_ms_per_audio_second": round(model_ms / seconds, 3),
        "total_cpu_ms_per_audio_second": round((features_ms + model_ms) / seconds, 3),
        "note": "process CPU time on the 2-core x86_64 development machine while another training job "
        "used both cores (pessimistic); one LiteRT thread",
    }


def summarise(args: argparse.Namespace, folds: list[dict], fs: FeatureSet, final_path: Path | None) -> dict:
    logits = np.concatenate([np.array(f["logits"]) for f in folds])
    labels = np.concatenate([np.array(f["labels"]) for f in folds])
    temperature = fit_temperature(logits, labels)
    accs = np.array([f["int8"]["accuracy"] for f in folds])
    recalls = np.array([f["int8"]["macro_recall"] for f in folds])
    f1s = np.array([f["int8"]["macro_f1"] for f in folds])
    pooled = classification_report(labels, logits.argmax(1))
    per_fold = [{
        "fold": f["fold"], "held_out_actors": f["actors"], "n": f["int8"]["n"],
        "accuracy": round(f["int8"]["accuracy"], 4), "macro_recall": round(f["int8"]["macro_recall"], 4),
        "macro_f1": round(f["int8"]["macro_f1"], 4),
        "float_accuracy_centre_crop": round(f["float_accuracy_centre_crop"], 4),
        "per_class_recall": {k: round(v, 4) for k, v in f["int8"]["per_class_recall"].items()},
        "confusion_matrix": f["int8"]["confusion_matrix"],
    } for f in folds]
    result = {
        "protocol": f"{len(folds)}-fold cross-validation by RAVDESS actor (3 actors per fold, both sexes in "
        "each; no actor in both training and validation); TESS in every training set, never validated; "
        "held-out RAVDESS speech files scored with each fold's full-int8 file in LiteRT, the device's "
        "windows and logit averaging; fixed epoch count, no checkpoint chosen on held-out actors",
        "labels": list(LABELS),
        "folds": per_fold,
        "mean": {
            "accuracy": round(float(accs.mean()), 4), "accuracy_std": round(float(accs.std()), 4),
            "macro_recall": round(float(recalls.mean()), 4), "macro_recall_std": round(float(recalls.std()), 4),
            "macro_f1": round(float(f1s.mean()), 4),
        },
        "pooled": pooled,
        "temperature": temperature,
        "temperature_method": "temperature scaling fitted by minimising the NLL of the pooled out-of-fold int8 "
        "logits (held-out RAVDESS actors of the cross-validation); applied to the final model trained with the "
        "same recipe on all actors",
        "ece_before": ece(softmax(logits), labels),
        "ece_after": ece(softmax(logits / temperature), labels),
        "nll_before": negative_log_likelihood(logits, labels, 1.0),
        "nll_after": negative_log_likelihood(logits, labels, temperature),
        "recipe": {k: getattr(args, k) for k in ("arch", "width", "dropout", "epochs", "warmup", "lr",
                                                  "weight_decay", "n_aug", "ravdess_repeat", "seed")},
        "features": feat.DESCRIPTION,
        "augmentation": AUG_VERSION,
        "training_files": {
            "ravdess": int(sum(u.corpus == "ravdess" for u in fs.items)),
            "tess": int(sum(u.corpus == "tess" for u in fs.items)),
        },
        "tess_note": "TESS (two speakers) is used for training only; no TESS hold-out is reported because the "
        "corpus is nearly trivially separable and says little about unseen speakers",
    }
    if final_path is not None:
        result["final_model"] = {
            "file": final_path.name,
            "size_bytes": final_path.stat().st_size,
            "trained_on": "all 18 RAVDESS actors + TESS, same recipe and epoch count as the folds",
            **measure_cost(final_path, fs),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ravdess", required=True, help="RAVDESS speech folder (Actor_XX/03-01-*.wav|flac)")
    parser.add_argument("--tess", required=True, help="TESS folder (<SPK>_<emotion>/*.wav|flac)")
    parser.add_argument("--work", default="build/speech-train", help="checkpoints, logs and outputs")
    parser.add_argument("--arch", choices=["sep1d", "cnn2d"], default="sep1d")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.02)
    parser.add_argument("--n-aug", type=int, default=4, help="augmented versions cached per file")
    parser.add_argument("--ravdess-repeat", type=int, default=2, help="draws per RAVDESS file per epoch")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--folds", default="0,1,2,3,4,5", help="comma-separated folds to run (0-5)")
    parser.add_argument("--workers", type=int, default=2, help="processes for feature extraction")
    parser.add_argument("--stage", choices=["all", "features", "cv", "final"], default="all")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    items: list[Utterance] = list_corpus(Path(args.ravdess)) + list_corpus(Path(args.tess))
    fs = load_features(items, args.n_aug, args.seed, args.workers)
    if args.stage == "features":
        return
    folds = []
    if args.stage in ("all", "cv"):
        folds = [run_fold(args, fs, int(f)) for f in args.folds.split(",")]
    final_path = None
    if args.stage in ("all", "final"):
        out = work / "final"
        out.mkdir(exist_ok=True)
        weights = train_model(args, fs, np.arange(len(fs.items)), out, args.seed + 100)
        final_path = export_int8(args, weights, fs, np.arange(len(fs.items)), out)
        folds = [json.loads((work / f"fold{f}" / "eval.json").read_text()) for f in range(len(FOLDS))
                 if (work / f"fold{f}" / "eval.json").exists()]
    if folds:
        result = summarise(args, folds, fs, final_path)
        name = "metrics.json" if final_path is not None else "cv_metrics.json"
        (work / name).write_text(json.dumps(result, indent=2))
        print(json.dumps({"per_fold_accuracy": [f["accuracy"] for f in result["folds"]], **result["mean"],
                          "temperature": result["temperature"]}, indent=2), flush=True)
        if final_path is not None:
            print(json.dumps(result["final_model"], indent=2), flush=True)


if __name__ == "__main__":
    main()
