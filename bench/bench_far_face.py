"""Far faces: how often each face-detection design finds a face of a given width, and how often it
reports one in a face-free frame.

Scenes come from `tests/far_faces.py` (scikit-image's astronaut and its 100 LFW face crops, pasted
at a controlled face width into 640x480 frames of the package's other photos, at five positions
and three lighting levels; face-free frames from the same photos with LFW's non-face crops). A
face counts as found when a reported box is centred inside the true face box with a width within
a factor of two (`tests.far_faces.is_hit`). Every pathway sees the same frames, one run:

- ours: `FaceAnalyzer` as configured by default (what `affectbox analyze` and the daemon run);
  each scene is a fresh start (a face that has just appeared), given the detection rounds one
  full search takes (6 at 640x480: tiles in turn, 1.2 s at the default rates), so it measures
  detection, not tracking;
- the design options of issue 14: BlazeFace short range (the old default) and full range (dense
  and sparse) on the whole frame, each on the region of interest only, and a 1280x720 capture
  with detection on a 640x360 low-resolution stream;
- the `fer` package's pathway: OpenCV 4's Haar cascade with fer's defaults (bench/haar_pathway.py).

Run (about 10 minutes on one core with the full set; --lfw 20 for a quicker look):

    .venv/bin/python bench/bench_far_face.py [--lfw 100] [--widths 24,32,40,48,56,64,80,120] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.haar_pathway import FER_DEFAULTS, haar_boxes  # noqa: E402
from device.assets import third_party_entry  # noqa: E402
from device.config import Config, config_from_dict  # noqa: E402
from device.inference.blazeface import VARIANTS, BlazeFaceDetector  # noqa: E402
from device.inference.face import FaceAnalyzer  # noqa: E402
from device.inference.runtime import MODELS_DIR, ModelSpec, load_model  # noqa: E402
from device.observation import Frame  # noqa: E402
from tests import far_faces  # noqa: E402

Box = tuple[float, float, float, float]
ROI = (0.15, 0.1, 0.85, 0.9)  # a chair-sized region around where the scenes put faces


def detector(name: str, variant: str, min_score: float) -> BlazeFaceDetector:
    model = load_model(ModelSpec.from_manifest(third_party_entry(name, MODELS_DIR)), MODELS_DIR, 1)
    return BlazeFaceDetector(model, min_score, 0.3, VARIANTS[variant])


def on_region(det: BlazeFaceDetector, roi: tuple[float, float, float, float] | None, lores: float = 1.0
              ) -> Callable[[np.ndarray], list[Box]]:
    """Detection on the frame (or its region), optionally on a copy shrunk by `lores` (a lores stream)."""

    def run(image: np.ndarray) -> list[Box]:
        h, w = image.shape[:2]
        x0, y0, x1, y1 = (0, 0, w, h) if roi is None else (int(roi[0] * w), int(roi[1] * h),
                                                          int(roi[2] * w), int(roi[3] * h))
        part = image[y0:y1, x0:x1]
        if lores != 1.0:
            part = cv2.resize(part, (round(part.shape[1] * lores), round(part.shape[0] * lores)),
                              interpolation=cv2.INTER_AREA)
        return [(d.x0 / lores + x0, d.y0 / lores + y0, d.x1 / lores + x0, d.y1 / lores + y0)
                for d in det.detect(part)]

    return run


def analyzer_pathway(config: Config) -> Callable[[np.ndarray], list[Box]]:
    analyzer = FaceAnalyzer.from_config(config)

    def run(image: np.ndarray) -> list[Box]:
        # a face that has just appeared and holds still for the rounds a full search takes
        analyzer.tracker.reset()
        analyzer._known = None
        analyzer._tile_cursor = 0
        for _ in range(analyzer.search_rounds(image)):
            analyzer._since_detect = 0
            obs = analyzer.process(Frame(0.0, image))
            if obs.probs is not None:
                return [tuple(obs.features["box"])]
        return []

    return run


@dataclasses.dataclass
class Tally:
    found: dict[int, int] = dataclasses.field(default_factory=dict)
    total: dict[int, int] = dataclasses.field(default_factory=dict)
    by_light: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    false_frames: int = 0
    free_frames: int = 0
    cpu_s: float = 0.0
    calls: int = 0

    def recall(self, width: int) -> float:
        return self.found.get(width, 0) / max(1, self.total.get(width, 0))


def group_of(source: str) -> str:
    # the astronaut is a real photo scaled down, as a camera sees a face; LFW's faces are 21 px in
    # their 25 px crops, so at every width here they are scaled up: blurred, no hair or outline
    return "astronaut" if source == "astronaut" else "lfw"


def score(tallies: dict[str, Tally], width: int, boxes: list[Box], truth: Box | None, lighting: str,
          source: str) -> None:
    """Count one scene into the pathway's overall tally and its source group's."""
    for key in ("all", group_of(source)) if truth is not None else ("all", "astronaut", "lfw"):
        _score(tallies.setdefault(key, Tally()), width, boxes, truth, lighting)


def _score(tally: Tally, width: int, boxes: list[Box], truth: Box | None, lighting: str) -> None:
    if truth is None:
        tally.free_frames += 1
        tally.false_frames += bool(boxes)
        return
    hit = any(far_faces.is_hit(b, truth) for b in boxes)
    tally.found[width] = tally.found.get(width, 0) + hit
    tally.total[width] = tally.total.get(width, 0) + 1
    counts = tally.by_light.setdefault(f"{width}:{lighting}", [0, 0])
    counts[0] += hit
    counts[1] += 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    cv2.setNumThreads(1)
    sources = far_faces.face_sources()[: 1 + args.lfw]
    widths = [int(w) for w in args.widths.split(",")]
    config = Config()
    short = detector("blazeface_short_range", "short", config.face.min_score)
    full = detector("blazeface_full_range", "full", config.face.min_score)
    sparse = detector("blazeface_full_range_sparse", "full", config.face.min_score)
    old = config_from_dict({"face": {"detector": "short_range", "search_tile_px": 0}}, "old default")
    pathways: dict[str, Callable[[np.ndarray], list[Box]]] = {"ours (default config)": analyzer_pathway(config)}
    pathways["old default (short range, whole frame)"] = analyzer_pathway(old)
    pathways.update({
        "short range, whole frame": on_region(short, None),
        "full range, whole frame": on_region(full, None),
        "full range sparse, whole frame": on_region(sparse, None),
        "short range, ROI": on_region(short, ROI),
        "full range, ROI": on_region(full, ROI),
    })
    hires = {"1280x720, full range on 640x360 lores": on_region(full, None, lores=0.5),
             "1280x720, full range on the 1280x720 frame": on_region(full, None)}
    if args.only:  # a quicker run of some rows (e.g. the placement table: --only ours)
        pathways = {k: v for k, v in pathways.items() if k.startswith(args.only)}
        hires = {k: v for k, v in hires.items() if k.startswith(args.only)}
    haar_name = "fer pathway (Haar, fer defaults)"
    tallies: dict[str, dict[str, Tally]] = {name: {} for name in [*pathways, *hires, haar_name]
                                            if not args.only or name.startswith(args.only)}

    def feed(name: str, fn: Callable[[np.ndarray], list[Box]], scene: far_faces.Scene, width: int) -> None:
        start = time.process_time()
        boxes = fn(scene.image)
        overall = tallies[name].setdefault("all", Tally())
        overall.cpu_s += time.process_time() - start
        overall.calls += 1
        score(tallies[name], width, boxes, scene.face_box, scene.lighting, scene.source)

    haar_frames: list[np.ndarray] = []
    haar_meta: list[tuple[Box | None, int, str, str]] = []
    for width in widths:
        for scene in far_faces.face_scenes(width, sources):
            for name, fn in pathways.items():
                feed(name, fn, scene, width)
            if haar_name in tallies:
                haar_frames.append(cv2.cvtColor(scene.image, cv2.COLOR_BGR2GRAY))
                haar_meta.append((scene.face_box, width, scene.lighting, scene.source))
        # the same scenes seen by a 1280x720 camera with the same field of view across: the face
        # is twice as wide in pixels; reported at its 640-px-across width
        for scene in (far_faces.face_scenes(width * 2, sources, size=(1280, 720)) if hires else ()):
            for name, fn in hires.items():
                feed(name, fn, scene, width)
    for scene in far_faces.face_free_scenes(count=args.free):
        for name, fn in pathways.items():
            feed(name, fn, scene, 0)
        if haar_name in tallies:
            haar_frames.append(cv2.cvtColor(scene.image, cv2.COLOR_BGR2GRAY))
            haar_meta.append((None, 0, scene.lighting, scene.source))
    for scene in (far_faces.face_free_scenes(size=(1280, 720), count=args.free) if hires else ()):
        for name, fn in hires.items():
            feed(name, fn, scene, 0)
    haar = tallies.get(haar_name)
    try:
        if haar is None:
            raise RuntimeError("not selected (--only)")
        boxes, cpu_ms = haar_boxes(np.stack(haar_frames), Path(args.cache))
        for found, (truth, width, lighting, source) in zip(boxes, haar_meta, strict=True):
            score(haar, width, found, truth, lighting, source)
        haar["all"].cpu_s, haar["all"].calls = cpu_ms * len(haar_frames) / 1000, len(haar_frames)
    except RuntimeError as exc:
        print(f"bench_far_face: Haar anchor skipped: {exc}", file=sys.stderr)
        tallies.pop(haar_name, None)
    return {
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "scenes_per_width": len(sources) * len(far_faces.POSITIONS) * len(far_faces.LIGHTING),
        "face_free_frames": args.free,
        "sources": f"astronaut + {args.lfw} LFW faces (scikit-image)",
        "haar_params": FER_DEFAULTS,
        "widths": widths,
        "pathways": {
            name: {
                "cpu_ms_per_frame": round(groups["all"].cpu_s * 1000 / max(1, groups["all"].calls), 2),
                "false_positive_rate": round(groups["all"].false_frames / max(1, groups["all"].free_frames), 4),
                **{group: {
                    "recall": {str(w): round(t.recall(w), 4) for w in widths},
                    "recall_by_lighting": {k: round(v[0] / v[1], 3) for k, v in t.by_light.items()},
                } for group, t in groups.items()},
            }
            for name, groups in tallies.items()
        },
    }


def markdown(result: dict[str, Any]) -> str:
    widths = result["widths"]
    head = "| pathway | " + " | ".join(f"{w} px" for w in widths) + " | face-free frames with a face | CPU ms/frame |"
    lines = [f"Recall by face width at 640x480 ({result['scenes_per_width']} scenes per width: "
             f"{result['sources']}, 5 positions, 3 lighting levels; {result['face_free_frames']} face-free frames)"]
    titles = {"astronaut": "the astronaut (a photo scaled down, as a camera sees a face; 15 scenes per width)",
              "lfw": "LFW faces (21 px faces scaled up: blurred, no hair or outline; 15 scenes per face and width)",
              "all": "all scenes"}
    for group in ("astronaut", "lfw", "all"):
        lines += ["", f"### {titles[group]}", "", head, "|" + " --- |" * (len(widths) + 3)]
        for name, row in result["pathways"].items():
            if group not in row:
                continue
            cells = " | ".join(f"{100 * row[group]['recall'][str(w)]:.1f} %" for w in widths)
            lines.append(f"| {name} | {cells} | {100 * row['false_positive_rate']:.1f} % | "
                         f"{row['cpu_ms_per_frame']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=int, default=100, help="LFW faces to use besides the astronaut (0-100)")
    parser.add_argument("--widths", default="24,32,40,48,56,64,80,120")
    parser.add_argument("--free", type=int, default=300, help="face-free frames")
    cache = Path(os.environ.get("AFFECTBOX_CACHE", Path.home() / ".cache" / "affectbox")) / "bench"
    parser.add_argument("--cache", default=str(cache), help="where the Haar anchor's files are kept")
    parser.add_argument("--only", default="", help="only the pathways whose name starts with this")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if not 0 <= args.lfw <= 100:
        parser.error("--lfw must be 0-100")
    result = run(args)
    print(markdown(result))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
