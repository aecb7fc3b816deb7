"""`affectbox eval face DIR`: accuracy of the on-device expression model on a labelled image folder.

Accepts the FER2013 layout, `<class>/<image>` or `<split>/<class>/<image>`, class folder names
in the shared label set (a few common aliases accepted). Images are taken as face crops, as
in FER2013: converted to grayscale, resized to 48x48, classified exactly as on the device
(same interpreter, flip averaging and temperature as configured). Runtime dependencies only.

The `calibration` block gives the ECE of the shipped temperature on these faces and a
cross-fitted check (temperature fitted on one half of the faces, measured on the other, both
ways): the shipped face temperature was fitted on FER2013 PublicTest, so on that folder only the
cross-fitted figures are held out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.calibration import eval_calibration
from device.config import Config
from device.errors import MediaError
from device.inference.expression import ExpressionClassifier
from device.inference.face_crop import CROP_SIZE
from device.inference.runtime import resolve_models_dir
from device.labels import LABELS
from device.metrics import classification_report

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp", ".tif", ".tiff"}
ALIASES = {
    "anger": "angry", "disgusted": "disgust", "fearful": "fear", "afraid": "fear", "happiness": "happy",
    "sadness": "sad", "surprised": "surprise", "calm": "neutral", "contempt": None,
}


def label_of(folder_name: str) -> str | None:
    name = folder_name.lower()
    if name in LABELS:
        return name
    return ALIASES.get(name)


def find_images(root: Path) -> list[tuple[Path, int]]:
    """(image, label index) for `<class>/<image>` under root or under each of its split folders."""
    if not root.is_dir():
        raise MediaError(f"{root}: not a folder")
    items: list[tuple[Path, int]] = []

    def scan(folder: Path) -> bool:
        found = False
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            label = label_of(class_dir.name)
            if label is None:
                continue
            found = True
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    items.append((path, LABELS.index(label)))
        return found

    if not scan(root):
        for split in sorted(p for p in root.iterdir() if p.is_dir()):
            scan(split)
    if not items:
        raise MediaError(
            f"{root}: no labelled images found (expected <class>/<image> or <split>/<class>/<image> "
            f"with class folders named {', '.join(LABELS)})"
        )
    return items


def load_face(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise MediaError(f"{path}: not an image OpenCV can read")
    if image.shape != (CROP_SIZE, CROP_SIZE):
        image = cv2.resize(image, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
    return image


def evaluate_faces(
    root: Path, config: Config, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    items = find_images(root)
    classifier = ExpressionClassifier.from_models_dir(
        resolve_models_dir(config.runtime.models_dir), config.runtime.num_threads, config.face.flip_average
    )
    truth = np.array([label for _, label in items])
    logits = np.empty((len(items), len(LABELS)), dtype=np.float64)
    cpu = 0.0
    for i, (path, _) in enumerate(items):
        face = load_face(path)
        start = time.process_time()
        logits[i] = classifier.logits(face)
        cpu += time.process_time() - start
        if progress is not None:
            progress(i + 1, len(items))
    report = classification_report(truth, logits.argmax(axis=1))
    report.update({
        "folder": str(root),
        "model": classifier.model.spec.name,
        "model_sha256": classifier.model.spec.sha256,
        "flip_average": classifier.flip_average,
        "cpu_ms_per_face": round(1000 * cpu / len(items), 4),
        "num_threads": config.runtime.num_threads,
        "calibration": eval_calibration(logits, truth, classifier.temperature, note=calibration_note(classifier)),
    })
    return report


def calibration_note(classifier: ExpressionClassifier) -> str:
    note = ("ece_shipped is held out only if the shipped temperature was not fitted on these faces "
            "(it was fitted on FER2013 PublicTest); the cross-fitted figures are held out: each half's "
            "temperature is fitted on the other half and measured on this one")
    if not classifier.flip_average:
        note += "; flip averaging is off here, but the shipped temperature was fitted on flip-averaged logits"
    return note
