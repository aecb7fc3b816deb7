"""Record what the committed int8 face model predicts on packaged faces, for the regression test.

    .venv/bin/python models/training/record_face_expectation.py

Runs the device's own ExpressionClassifier (flip averaging, temperature) on the first 12 faces of
scikit-image's `lfw_subset` and on the astronaut's face cut by the device's own detector and crop,
and writes tests/data/face_expected.json with the model's sha256. Re-run it whenever a new model
is published; tests/test_face_model.py then checks the model still gives these answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from device.config import Config
from device.inference.face import FaceAnalyzer
from device.inference.face_crop import crop_geometry, cut_face
from device.labels import LABELS

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "face_expected.json"
N_LFW = 12


def packaged_faces(analyzer: FaceAnalyzer) -> dict[str, np.ndarray]:
    faces = {}
    lfw = skimage.data.lfw_subset()
    for i in range(N_LFW):
        faces[f"lfw_subset[{i}]"] = cv2.resize((lfw[i] * 255).astype(np.uint8), (48, 48),
                                               interpolation=cv2.INTER_AREA)
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    det = analyzer.detector.detect(astronaut)[0]
    cfg = analyzer.config
    gray = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    faces["astronaut"] = cut_face(gray, crop_geometry(det, cfg.crop_scale, cfg.crop_shift_y, cfg.align))
    return faces


def main() -> None:
    analyzer = FaceAnalyzer.from_config(Config())
    records = []
    for name, face in packaged_faces(analyzer).items():
        probs, _ = analyzer.classifier.classify(face)
        records.append({"input": name, "label": LABELS[int(np.argmax(probs))],
                        "probs": [round(float(p), 5) for p in probs]})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"model_sha256": analyzer.classifier.model.spec.sha256,
                               "labels": list(LABELS), "records": records}, indent=1) + "\n")
    print(f"wrote {OUT}: " + ", ".join(f"{r['input']}={r['label']}" for r in records))


if __name__ == "__main__":
    main()
