"""Offline analysis of a recorded video: the daemon's own pipeline objects, run as fast as the CPU allows.

`analyze_video` reads frames at media time (`VideoFileSource`), passes each through the same
`FaceAnalyzer` and `WindowAggregator` the live daemon uses, and writes into the output folder:
- `timeline.jsonl`: one observation per analysed frame (time, face box, probabilities, quality);
- `windows.jsonl` and `windows.csv`: per-window aggregates;
- `summary.json`: the session summary with source, model and configuration metadata;
- `report.html`: a self-contained report that opens without network access.
Every file is written atomically; a failed run leaves earlier outputs untouched.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from device import __version__
from device.aggregate import Window, WindowAggregator, summarize
from device.atomic import atomic_writer, write_text_atomic
from device.capture.video_file import VideoFileSource
from device.config import Config
from device.errors import MediaError
from device.inference.face import FaceAnalyzer
from device.inference.runtime import sha256_file
from device.labels import LABELS
from device.report import render_report

NO_FACE_WARNING = "no face was found in any analysed frame: the report holds no mood estimate"


@dataclass
class AnalysisResult:
    out_dir: Path
    summary: dict[str, Any]
    windows: list[Window]
    frames: int
    warnings: list[str] = field(default_factory=list)


def default_out_dir(video: Path) -> Path:
    return Path.cwd() / f"{video.stem}.affectbox"


def windows_csv(windows: list[Window]) -> str:
    """Windows as CSV for a spreadsheet: one row per window, one column per label probability."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "start_s", "end_s", "has_mood", "dominant", "valence", "arousal",
                     "face_share", "face_expressivity", *[f"p_{lab}" for lab in LABELS]])
    for window in windows:
        row = window.to_json()
        face = row["modalities"].get("face", {})
        probs = row["probs"] or {}
        writer.writerow([
            row["index"], row["start"], row["end"], int(row["has_mood"]), row["dominant"] or "",
            "" if row["valence"] is None else row["valence"], "" if row["arousal"] is None else row["arousal"],
            face.get("share", ""), "" if face.get("expressivity") is None else face["expressivity"],
            *[probs.get(lab, "") for lab in LABELS],
        ])
    return buffer.getvalue()


def model_metadata(analyzer: FaceAnalyzer) -> list[dict[str, Any]]:
    models = []
    for loaded in (analyzer.detector.model, analyzer.classifier.model):
        models.append({
            "name": loaded.spec.name,
            "version": loaded.spec.extra.get("version"),
            "sha256": sha256_file(loaded.path),
            "runtime": loaded.runtime,
        })
    return models


def analyze_video(
    video: str | Path,
    config: Config,
    out_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    analyzer: FaceAnalyzer | None = None,
) -> AnalysisResult:
    """Analyse one video file; `progress(done, expected)` is called after each analysed frame."""
    video = Path(video)
    source = VideoFileSource(video, config.face.analysis_fps)
    out = Path(out_dir) if out_dir is not None else default_out_dir(video)
    if out.exists() and not out.is_dir():
        raise MediaError(f"{out}: output path exists and is not a folder")
    analyzer = analyzer or FaceAnalyzer.from_config(config)
    aggregator = WindowAggregator(config.aggregation)
    windows: list[Window] = []
    counts = {"face": {"items": 0, "present": 0}}
    expected = source.expected_samples()
    cpu_start = time.process_time()
    frames = 0
    last_t = 0.0
    out.mkdir(parents=True, exist_ok=True)
    with atomic_writer(out / "timeline.jsonl") as timeline:
        for frame in source:
            observation = analyzer.process(frame)
            frames += 1
            last_t = frame.t
            counts["face"]["items"] += 1
            counts["face"]["present"] += int(observation.present)
            timeline.write(json.dumps(observation.to_json(), separators=(",", ":")) + "\n")
            windows.extend(aggregator.add(observation))
            if progress is not None:
                progress(frames, expected)
    cpu_seconds = time.process_time() - cpu_start
    frame_step = 1.0 / (source.fps or config.face.analysis_fps)
    duration = max(source.duration, last_t + frame_step)
    windows.extend(aggregator.flush(end=duration))

    warnings = [] if counts["face"]["present"] else [NO_FACE_WARNING]
    if source.decode_error:
        warnings.append(f"the file is damaged: {source.decode_error}; analysed what came before")
    summary = summarize(windows, duration, counts)
    summary.update({
        "software_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {
            "file": video.name,
            "duration_s": round(duration, 3),
            "fps": round(source.fps, 3),
            "width": source.width,
            "height": source.height,
            "frames_read": source.frames_read,
        },
        "analysis": {
            "frames_analysed": frames,
            "detector_runs": analyzer.detector_runs,
            "cpu_seconds": round(cpu_seconds, 3),
            "cpu_ms_per_frame": round(1000 * cpu_seconds / max(frames, 1), 3),
        },
        "models": model_metadata(analyzer),
        "config": {"face": asdict(config.face), "aggregation": asdict(config.aggregation)},
        "warnings": warnings,
    })
    window_rows = [w.to_json() for w in windows]
    with atomic_writer(out / "windows.jsonl") as handle:
        for row in window_rows:
            handle.write(json.dumps(row, separators=(",", ":")) + "\n")
    write_text_atomic(out / "windows.csv", windows_csv(windows))
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    timeline_rows = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    write_text_atomic(out / "report.html", render_report(summary, window_rows, timeline_rows,
                                                         title=f"affectbox report: {video.name}"))
    return AnalysisResult(out, summary, windows, frames, warnings)
