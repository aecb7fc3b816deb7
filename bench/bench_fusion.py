"""Does fusion earn its place? Fused accuracy against each modality alone, in one run.

    .venv/bin/python bench/bench_fusion.py ../shared/datasets/fer2013/val build/speech-train [--pairs 20]

Face side: the committed int8 expression model, run now on FER2013 val images (flip averaging
and calibration temperature as on the device). Speech side: the speech recipe's out-of-fold
int8 logits on held-out RAVDESS actors, from the training run's `fold*/eval.json` (every
utterance is scored by a fold model that never heard its speaker; the shipped model has heard
every actor, so it has no honest validation utterances of its own), calibrated with the shipped
model's temperature. Each validation utterance is paired with `--pairs` random val face images
of the same label (the seven labels are shared, so a pair is one simulated window in which the
patient shows the same emotion in face and voice), and each pair is scored by:
face alone, voice alone, and `device.fusion.fuse` with each pooling rule and equal quality and
coverage. Reported: accuracy, macro recall and macro-F1 (device.metrics), and how often fusion
fixes / breaks a face-alone answer. A second table simulates a poor face (quality 0.3,
coverage 0.3) to show the weights at work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from device.calibration import softmax
from device.config import Config, FusionConfig
from device.evaluate import find_images, load_face
from device.fusion import ModalityEstimate, fuse
from device.inference.expression import ExpressionClassifier
from device.inference.runtime import MODELS_DIR, read_manifest
from device.labels import LABELS
from device.metrics import classification_report


def face_probs(folder: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    items = find_images(folder)
    if limit:
        picks = np.linspace(0, len(items) - 1, min(limit, len(items))).astype(int)
        items = [items[i] for i in picks]
    classifier = ExpressionClassifier.from_models_dir(MODELS_DIR, 1, flip_average=True)
    probs = np.stack([classifier.classify(load_face(path))[0] for path, _ in items])
    return probs, np.array([label for _, label in items])


def speech_probs(work: Path) -> tuple[np.ndarray, np.ndarray]:
    folds = sorted(work.glob("fold*/eval.json"))
    if not folds:
        raise SystemExit(f"bench_fusion: {work}: no fold*/eval.json (run models/training/train_speech.py first)")
    logits = np.concatenate([np.array(json.loads(f.read_text())["logits"]) for f in folds])
    labels = np.concatenate([np.array(json.loads(f.read_text())["labels"]) for f in folds])
    temperature = float(read_manifest(MODELS_DIR / "speech_emotion.json")["calibration"]["temperature"])
    return softmax(logits, temperature), labels


def score(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    report = classification_report(truth, pred)
    return {k: round(report[k], 4) for k in ("accuracy", "macro_recall", "macro_f1")}


def run(face: tuple[np.ndarray, np.ndarray], speech: tuple[np.ndarray, np.ndarray], pairs: int, seed: int,
        face_quality: float, face_coverage: float) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    face_p, face_y = face
    speech_p, speech_y = speech
    by_label = {k: np.flatnonzero(face_y == k) for k in range(len(LABELS))}
    rows: dict[str, list[int]] = {"face alone": [], "voice alone": [], "fused log_linear": [], "fused linear": []}
    truth: list[int] = []
    for p_voice, label in zip(speech_p, speech_y, strict=True):
        if len(by_label[int(label)]) == 0:
            continue
        for index in rng.choice(by_label[int(label)], size=pairs):
            p_face = face_p[index]
            truth.append(int(label))
            rows["face alone"].append(int(np.argmax(p_face)))
            rows["voice alone"].append(int(np.argmax(p_voice)))
            estimates = {"face": ModalityEstimate(p_face, face_coverage, face_quality),
                         "speech": ModalityEstimate(p_voice, 1.0, 1.0)}
            for method in ("log_linear", "linear"):
                fused, _ = fuse(estimates, FusionConfig(method=method), Config().aggregation.min_face_share)
                rows[f"fused {method}"].append(int(np.argmax(fused)))
    y = np.array(truth)
    result = {name: score(np.array(pred), y) for name, pred in rows.items()}
    face_ok = np.array(rows["face alone"]) == y
    for method in ("log_linear", "linear"):
        fused_ok = np.array(rows[f"fused {method}"]) == y
        result[f"fused {method}"]["fixed_vs_face"] = int((fused_ok & ~face_ok).sum())
        result[f"fused {method}"]["broke_vs_face"] = int((~fused_ok & face_ok).sum())
    result["n_pairs"] = {"n": len(y)}  # type: ignore[dict-item]
    return result


def print_table(title: str, result: dict[str, dict[str, float]]) -> None:
    print(f"\n{title} ({result['n_pairs']['n']} pairs)\n")
    print("| estimate | accuracy | macro recall | macro-F1 | fixed vs face | broke vs face |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, row in result.items():
        if name == "n_pairs":
            continue
        print(f"| {name} | {row['accuracy']:.4f} | {row['macro_recall']:.4f} | {row['macro_f1']:.4f} | "
              f"{row.get('fixed_vs_face', '')} | {row.get('broke_vs_face', '')} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("faces", help="FER2013-layout validation folder, e.g. ../shared/datasets/fer2013/val")
    parser.add_argument("speech_work", help="the speech training folder holding fold*/eval.json")
    parser.add_argument("--pairs", type=int, default=20, help="face images paired with each utterance")
    parser.add_argument("--limit", type=int, help="use at most this many face images (evenly spaced)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if not Path(args.faces).is_dir():
        print(f"bench_fusion: {args.faces}: not a folder", file=sys.stderr)
        return 2
    face = face_probs(Path(args.faces), args.limit)
    speech = speech_probs(Path(args.speech_work))
    good = run(face, speech, args.pairs, args.seed, face_quality=1.0, face_coverage=1.0)
    poor = run(face, speech, args.pairs, args.seed, face_quality=0.3, face_coverage=0.3)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print_table("Both modalities clear (quality 1, full coverage)", good)
    print_table("Poor face (quality 0.3, coverage 0.3), clear voice", poor)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"clear": good, "poor_face": poor}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
