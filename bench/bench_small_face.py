"""Expression accuracy of small faces: FER2013 faces shrunk to what a face W pixels wide gives the
crop, and scaled back up as the device does, for our model and the `fer` anchor.

A detector box W pixels wide makes a crop of `face.crop_scale` x W frame pixels (1.18 W by
default), which `cut_face` warps (bilinear) to the model's 48x48. So each 48x48 val face is
area-averaged down to round(1.18 W) pixels, given sensor noise (sigma 2 grey levels, as in the
far-face scenes), and scaled back up bilinearly to 48x48 (ours) or 64x64 (the anchor). Widths of
41 px and more give a crop of at least 48 px: no detail is lost there beyond the noise.

    .venv/bin/python bench/bench_small_face.py ../shared/datasets/fer2013/val [--limit N] [--json-out FILE]

Reads the dataset folder (benchmarks may; tests never do). Prints accuracy and macro-F1 per width
and each width's accuracy relative to the full-size faces, which `device/inference/face.py`
(SMALL_FACE_ACCURACY) uses for the fusion `quality` of a small face.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.bench_face import ANCHOR, AnchorModel, cache_dir, fetch_anchor, subset  # noqa: E402
from device.config import Config  # noqa: E402
from device.evaluate import find_images, load_face  # noqa: E402
from device.inference.expression import ExpressionClassifier  # noqa: E402
from device.inference.runtime import MODELS_DIR  # noqa: E402
from device.metrics import classification_report  # noqa: E402

WIDTHS = (24, 32, 40, 48)
NOISE_SIGMA = 2.0


def degrade(face: np.ndarray, width_px: int | None, crop_scale: float, rng: np.random.Generator) -> np.ndarray:
    """The 48x48 crop a face `width_px` wide would give (None: the original)."""
    if width_px is None:
        return face
    side = round(crop_scale * width_px)
    small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA) if side < face.shape[0] else face
    noisy = np.clip(small.astype(np.float32) + rng.normal(0, NOISE_SIGMA, small.shape), 0, 255).astype(np.uint8)
    return cv2.resize(noisy, (48, 48), interpolation=cv2.INTER_LINEAR)


def run(folder: Path, limit: int | None) -> dict[str, Any]:
    items = subset(find_images(folder), limit)
    faces = [load_face(path) for path, _ in items]
    truth = np.array([label for _, label in items])
    crop_scale = Config().face.crop_scale
    ours = ExpressionClassifier.from_models_dir(MODELS_DIR, num_threads=1, flip_average=True)
    anchor = AnchorModel(fetch_anchor(cache_dir()))
    size = ANCHOR["input_size"]
    rows: dict[str, Any] = {}
    for width in (*WIDTHS, None):
        rng = np.random.default_rng(0)
        crops = [degrade(face, width, crop_scale, rng) for face in faces]
        pred_ours = np.array([int(np.argmax(ours.logits(c))) for c in crops])
        pred_anchor = np.array([int(np.argmax(anchor.scores(cv2.resize(c, (size, size),
                                                                       interpolation=cv2.INTER_LINEAR))))
                                for c in crops])
        key = "full (48x48 as in FER2013)" if width is None else f"{width} px face"
        rows[key] = {
            "width_px": width,
            "crop_px": None if width is None else round(crop_scale * width),
            "ours": {k: classification_report(truth, pred_ours)[k] for k in ("accuracy", "macro_f1")},
            "anchor": {k: classification_report(truth, pred_anchor)[k] for k in ("accuracy", "macro_f1")},
        }
    full = rows["full (48x48 as in FER2013)"]
    for row in rows.values():
        for who in ("ours", "anchor"):
            row[who]["relative_accuracy"] = round(row[who]["accuracy"] / full[who]["accuracy"], 4)
    return {"command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])), "images": len(items),
            "noise_sigma": NOISE_SIGMA, "crop_scale": crop_scale, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"FER2013 faces ({result['images']} images) as a face of each width gives them "
             f"(crop {result['crop_scale']} x width, noise sigma {result['noise_sigma']}):", "",
             "| face | crop px | ours: accuracy | macro-F1 | relative | fer anchor: accuracy | macro-F1 | relative |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in result["rows"].items():
        o, a = row["ours"], row["anchor"]
        lines.append(f"| {name} | {row['crop_px'] or 48} | {o['accuracy']:.4f} | {o['macro_f1']:.4f} | "
                     f"{o['relative_accuracy']:.3f} | {a['accuracy']:.4f} | {a['macro_f1']:.4f} | "
                     f"{a['relative_accuracy']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="FER2013-layout folder (<class>/<image>)")
    parser.add_argument("--limit", type=int, help="a stratified subset of this many images")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    result = run(args.folder, args.limit)
    print(markdown(result))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
