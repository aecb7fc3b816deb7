"""Benchmark of the live daemon: CPU seconds per minute of session and peak RSS, per-stage split.

Generates a 640x480, 15 fps video with an audio track (the astronaut's head, espeak-ng speech
every few seconds, quiet noise in between), then runs the real daemon on it at real-time pace
(`affectbox run --replay FILE --loop --patient bench`), as it would run on camera and microphone.
After a warm-up it measures, from /proc, the daemon's user+system CPU time over `--seconds` of
session, its peak resident set (VmHWM), and the per-thread CPU of the face and speech stages (the
daemon's own counters); the rest is capture (decoding the replay file stands in for the camera
driver), the recorder, the store and Python's overhead.

The anchor, on the same input in the same run: `affectbox analyze` of the same file (the offline
pipeline, as fast as it can go), as CPU seconds per minute of media. The ratio says what running
live costs over the bare analysis.

Budget on a Raspberry Pi 4: under one core on average (60 CPU s per minute) and under 200 MB RSS.

Usage:
    .venv/bin/python bench/bench_daemon.py [--seconds 60] [--json-out bench/results/bench_daemon.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.procstat import cpu_model, process_cpu_s, rss_mb  # noqa: E402
from tests.daemon_harness import DaemonProcess, write_config  # noqa: E402
from tests.media import write_av_session  # noqa: E402
from tests.support import wait_until  # noqa: E402


def measure_daemon(folder: Path, video: Path, seconds: float, warmup: float) -> dict[str, Any]:
    config = write_config(folder, window_seconds=10.0)
    daemon = DaemonProcess(folder, video, config=config, loop=True, watchdog_usec=None,
                           extra_args=("--patient", "bench"))
    try:
        daemon.wait_ready(120)
        pid = daemon.proc.pid
        assert wait_until(lambda: (daemon.status().get("session") or {}).get("session_id"), 30), daemon.log()
        time.sleep(warmup)
        first = daemon.status()
        cpu0, wall0 = process_cpu_s(pid), time.monotonic()
        time.sleep(seconds)
        cpu1, wall1 = process_cpu_s(pid), time.monotonic()
        last = daemon.status()
        rss_peak, rss_now = rss_mb(pid, peak=True), rss_mb(pid)
    finally:
        code = daemon.terminate()
    if code != 0:
        raise SystemExit(f"the daemon exited with {code}: {daemon.log()[-2000:]}")
    wall = wall1 - wall0
    per_minute = 60.0 / wall

    def stage(name: str, key: str = "cpu_s") -> float:
        return (last["components"][name][key] - first["components"][name][key])

    total = (cpu1 - cpu0) * per_minute
    face = stage("face") * per_minute
    speech = stage("speech") * per_minute
    frames = stage("camera", "frames")
    return {
        "session_seconds_measured": round(wall, 1),
        "cpu_s_per_session_minute": round(total, 2),
        "cores_on_average": round(total / 60.0, 3),
        "split_cpu_s_per_minute": {"face": round(face, 2), "speech": round(speech, 2),
                                   "capture_recorder_other": round(total - face - speech, 2)},
        "peak_rss_mb": round(rss_peak, 1),
        "rss_at_end_mb": round(rss_now, 1),
        "camera_fps": round(frames / wall, 2),
        "frames_analysed_per_s": round(stage("face", "analysed") / wall, 2),
        "dropped_frames": last["components"]["camera"]["dropped"],
        "audio_blocks_dropped": last["components"]["microphone"]["dropped"],
    }


def measure_offline(folder: Path, video: Path, media_seconds: float) -> dict[str, Any]:
    started = time.monotonic()
    before = os.times()
    result = subprocess.run([sys.executable, "-m", "device", "analyze", str(video), "--out", str(folder / "offline"),
                             "--quiet", "--json"], cwd=ROOT, capture_output=True, text=True, check=False)
    after = os.times()
    if result.returncode != 0:
        raise SystemExit(f"affectbox analyze failed: {result.stderr}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"cpu_s_per_media_minute": round(cpu * 60.0 / media_seconds, 2),
            "wall_s": round(time.monotonic() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="session seconds measured (default 60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of session before measuring")
    parser.add_argument("--json-out", help="also write the figures as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        folder = Path(tmp)
        media_seconds = 60.0
        speech_at = [1.0 + 4.0 * k for k in range(15)]  # a sentence about every 4 s: speech most of the time
        video = folder / "session.mkv"
        write_av_session(video, media_seconds, speech_at, [(0.0, media_seconds)], fps=15, size=(640, 480))
        live = measure_daemon(folder, video, args.seconds, args.warmup)
        offline = measure_offline(folder, video, media_seconds)
    report = {
        "benchmark": "bench_daemon",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "input": "640x480 at 15 fps with audio (16 kHz), speech about 60 % of the time, face always present",
        "daemon": live,
        "anchor_offline_analyze": offline,
        "ratio_live_to_offline_cpu": round(live["cpu_s_per_session_minute"] / offline["cpu_s_per_media_minute"], 2),
        "pi4_budget": {"cpu_s_per_minute": 60.0, "peak_rss_mb": 200.0},
    }
    split = live["split_cpu_s_per_minute"]
    print(f"| measure | value |\n|---|---|\n"
          f"| CPU per session minute | {live['cpu_s_per_session_minute']} s ({live['cores_on_average']} cores) |\n"
          f"| face / speech / rest | {split['face']} / {split['speech']} / {split['capture_recorder_other']} s|\n"
          f"| peak RSS | {live['peak_rss_mb']} MB |\n"
          f"| offline analyze (anchor) | {offline['cpu_s_per_media_minute']} CPU s per media minute |\n"
          f"| live / offline CPU | {report['ratio_live_to_offline_cpu']} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
