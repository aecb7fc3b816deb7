"""Write models/MODEL_CARD_face.md from the measured figures, so the card never drifts from them.

    .venv/bin/python models/training/face_card.py --metrics build/face-train/metrics.json \
        --history build/face-train/history.csv [--bench bench-results/bench_face.json]

`metrics.json` comes from train_face.py's evaluate stage (the int8 file in LiteRT on FER2013
val); `--bench` is the JSON of bench/bench_face.py (accuracy and CPU time against the `fer`
anchor on the same images, same core).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def table(cm: list[list[int]]) -> str:
    head = "| truth \\ predicted | " + " | ".join(LABELS) + " | recall |"
    rule = "| --- |" + " ---: |" * (len(LABELS) + 1)
    rows = []
    for label, row in zip(LABELS, cm, strict=True):
        total = sum(row)
        recall = row[LABELS.index(label)] / total if total else 0.0
        rows.append(f"| {label} | " + " | ".join(str(v) for v in row) + f" | {recall:.3f} |")
    return "\n".join([head, rule, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", default="build/face-train/metrics.json")
    parser.add_argument("--history", default="build/face-train/history.csv")
    parser.add_argument("--restart-history", help="history.csv of a warm restart from the first run's best weights")
    parser.add_argument("--soup", help="soup.json of soup_face.py: the published weights average both runs' best "
                        "checkpoints, with BatchNorm statistics re-estimated")
    parser.add_argument("--manifest", default="models/face_expression.json")
    parser.add_argument("--bench", help="bench/bench_face.py --json-out file")
    parser.add_argument("--out", default="models/MODEL_CARD_face.md")
    args = parser.parse_args()
    m = json.loads(Path(args.metrics).read_text())
    manifest = json.loads(Path(args.manifest).read_text())
    flip, single = m["int8_flip_average"], m["int8_single"]
    with open(args.history, newline="") as handle:
        epochs = list(csv.DictReader(handle))
    restart: list[dict[str, str]] = []
    if args.restart_history:
        with open(args.restart_history, newline="") as handle:
            restart = list(csv.DictReader(handle))
    selected = restart or epochs
    best = max(selected, key=lambda r: float(r["val_accuracy"]))
    best_first = max(epochs, key=lambda r: float(r["val_accuracy"]))
    soup = json.loads(Path(args.soup).read_text()) if args.soup else None
    restart_text = (f" Then a warm restart from the best weights: one-epoch warm-up to 5e-4 and cosine decay over "
                    f"{len(restart)} epochs (`--init-weights ... --epochs {len(restart)} --warmup 1 --lr 5e-4`)."
                    if restart else "")
    bench_rows = ""
    if args.bench:
        bench = json.loads(Path(args.bench).read_text())
        bench_rows = "\n\n## Against the anchor (bench/bench_face.py, same images, same core)\n\n"
        bench_rows += "| model | accuracy | macro-F1 | CPU ms per face |\n| --- | ---: | ---: | ---: |\n"
        for row in bench["expression"]["models"].values():
            bench_rows += (f"| {row['model']} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} | "
                           f"{row['cpu']['mean_ms']:.3f} |\n")
        env = bench["environment"]
        bench_rows += f"\nCommand: `{env['command']}`; machine: {env['machine']}, one core, CPU time."
    bn_data = ""
    soup_text = ""
    if soup is None:
        selection_note = (
            f"Note that val was also used to pick the epoch (best val accuracy, epoch {int(best['epoch']) + 1} of "
            f"{len(selected)}{' of the restart' if restart else ''}:\n{float(best['val_accuracy']):.4f} in float) and to "
            "fit the temperature, so these figures are mildly\noptimistic; FER2013's PrivateTest split is not "
            "available here for an untouched estimate.")
    else:
        acc = soup["float_val_accuracy_flip_average"]
        bn = soup["batchnorm"]
        coef = " and ".join(f"{c:.2f}" for c in soup["coefficients"])
        alone = acc.get("checkpoints_alone_after_batchnorm", [])
        before = acc.get("checkpoints_alone_before_batchnorm", [])
        if bn:
            bn_data = f"; {bn['images']:,} of them, un-augmented, re-estimate the BatchNorm statistics"
        soup_text = (
            f"\n\nThe published weights are a weight-space average (\"model soup\", coefficients {coef}) of "
            f"{len(soup['weights'])} checkpoints, the best epoch of the first run and of the warm restart "
            "(`training/soup_face.py`)"
            + (f", after which every BatchNorm layer's statistics are recomputed on {bn['images']:,} "
               "un-augmented training faces (half mirrored): during training they were collected on augmented "
               "images (jitter, erasing), which clean inference crops do not look like. The float model "
               f"(flip-averaged, val) goes from {acc['before_batchnorm']:.4f} to {acc['after_batchnorm']:.4f} "
               "with this step." if bn else ".")
        )
        which = (f"epoch {int(best_first['epoch']) + 1} of {len(epochs)} of the first run, "
                 f"{float(best_first['val_accuracy']):.4f} in float")
        if restart:
            which += (f"; epoch {int(best['epoch']) + 1} of {len(restart)} of the restart, "
                      f"{float(best['val_accuracy']):.4f}")
        alternatives = ""
        if alone:
            alternatives = (
                " It was also looked at when this recipe was chosen over its neighbours (float, flip-averaged val: "
                f"the soup without the BatchNorm step {acc['before_batchnorm']:.4f}, each checkpoint alone with it "
                + " and ".join(f"{a:.4f}" for a in alone)
                + f", this soup {acc['after_batchnorm']:.4f}); the uniform coefficients and the BatchNorm "
                "images were fixed beforehand and come from the training split only.")
        selection_note = (
            "Which split chose what: FER2013 here has only `Training` and `PublicTest` (val); PrivateTest is "
            "kept aside by the dataset's curators, so there is no untouched test estimate. Val picked the "
            f"epoch of each averaged checkpoint (best val accuracy: {which}) and fitted the temperature."
            f"{alternatives} These figures are therefore mildly optimistic"
            + (f": the soup's {100 * (acc['after_batchnorm'] - max(alone)):+.1f} points over the better checkpoint "
               "alone with re-estimated BatchNorm are "
               + ("within" if abs(acc["after_batchnorm"] - max(alone)) < 0.01 else "beyond")
               + " val's noise (a standard error of about 0.8 points), the gain of the BatchNorm step is not"
               if alone else "")
            + (" (each checkpoint alone: " + ", ".join(f"{b:.4f} -> {a:.4f}" for b, a in zip(before, alone, strict=True))
               + ")." if before else "."))
    cm = flip["confusion_matrix"]
    sad = LABELS.index("sad")
    said_sad = sum(row[sad] for row in cm)
    others = sorted(((cm[i][sad], LABELS[i]) for i in range(len(LABELS)) if i != sad), reverse=True)[:2]
    sad_note = (f"On val the model answers \"sad\" for {said_sad} faces ({sum(cm[sad])} are sad), "
                f"{cm[sad][sad]} of them rightly (precision {cm[sad][sad] / said_sad:.2f}); the wrong ones are mostly "
                + " and ".join(f"{label} ({n})" for n, label in others) + ".")
    recall = ", ".join(f"{k} {v:.3f}" for k, v in flip["per_class_recall"].items())
    card = f"""# Model card: affectbox facial expression (int8)

**Supports clinical judgment; does not diagnose.** Seven-way facial expression probabilities for
one face crop, used as one input to a mood trend over sessions, never as a finding about a person.

| | |
| --- | --- |
| file | `{manifest['file']}` ({manifest['size_bytes']:,} bytes, sha256 `{manifest['sha256'][:16]}…`) |
| version | {manifest['version']} |
| input | int8 [1, 48, 48, 1]: grayscale face crop, pixel p quantised as round(p / {manifest['input']['scale']:.4f} + ({manifest['input']['zero_point']})) |
| output | int8 logits [1, 7], scale {manifest['output']['scale']:.5f}, zero point {manifest['output']['zero_point']}; labels {', '.join(LABELS)} |
| calibration | temperature {m['temperature']:.3f} on the flip-averaged logits (ECE {m['ece_before']:.3f} -> {m['ece_after']:.3f} on val) |
| architecture | residual CNN: two 3x3 convolutions (32, 48 ch), a ResNet block at 24 px (64 ch) and 12 px (128 ch), two depthwise-separable blocks at 6 px (256 ch), global average pooling, dropout 0.3, dense 7 |
| training data | FER2013 `Training` (28,709 faces{bn_data}); checkpoint selection and calibration on `PublicTest` (val, 3,589) |
| licence | non-commercial use only: FER2013 is released for research, and the model inherits that |

## Accuracy (int8 file in LiteRT, FER2013 val, n = {flip['n']})

| inference | accuracy | macro-F1 |
| --- | ---: | ---: |
| single pass | {single['accuracy']:.4f} | {single['macro_f1']:.4f} |
| crop + mirror image, logits averaged (the device's default) | {flip['accuracy']:.4f} | {flip['macro_f1']:.4f} |

Per-class recall (flip-averaged): {recall}.

{table(flip['confusion_matrix'])}

{selection_note}
CPU time of one int8 invocation with one thread: {m['cpu_ms_per_invoke_one_thread']:.3f} ms on the
development machine (bench/ has the per-face figures with flip averaging).{bench_rows}

## Training recipe (models/training/train_face.py)
AdamW (weight decay 0.02), two-epoch warm-up to 2e-3 then cosine decay over {len(epochs)} epochs,
batch 128, label smoothing 0.1, square-root inverse-frequency class weights (disgust is 1.5% of
the data), augmentation: horizontal flip, rotation up to about 14 degrees, zoom -15..+10 %,
translation 8 %, contrast 0.7-1.3, brightness +-25, random erasing of one 8-20 px rectangle in
half of the images. Full-int8 conversion with 500 real FER2013 training faces as the
representative set.{restart_text}{soup_text} Reproduce with the commands in models/README.md.

## Known failure modes
- FER2013 is web images of mostly posed or exaggerated expressions; everyday clinical faces are
  subtler, so absolute probabilities are less meaningful than changes within one patient.
- Disgust and fear are the weakest classes (see recall); fear is often confused with surprise
  and sad, and sad with neutral, which matters in depression care: read "sad" trends with care.
  {sad_note}
- 48x48 grayscale loses detail: faces smaller than about 48 pixels in the frame get a lower
  quality weight in fusion; strong side light, sunglasses, masks and profile views degrade it.
- FER2013's demographics are not documented; performance across age, sex and skin tone has not
  been measured here.
"""
    Path(args.out).write_text(card)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
