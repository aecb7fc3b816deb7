"""Measure how FER2013 frames its faces relative to the BlazeFace box: the crop defaults' source.

    .venv/bin/python models/training/calibrate_crop.py ../shared/datasets/fer2013/val --limit 1500

Each 48x48 FER2013 image is upscaled to 96x96 and placed in the middle of a 192x192 canvas filled
with its mean grey, so the detector sees the whole face with context. For every detected face,
the image side divided by the box side gives the crop scale, and the offset of the image centre
from the box centre (in box heights) gives the vertical shift. Medians go into FaceConfig's
`crop_scale` and `crop_shift_y` defaults. Runs with the appliance's runtime dependencies only.
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

from device.assets import third_party_entry
from device.evaluate import find_images
from device.inference.blazeface import BlazeFaceDetector
from device.inference.runtime import MODELS_DIR, ModelSpec, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="FER2013-layout folder, e.g. ../shared/datasets/fer2013/val")
    parser.add_argument("--limit", type=int, default=1500, help="images to use (evenly spaced)")
    args = parser.parse_args()
    from pathlib import Path

    items = find_images(Path(args.folder))
    picks = np.linspace(0, len(items) - 1, min(args.limit, len(items))).astype(int)
    spec = ModelSpec.from_manifest(third_party_entry("blazeface_short_range"))
    detector = BlazeFaceDetector(load_model(spec, MODELS_DIR), min_score=0.5)
    scale, shift_x, shift_y, missed = [], [], [], 0
    for i in picks:
        image = cv2.imread(str(items[i][0]), cv2.IMREAD_GRAYSCALE)
        big = cv2.resize(image, (96, 96), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((192, 192), int(image.mean()), dtype=np.uint8)
        canvas[48:144, 48:144] = big
        faces = detector.detect(cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR))
        if not faces:
            missed += 1
            continue
        face = faces[0]
        cx, cy = face.center
        scale.append(96 / max(face.width, face.height))
        shift_x.append((96 - cx) / face.height)
        shift_y.append((96 - cy) / face.height)
    result = {
        "images": len(picks),
        "detected": len(scale),
        "missed": missed,
        "crop_scale_median": round(float(np.median(scale)), 3),
        "crop_scale_iqr": [round(float(q), 3) for q in np.percentile(scale, [25, 75])],
        "crop_shift_x_median": round(float(np.median(shift_x)), 3),
        "crop_shift_y_median": round(float(np.median(shift_y)), 3),
        "crop_shift_y_iqr": [round(float(q), 3) for q in np.percentile(shift_y, [25, 75])],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
