"""Copy a trained face model into models/ and write its manifest from what was measured.

    python models/training/publish_face.py --work build/face-train --models models

Reads `<work>/face_expression_int8.tflite` and `<work>/metrics.json` (written by the evaluate
stage of train_face.py or soup_face.py; a `<work>/soup.json` is recorded too) and writes
`models/face_expression_int8.tflite` and `models/face_expression.json`: file, sha256,
input/output contract read from the interpreter, labels, calibration temperature, headline
metrics, training data and licence, then the known-answer pair (record_known_answers.py).
Needs only numpy and ai-edge-litert.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_known_answers import record_manifest
from tflite_util import publish_file


def input_description() -> dict:
    """What the manifest says about the input beyond shape and quantisation."""
    return {
    "normalisation": "48x48 grayscale face crop, pixel values 0..255 quantised as "
    "round(pixel / scale + zero_point); the model rescales to [-1, 1] internally",
    "framing": "FER2013-like crop: side 1.18x the BlazeFace box, centre 0.10 box heights above "
    "the box centre, eyes levelled (device/inference/face_crop.py)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="build/face-train")
    parser.add_argument("--models", default="models")
    parser.add_argument("--version", default=time.strftime("%Y.%m.%d", time.gmtime()))
    args = parser.parse_args()
    work, models = Path(args.work), Path(args.models)
    source = work / "face_expression_int8.tflite"
    metrics = json.loads((work / "metrics.json").read_text())
    target = models / "face_expression_int8.tflite"
    published = publish_file(source, target)
    published["input"].update(input_description())
    flip = metrics["int8_flip_average"]
    manifest = {
        "name": "affectbox_face_expression",
        "version": args.version,
        **published,
        "calibration": {
            "temperature": metrics["temperature"],
            "method": "temperature scaling fitted on FER2013 val (PublicTest) by minimising NLL of the "
            "flip-averaged int8 logits",
            "ece_before": round(metrics["ece_before"], 4),
            "ece_after": round(metrics["ece_after"], 4),
        },
        "inference": {"flip_average": True},
        "metrics_val": {
            "split": metrics["split"],
            "accuracy_flip_average": round(flip["accuracy"], 4),
            "macro_f1_flip_average": round(flip["macro_f1"], 4),
            "accuracy_single": round(metrics["int8_single"]["accuracy"], 4),
            "n": flip["n"],
        },
        "training": {
            "data": "FER2013 (Goodfellow et al., 2013), 28,709 'Training' images; model selection and "
            "calibration on the 3,589 'PublicTest' images",
            "code": "models/training/train_face.py",
            "licence": "FER2013 is released for non-commercial research; this model inherits that "
            "restriction (non-commercial use only)",
        },
        "model_card": "MODEL_CARD_face.md",
    }
    soup_file = work / "soup.json"
    if soup_file.is_file():  # written by soup_face.py: averaged checkpoints, BatchNorm re-estimated
        soup = json.loads(soup_file.read_text())
        manifest["training"]["code"] = "models/training/train_face.py, models/training/soup_face.py"
        manifest["training"]["soup"] = {
            "checkpoints": [Path(w["path"]).parent.name + "/" + Path(w["path"]).name for w in soup["weights"]],
            "coefficients": soup["coefficients"],
            "batchnorm_reestimated_on": (f"{soup['batchnorm']['images']} un-augmented FER2013 training faces"
                                         if soup.get("batchnorm") else None),
        }
    (models / "face_expression.json").write_text(json.dumps(manifest, indent=2) + "\n")
    record_manifest(models / "face_expression.json")  # its known-answer pair: part of publishing
    print(f"published {target} ({manifest['size_bytes']} bytes, sha256 {manifest['sha256'][:12]})")


if __name__ == "__main__":
    main()
