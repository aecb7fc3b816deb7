"""Average face checkpoints in weight space ("model soup"), re-estimate BatchNorm statistics on
clean training faces, then export and evaluate exactly as train_face.py does.

    .venv-train/bin/python models/training/soup_face.py --data ../shared/datasets/fer2013 \
        --weights build/face-train/best.weights.h5 build/face-ft/best.weights.h5 --work build/face-soup

Why the BatchNorm step: during training the moving statistics are collected on augmented
images (contrast/brightness jitter, random erasing, reflect-padded shifts), which differ from the
clean crops seen at inference. Recomputing them on un-augmented training faces (4,096 by default,
half mirrored, cumulative average of the batch statistics) moves each BatchNorm layer to the
inference distribution; no val image is used for it. Averaged weights also need this step,
because the averaged convolutions no longer match either checkpoint's statistics.

Writes `<work>/best.weights.h5`, `<work>/soup.json` (inputs, coefficients, BatchNorm settings),
then runs train_face.py's export and evaluate stages into the same folder, so
publish_face.py and face_card.py work on it unchanged. soup.json also reports float val
accuracies (flip-averaged) of the soup and of each checkpoint alone, before and after the
BatchNorm step, for the model card; the script chooses nothing by them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_face
from fer_data import load_split


def reestimate_batchnorm(model, images: np.ndarray, n: int, batch: int, seed: int) -> None:
    """Replace every BatchNorm layer's moving statistics by the average over `n` clean images."""
    from keras import layers

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(images), size=n, replace=False)
    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    momentum = [layer.momentum for layer in bns]
    for layer in bns:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))
    for step in range(n // batch):
        for layer in bns:
            layer.momentum = step / (step + 1)  # moving = cumulative mean of the batch statistics
        x = images[idx[step * batch:(step + 1) * batch]].astype(np.float32)
        mirror = rng.random(len(x)) < 0.5
        x[mirror] = x[mirror, :, ::-1]
        model(x[..., None], training=True)  # eager call; only BatchNorm statistics change
    for layer, value in zip(bns, momentum, strict=True):
        layer.momentum = value


def float_flip_accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the float Keras model with the crop + mirror logit average (as on the device)."""
    batch = train_face.VAL_BATCH  # full batches only (see train_face.VAL_BATCH)
    correct = 0
    for start in range(0, len(images) - len(images) % batch, batch):
        x = images[start:start + batch, :, :, None].astype(np.float32)
        logits = model(x, training=False).numpy() + model(x[:, :, ::-1], training=False).numpy()
        correct += int((logits.argmax(1) == labels[start:start + batch]).sum())
    return correct / (len(images) - len(images) % batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="FER2013 folder with train/ and val/")
    parser.add_argument("--weights", nargs="+", required=True, help="checkpoints of the same architecture")
    parser.add_argument("--coefficients", nargs="+", type=float,
                        help="one per checkpoint (default: uniform); normalised to sum to 1")
    parser.add_argument("--work", default="build/face-soup")
    parser.add_argument("--bn-images", type=int, default=4096, help="clean training faces for BatchNorm; 0 = keep")
    parser.add_argument("--bn-batch", type=int, default=128)
    parser.add_argument("--bn-seed", type=int, default=0)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7, help="representative-set seed of the export stage")
    args = parser.parse_args()

    import tensorflow as tf

    if os.environ.get("TF_NUM_INTRAOP_THREADS"):
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["TF_NUM_INTRAOP_THREADS"]))
    coefficients = np.array(args.coefficients or [1.0] * len(args.weights), dtype=np.float64)
    if len(coefficients) != len(args.weights) or coefficients.sum() <= 0:
        parser.error("--coefficients needs one positive-sum value per checkpoint")
    coefficients = coefficients / coefficients.sum()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    model = train_face.build_model(width=args.width)
    checkpoints = []
    for path in args.weights:
        model.load_weights(path)
        checkpoints.append(model.get_weights())
    soup = [sum(c * w for c, w in zip(coefficients, group, strict=True)) for group in zip(*checkpoints, strict=True)]
    x_val, y_val = load_split(Path(args.data) / "val")
    x_train = load_split(Path(args.data) / "train")[0] if args.bn_images else None
    report: dict = {}
    if args.bn_images and len(checkpoints) > 1:
        # for the model card: each checkpoint alone with the same BatchNorm step
        report["checkpoints_alone_before_batchnorm"] = []
        report["checkpoints_alone_after_batchnorm"] = []
        for weights in checkpoints:
            model.set_weights(weights)
            report["checkpoints_alone_before_batchnorm"].append(float_flip_accuracy(model, x_val, y_val))
            reestimate_batchnorm(model, x_train, args.bn_images, args.bn_batch, args.bn_seed)
            report["checkpoints_alone_after_batchnorm"].append(float_flip_accuracy(model, x_val, y_val))
    model.set_weights(soup)
    report["before_batchnorm"] = float_flip_accuracy(model, x_val, y_val)
    if args.bn_images:
        reestimate_batchnorm(model, x_train, args.bn_images, args.bn_batch, args.bn_seed)
        report["after_batchnorm"] = float_flip_accuracy(model, x_val, y_val)
    print(f"soup: float val accuracy (flip-averaged) {report}", flush=True)
    best = work / "best.weights.h5"
    model.save_weights(str(best))
    (work / "soup.json").write_text(json.dumps({
        "weights": [{"path": p, "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest()} for p in args.weights],
        "coefficients": [float(c) for c in coefficients],
        "batchnorm": {"images": args.bn_images, "batch": args.bn_batch, "seed": args.bn_seed,
                      "source": "FER2013 train, no augmentation, half mirrored"} if args.bn_images else None,
        "float_val_accuracy_flip_average": report,  # reported only: nothing here is chosen on val
    }, indent=2) + "\n")
    print(f"soup: wrote {best}", flush=True)
    train_face.export(args, best)
    train_face.calibrate_and_evaluate(args, work / "face_expression_int8.tflite")


if __name__ == "__main__":
    main()
