"""Train the facial-expression model on FER2013 and export it as a full-int8 TFLite file.

One command reproduces the committed model (see models/README.md):

    .venv-train/bin/python models/training/train_face.py --data ../shared/datasets/fer2013 \
        --work build/face-train --epochs 30

Stages (each resumable; a finished stage is skipped on re-run):
1. train: a residual depthwise-separable CNN (mini-Xception family, wider) on `train/`, with
   augmentation, label smoothing and square-root class weights; Keras BackupAndRestore
   checkpoints every epoch, so an interrupted run resumes where it stopped. The weights with the
   best `val` accuracy are kept.
2. export: full-int8 conversion with real FER2013 training faces as the representative set;
   the model outputs logits, so the runtime applies the calibration temperature.
3. calibrate + evaluate: runs the int8 file in LiteRT on `val` (with and without the horizontal
   flip average the runtime uses), fits the softmax temperature on val by minimising NLL, and
   writes metrics.json that the model card quotes.
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
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: training may import device
from fer_data import LABELS, load_split
from tflite_util import convert_full_int8

from device.calibration import expected_calibration_error as ece
from device.calibration import fit_temperature, softmax
from device.metrics import classification_report


def metrics(pred: np.ndarray, labels: np.ndarray) -> dict:
    return classification_report(labels, pred)

BATCH = 128
VAL_BATCH = 97  # 3589 = 37 * 97: no partial batch (oneDNN double-free on partial batches, FIELD_NOTES)


def build_model(width: float = 1.0, dropout: float = 0.3):
    """Hybrid residual CNN (full convs at 48-12 px, separable at 6 px), 48x48x1 pixel input, 7 logits."""
    import keras
    from keras import layers

    def ch(n: int) -> int:
        return max(8, int(round(n * width / 8)) * 8)

    def conv_bn(x, filters, kernel=3, stride=1):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    def res_block(x, filters, stride):
        """ResNet basic block: full 3x3 convolutions where the feature maps are large."""
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
            shortcut = layers.BatchNormalization()(shortcut)
        y = conv_bn(x, filters, 3, stride)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        return layers.ReLU()(layers.Add()([y, shortcut]))

    def sep_block(x, filters, stride):
        """Xception-style separable block: cheap in parameters where channels are many."""
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, padding="same", use_bias=False)(x)
            shortcut = layers.BatchNormalization()(shortcut)
        y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.Conv2D(filters, 1, use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        y = layers.ReLU()(y)
        y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
        y = layers.Conv2D(filters, 1, use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        y = layers.Add()([y, shortcut])
        return layers.ReLU()(y)

    inputs = keras.Input((48, 48, 1), name="face")
    # Pixels arrive in [0, 255]; normalising inside the model keeps the runtime contract simple
    # (int8 input = pixel - 128 with scale 1) and identical for training and the device.
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = conv_bn(x, ch(32))
    x = conv_bn(x, ch(48), stride=2)  # 24x24
    x = res_block(x, ch(64), 1)
    x = res_block(x, ch(128), 2)  # 12x12
    x = sep_block(x, ch(256), 2)  # 6x6
    x = sep_block(x, ch(256), 1)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    logits = layers.Dense(len(LABELS), name="logits")(x)
    return keras.Model(inputs, logits, name="affectbox_face")


def make_datasets(data_dir: Path, seed: int):
    import tensorflow as tf

    x_train, y_train = load_split(data_dir / "train")
    x_val, y_val = load_split(data_dir / "val")
    x_train = x_train[..., None].astype(np.float32)
    x_val = x_val[..., None].astype(np.float32)

    import keras
    from keras import layers

    augment = keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.04, fill_mode="reflect", seed=seed),  # about +-14 degrees
            layers.RandomZoom((-0.15, 0.1), fill_mode="reflect", seed=seed),
            layers.RandomTranslation(0.08, 0.08, fill_mode="reflect", seed=seed),
        ]
    )

    def aug(x, y):
        x = augment(x, training=True)
        # brightness/contrast jitter on the 0..255 range
        x = tf.image.random_contrast(x, 0.7, 1.3, seed=seed)
        x = tf.image.random_brightness(x, 25.0, seed=seed)
        x = tf.clip_by_value(x, 0.0, 255.0)
        return x, y

    def erase(x, y):
        # random erasing (one rectangle, half of the batches' images) as occlusion robustness
        shape = tf.shape(x)
        b = shape[0]
        h = tf.random.uniform([b, 1, 1, 1], 8, 20, dtype=tf.int32)
        w = tf.random.uniform([b, 1, 1, 1], 8, 20, dtype=tf.int32)
        cy = tf.random.uniform([b, 1, 1, 1], 0, 48, dtype=tf.int32)
        cx = tf.random.uniform([b, 1, 1, 1], 0, 48, dtype=tf.int32)
        yy = tf.reshape(tf.range(48), [1, 48, 1, 1])
        xx = tf.reshape(tf.range(48), [1, 1, 48, 1])
        inside = (tf.abs(yy - cy) * 2 < h) & (tf.abs(xx - cx) * 2 < w)
        apply = tf.random.uniform([b, 1, 1, 1]) < 0.5
        mask = tf.cast(inside & apply, tf.float32)
        fill = tf.random.uniform([b, 1, 1, 1], 0, 255)
        return x * (1 - mask) + fill * mask, y

    y_train_1h = np.eye(len(LABELS), dtype=np.float32)[y_train]
    y_val_1h = np.eye(len(LABELS), dtype=np.float32)[y_val]
    train = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train_1h))
        .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
        .batch(BATCH, drop_remainder=True)
        .map(aug, num_parallel_calls=tf.data.AUTOTUNE)
        .map(erase, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2)
    )
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val_1h)).batch(VAL_BATCH, drop_remainder=True)
    counts = np.bincount(y_train, minlength=len(LABELS)).astype(np.float64)
    # square-root inverse-frequency weights: lifts disgust without wrecking overall accuracy
    weights = np.sqrt(counts.max() / counts)
    weights = weights / (weights * counts).sum() * counts.sum()
    return train, val, {i: float(w) for i, w in enumerate(weights)}, len(x_train)


def train(args: argparse.Namespace) -> Path:
    import keras

    work = Path(args.work)
    best = work / "best.weights.h5"
    done_marker = work / "train.done"
    if done_marker.exists():
        print(f"train: already finished ({done_marker}); skipping", flush=True)
        return best
    keras.utils.set_random_seed(args.seed)
    train_ds, val_ds, class_weight, n_train = make_datasets(Path(args.data), args.seed)
    model = build_model(width=args.width)
    if args.init_weights:
        # a warm restart: continue from an earlier run's weights with a fresh (smaller) schedule
        model.load_weights(args.init_weights)
    steps = n_train // BATCH
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.lr / 10,
        decay_steps=steps * (args.epochs - args.warmup),
        warmup_target=args.lr,
        warmup_steps=steps * args.warmup,
        alpha=0.01,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        metrics=["accuracy"],
    )
    model.summary(print_fn=lambda s: print(s, flush=True))
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work / "backup")),
        keras.callbacks.ModelCheckpoint(
            str(best), monitor="val_accuracy", mode="max", save_best_only=True, save_weights_only=True
        ),
        keras.callbacks.CSVLogger(str(work / "history.csv"), append=True),
    ]
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        class_weight=class_weight,
        callbacks=callbacks,
        verbose=2,
    )
    done_marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return best


def export(args: argparse.Namespace, weights: Path) -> Path:

    out = Path(args.work) / "face_expression_int8.tflite"
    model = build_model(width=args.width)
    model.load_weights(str(weights))
    x_train, _ = load_split(Path(args.data) / "train")
    rng = np.random.default_rng(args.seed)
    sample = x_train[rng.choice(len(x_train), size=500, replace=False)]

    out.write_bytes(convert_full_int8(model, (img[None, :, :, None] for img in sample)))
    print(f"export: wrote {out} ({out.stat().st_size} bytes)", flush=True)
    return out


def run_int8(model_path: Path, images: np.ndarray) -> np.ndarray:
    """Float logits of the int8 model for uint8 images [N,48,48], one image per invoke (as on device)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model_path), num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    logits = np.empty((len(images), len(LABELS)), dtype=np.float32)
    for i, img in enumerate(images):
        q = np.clip(np.round(img.astype(np.float32) / in_scale + in_zero), -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], q[None, :, :, None])
        interp.invoke()
        logits[i] = (interp.get_tensor(out["index"])[0].astype(np.float32) - out_zero) * out_scale
    return logits


def calibrate_and_evaluate(args: argparse.Namespace, model_path: Path) -> dict:
    x_val, y_val = load_split(Path(args.data) / "val")
    t0 = time.process_time()
    logits = run_int8(model_path, x_val)
    per_face_ms = (time.process_time() - t0) / len(x_val) * 1000
    logits_flip = run_int8(model_path, x_val[:, :, ::-1])
    mean_logits = (logits + logits_flip) / 2
    temperature = fit_temperature(mean_logits, y_val)
    probs = softmax(mean_logits / temperature)
    result = {
        "split": "val (FER2013 PublicTest)",
        "int8_single": metrics(logits.argmax(1), y_val),
        "int8_flip_average": metrics(mean_logits.argmax(1), y_val),
        "temperature": temperature,
        "ece_before": ece(softmax(mean_logits), y_val),
        "ece_after": ece(probs, y_val),
        "cpu_ms_per_invoke_one_thread": per_face_ms,
        "size_bytes": model_path.stat().st_size,
    }
    (Path(args.work) / "metrics.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))
    print("single:", result["int8_single"]["accuracy"], "flip:", result["int8_flip_average"]["accuracy"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="FER2013 folder with train/ and val/")
    parser.add_argument("--work", default="build/face-train", help="checkpoints, logs and outputs")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.02)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--init-weights", help="start from these weights (warm restart, e.g. with --lr 5e-4)")
    parser.add_argument("--stage", choices=["all", "train", "export", "evaluate"], default="all")
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    weights = Path(args.work) / "best.weights.h5"
    if args.stage in ("all", "train"):
        weights = train(args)
    if args.stage in ("all", "export"):
        export(args, weights)
    if args.stage in ("all", "export", "evaluate"):
        calibrate_and_evaluate(args, Path(args.work) / "face_expression_int8.tflite")


if __name__ == "__main__":
    main()
