"""Copy the trained speech model into models/ and write its manifest from what was measured.

    python models/training/publish_speech.py --work build/speech-train --models models

Reads `<work>/final/speech_emotion_int8.tflite` and `<work>/metrics.json` (written by
train_speech.py) and writes `models/speech_emotion_int8.tflite`, `models/speech_emotion.json`
(file, sha256, input/output contract read from the interpreter, feature description, labels,
calibration temperature, per-fold and mean actor-independent RAVDESS figures, training data and
licence) and `models/MODEL_CARD_speech.md`, whose figures all come from the same metrics.json.
Needs only numpy and ai-edge-litert (plus the device package for the feature constants).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from device.audio import features as feat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_known_answers import record_manifest
from tflite_util import LABELS, publish_file

MODEL_FILE = "speech_emotion_int8.tflite"
ARCH_TEXT = {
    "sep1d": "1-D temporal CNN (TC-ResNet style) over the log-mel frames with the 40 bands as channels: "
    "strided 5-tap stem (64 ch), four residual blocks of two depthwise-separable 9-tap convolutions "
    "(64, 96, 128, 160 ch, strides 1, 2, 2, 2), global average + max pooling, dropout, dense 7",
    "cnn2d": "2-D CNN over time x frequency: two 3x3 convolutions (24, 32 ch), four separable 3x3 "
    "convolutions (64, 128 ch) with max pooling, global average + max pooling, dropout, dense 7",
}


def input_description() -> dict:
    """What the manifest says about the input beyond shape and quantisation."""
    return {
    "normalisation": "float features quantised as round(value / scale + zero_point), clipped to int8",
    "features": feat.DESCRIPTION,
    "sample_rate": feat.SAMPLE_RATE,
    "frames": feat.N_FRAMES,
    "mel_bands": feat.N_MELS,
    "window_seconds": feat.N_FRAMES * feat.HOP_SECONDS,
    "code": "device/audio/features.py: speech_features / speech_feature_windows",
}


def _matrix(cm: list[list[int]]) -> list[str]:
    lines = ["| truth \\ predicted | " + " | ".join(LABELS) + " | recall |",
             "| --- |" + " ---: |" * (len(LABELS) + 1)]
    for label, row in zip(LABELS, cm, strict=True):
        recall = row[LABELS.index(label)] / max(sum(row), 1)
        lines.append(f"| **{label}** | " + " | ".join(str(v) for v in row) + f" | {recall:.2f} |")
    return lines


def _top_confusions(cm: list[list[int]], n: int = 4) -> str:
    """The n largest off-diagonal cells as 'truth -> predicted (share of truth)'."""
    m = np.array(cm, dtype=float)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    np.fill_diagonal(share, 0)
    order = np.argsort(share, axis=None)[::-1][:n]
    return ", ".join(f"{LABELS[i]} -> {LABELS[j]} ({share[i, j]:.0%})"
                     for i, j in (np.unravel_index(k, share.shape) for k in order))


def model_card(manifest: dict, metrics: dict) -> str:
    """The model card's Markdown, every figure taken from the manifest and metrics.json."""
    mean, pooled, final = metrics["mean"], metrics["pooled"], metrics["final_model"]
    recipe = metrics["recipe"]
    cal = manifest["calibration"]
    fold_rows = [
        f"| {f['fold']} | {', '.join(f'{a:02d}' for a in f['held_out_actors'])} | {f['n']} | "
        f"{f['accuracy']:.3f} | {f['macro_recall']:.3f} | {f['macro_f1']:.3f} | {f['float_accuracy_centre_crop']:.3f} |"
        for f in metrics["folds"]
    ]
    accs = [f["accuracy"] for f in metrics["folds"]]
    recall_rows = [f"| {k} | {v:.3f} | {pooled['support'][k]} |" for k, v in pooled["per_class_recall"].items()]
    lines = [
        "# Model card: affectbox speech emotion (`speech_emotion_int8.tflite`)",
        "",
        "> affectbox supports clinical judgment; it does not diagnose. This model estimates which of seven",
        "> emotion labels a short stretch of *acted* speech resembles. It is not a measure of mood, depression",
        "> or any clinical state, and its output must never be read as one on its own.",
        "",
        "## Summary",
        "",
        "| | |",
        "| --- | --- |",
        f"| version | {manifest['version']} |",
        f"| file | `{manifest['file']}`, {manifest['size_bytes']:,} bytes, sha256 `{manifest['sha256']}` |",
        f"| input | int8 {manifest['input']['shape']} (scale {manifest['input']['scale']:.5f}, zero point "
        f"{manifest['input']['zero_point']}): {feat.N_FRAMES} frames x {feat.N_MELS} log-mel bands = "
        f"{feat.N_FRAMES * feat.HOP_SECONDS:g} s of 16 kHz speech |",
        f"| output | int8 {manifest['output']['shape']} logits over {', '.join(LABELS)} |",
        f"| architecture | `{recipe['arch']}`: {ARCH_TEXT.get(recipe['arch'], recipe['arch'])} |",
        f"| actor-independent RAVDESS accuracy (int8, 6 folds) | **{mean['accuracy']:.3f}** mean "
        f"(std {mean['accuracy_std']:.3f}); pooled {pooled['accuracy']:.3f} over {pooled['n']} files |",
        f"| macro recall | **{mean['macro_recall']:.3f}** mean (std {mean['macro_recall_std']:.3f}); "
        f"pooled {pooled['macro_recall']:.3f} |",
        f"| calibration | temperature {cal['temperature']:.3f}; "
        f"ECE {cal['ece_before']:.3f} -> {cal['ece_after']:.3f} |",
        f"| CPU cost (one thread, x86 dev machine) | model {final['cpu_ms_per_invoke_one_thread']:.3f} ms per "
        f"{final['window_seconds']:g} s window; features + model {final['total_cpu_ms_per_audio_second']:.2f} ms "
        "per second of audio |",
        "| licence | non-commercial only (inherits RAVDESS CC BY-NC-SA 4.0 and TESS terms) |",
        "",
        "## Intended use",
        "",
        "One of the two analyzers of the affectbox appliance: during a clinic session (or an offline",
        "analysis of a recording) each voiced utterance found by the VAD is classified, and the calibrated",
        "probabilities are fused with the facial-expression model's into windowed mood estimates that a",
        "clinician reads as trends over sessions. Out of scope: diagnosis, screening, decisions about a",
        "person, use without a clinician, use on languages other than English without re-validation,",
        "commercial use (licence).",
        "",
        "## Input features and inference",
        "",
        manifest["input"]["features"] + ".",
        "",
        "The device computes them with `device/audio/features.py`; the training code imports the same",
        "function, so training, validation and the device see identical tensors. Utterances longer than",
        f"{feat.N_FRAMES * feat.HOP_SECONDS:g} s of speech are cut into evenly spaced windows at most half a window",
        "apart and their logits averaged (`device/inference/speech_emotion.py`); validation used the same.",
        "",
        "## Training data",
        "",
        f"- RAVDESS speech (Livingstone & Russo, 2018), actors 01-18 as provided to this project "
        f"({metrics['training_files']['ravdess']} files, 60 per actor; odd actors male, even female; two",
        "  sentences, two intensities). calm is counted as neutral, so neutral has 12 files per actor,",
        "  the other labels 8.",
        f"- TESS (Dupuis & Pichora-Fuller, 2010), two female speakers, {metrics['training_files']['tess']} files",
        "  (\"Say the word ...\", pleasant_surprise counted as surprise). Training only: two speakers and",
        "  nearly trivially separable, so a TESS score would say little about unseen speakers.",
        "- The project's copy holds RAVDESS actors 01-18; the other actors are kept aside for an",
        "  independent evaluation and were never seen here.",
        f"- Augmentation: {metrics.get('augmentation', 'speed perturbation, reverberation, noise, gain')}; "
        "random time shifts and SpecAugment-style time and frequency masks.",
        f"- Recipe: {recipe['epochs']} epochs (fixed; no checkpoint chosen on validation data), AdamW lr "
        f"{recipe['lr']} with warm-up and cosine decay, weight decay {recipe['weight_decay']}, label smoothing 0.1, "
        f"square-root class weights, each RAVDESS file drawn {recipe['ravdess_repeat']}x per epoch, "
        f"seed {recipe['seed']}.",
        "",
        "## Evaluation protocol (speaker-independent)",
        "",
        metrics["protocol"] + ".",
        "",
        "The shipped model is the same recipe retrained once on all 18 actors plus TESS; the",
        "cross-validation estimates how that recipe does on speakers it has never heard. The calibration",
        "temperature is fitted on the pooled out-of-fold int8 logits.",
        "",
        "### Per fold (int8 in LiteRT, held-out actors only)",
        "",
        "| fold | held-out actors | files | accuracy | macro recall | macro F1 | float accuracy (centre crop) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        *fold_rows,
        f"| **mean** | | | **{mean['accuracy']:.3f}** | **{mean['macro_recall']:.3f}** | {mean['macro_f1']:.3f} | |",
        "",
        "Published actor-disjoint RAVDESS results with MFCC-style features are about 60-65% (8 classes;",
        "here calm and neutral are one label, which removes their mutual confusion).",
        "",
        "### Per-class recall (pooled over folds)",
        "",
        "| label | recall | files |",
        "| --- | ---: | ---: |",
        *recall_rows,
        "",
        "### Confusion matrix (pooled over folds; rows = truth)",
        "",
        *_matrix(pooled["confusion_matrix"]),
        "",
        "## Calibration",
        "",
        f"Temperature {cal['temperature']:.3f} ({cal['method']}). Expected calibration error (15 bins) "
        f"{cal['ece_before']:.3f} before and {cal['ece_after']:.3f} after; NLL {metrics['nll_before']:.3f} -> "
        f"{metrics['nll_after']:.3f}. The calibration holds for acted RAVDESS-like speech; on clinical speech the",
        "model is likely over-confident (see below).",
        "",
        "## Size and cost",
        "",
        f"{manifest['size_bytes']:,} bytes. {final['note']}: model {final['cpu_ms_per_invoke_one_thread']:.3f} ms per "
        f"invoke ({final['model_cpu_ms_per_audio_second_single_window']:.3f} ms per second of audio for single-window "
        f"utterances), features {final['features_cpu_ms_per_audio_second']:.2f} ms per second of audio, together "
        f"{final['total_cpu_ms_per_audio_second']:.2f} ms per second ({final['measured_on']}), i.e. "
        f"{final['total_cpu_ms_per_audio_second'] / 10:.2f}% of real time. "
        "A Raspberry Pi 4 core is several times slower (not measured here; bench/ is the place).",
        "",
        "## Known limitations and failure modes",
        "",
        "- **Acted, not spontaneous speech.** RAVDESS and TESS are actors portraying emotions in fixed",
        "  sentences, with exaggerated and prototypical prosody. Spontaneous clinical speech is subtler;",
        "  expect much lower accuracy, a bias towards neutral/sad for flat speech, and probabilities that",
        "  are more confident than they should be. Depressed speech (slow, monotone) may look sad or neutral",
        "  whatever the person feels.",
        "- **English only, few speakers.** 18 North-American actors and 2 Canadian women; no children, few",
        "  older voices (one TESS speaker), no accents or other languages. Accuracy depends on the speaker:",
        f"  {min(accs):.0%} to {max(accs):.0%} across folds of three actors (std {mean['accuracy_std']:.1%}).",
        "- **Lexical content is fixed** in the training data (two sentences, one carrier phrase), so the",
        "  model has learned prosody and voice quality only; it ignores what is said.",
        "- **Most frequent confusions** (pooled held-out actors): " + _top_confusions(pooled["confusion_matrix"])
        + "; happy and sad are the weakest labels.",
        "- **Recording conditions**: trained on studio recordings with synthetic noise and reverberation;",
        "  real room noise, distant microphones, overlapping speakers (the clinician!) and very short",
        "  utterances (< 0.5 s) degrade it. Speaker separation is the pipeline's job, not the model's.",
        "- **Labels**: seven labels only; EMO-DB boredom, contempt and other states have no counterpart.",
        "",
        "## Licence",
        "",
        manifest["training"]["licence"] + ". RAVDESS: https://zenodo.org/record/1188976 (CC BY-NC-SA 4.0); "
        "TESS: https://tspace.library.utoronto.ca/handle/1807/24487.",
        "",
        "## Reproduce",
        "",
        "```",
        ".venv-train/bin/python models/training/train_speech.py --ravdess ../shared/datasets/ravdess \\",
        "    --tess ../shared/datasets/tess --work build/speech-train",
        ".venv-train/bin/python models/training/publish_speech.py --work build/speech-train --models models",
        "# device.evaluate_speech.evaluate_speech(DIR, config): the logic of `affectbox eval speech DIR`",
        "# on any RAVDESS/TESS/EMO-DB/CREMA-D folder, with the device's exact inference path",
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="build/speech-train")
    parser.add_argument("--models", default="models")
    parser.add_argument("--version", default=time.strftime("%Y.%m.%d", time.gmtime()))
    args = parser.parse_args()
    work, models = Path(args.work), Path(args.models)
    source = work / "final" / MODEL_FILE
    metrics = json.loads((work / "metrics.json").read_text())
    target = models / MODEL_FILE
    published = publish_file(source, target)
    published["input"].update(input_description())
    final = metrics["final_model"]
    pooled = metrics["pooled"]
    manifest = {
        "name": "affectbox_speech_emotion",
        "version": args.version,
        **published,
        "calibration": {
            "temperature": round(metrics["temperature"], 4),
            "method": metrics["temperature_method"],
            "ece_before": round(metrics["ece_before"], 4),
            "ece_after": round(metrics["ece_after"], 4),
        },
        "inference": {
            "long_utterances": "speech longer than one window is cut into evenly spaced windows at most half a "
            "window apart; their logits are averaged (device/inference/speech_emotion.py)",
            "cpu_ms_per_invoke_one_thread": final["cpu_ms_per_invoke_one_thread"],
            "total_cpu_ms_per_audio_second": final["total_cpu_ms_per_audio_second"],
        },
        "metrics_val": {
            "split": "RAVDESS speech, actor-independent 6-fold cross-validation (3 held-out actors per fold), "
            "full-int8 fold models in LiteRT; 7 labels (calm counted as neutral)",
            "protocol": metrics["protocol"],
            "accuracy_mean": metrics["mean"]["accuracy"],
            "accuracy_std": metrics["mean"]["accuracy_std"],
            "macro_recall_mean": metrics["mean"]["macro_recall"],
            "macro_f1_mean": metrics["mean"]["macro_f1"],
            "accuracy_pooled": round(pooled["accuracy"], 4),
            "macro_recall_pooled": round(pooled["macro_recall"], 4),
            "per_class_recall_pooled": {k: round(v, 4) for k, v in pooled["per_class_recall"].items()},
            "confusion_matrix_pooled": pooled["confusion_matrix"],
            "per_fold": [
                {k: f[k] for k in ("fold", "held_out_actors", "n", "accuracy", "macro_recall", "macro_f1")}
                for f in metrics["folds"]
            ],
            "n": pooled["n"],
            "note": "the shipped model is the same recipe retrained on all 18 actors; these figures estimate its "
            "accuracy on unseen speakers of acted English speech",
        },
        "training": {
            "data": "RAVDESS speech (Livingstone & Russo, 2018), actors 01-18 as provided here, "
            f"{metrics['training_files']['ravdess']} files; TESS (Dupuis & Pichora-Fuller, 2010), two speakers, "
            f"{metrics['training_files']['tess']} files (training only). Augmentation: speed perturbation, "
            "synthetic reverberation, coloured noise, gain, SpecAugment-style masks",
            "recipe": metrics["recipe"],
            "code": "models/training/train_speech.py",
            "licence": "RAVDESS is released under CC BY-NC-SA 4.0 and TESS for non-commercial research; this model "
            "inherits those terms: non-commercial use only, attribution, share-alike",
        },
        "model_card": "MODEL_CARD_speech.md",
    }
    (models / "speech_emotion.json").write_text(json.dumps(manifest, indent=2) + "\n")
    record_manifest(models / "speech_emotion.json")  # its known-answer pair: part of publishing
    (models / "MODEL_CARD_speech.md").write_text(model_card(manifest, metrics))
    print(f"published {target} ({manifest['size_bytes']} bytes, sha256 {manifest['sha256'][:12]})")


if __name__ == "__main__":
    main()
