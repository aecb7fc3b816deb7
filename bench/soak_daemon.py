"""Soak test of the live daemon: many sessions back to back on replayed media, faster than real time.

Runs `affectbox run --replay FILE --loop --speed S` and drives sessions through the control
socket, back to back, until `--media-hours` of session media have been replayed. Every few
seconds it samples the daemon's resident memory (VmRSS), open file descriptors, threads, and the
sizes of the store and its WAL. After the first session (warm-up: allocator pools, model arenas,
caches) it fits a line to RSS against media time and reports the growth per hour of session.

Pass criteria (issue 8): RSS growth under 10 MB per hour of session after warm-up, no growth of
open files or threads, the store bounded by what it holds. Exit status 1 when one fails.

With --speed S the replay runs S times faster: one real second carries S seconds of media, and the
daemon's item times shrink alike (its windows then hold S times more media). Memory, files and
threads see S times the traffic per second, which is the point of a soak.

    .venv/bin/python bench/soak_daemon.py --media-hours 2 --speed 8 --json-out bench/results/soak_daemon.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.daemon_harness import DaemonProcess, write_config  # noqa: E402
from tests.media import write_av_session  # noqa: E402


def proc_sample(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split(":", 1)[1].strip() for line in status}
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of value against media seconds, per media hour."""
    if len(points) < 3:
        return float("nan")
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return cov / var * 3600.0 if var else float("nan")


def soak(folder: Path, media_hours: float, speed: float, session_media_minutes: float,
         sample_every_s: float = 2.0) -> dict[str, Any]:
    video = folder / "session.mkv"
    write_av_session(video, 60.0, [1.0 + 5.0 * k for k in range(12)], [(0.0, 40.0), (45.0, 60.0)], fps=15,
                     size=(640, 480))
    config = write_config(folder, window_seconds=10.0)
    db = folder / "state" / "affectbox.db"
    daemon = DaemonProcess(folder, video, config=config, loop=True, watchdog_usec=None,
                           speed=speed)
    samples: list[dict[str, Any]] = []
    sessions: list[dict[str, Any]] = []
    session_real_s = session_media_minutes * 60.0 / speed
    total_real_s = media_hours * 3600.0 / speed
    try:
        daemon.wait_ready(120)
        pid = daemon.proc.pid
        began = time.monotonic()
        index = 0
        while time.monotonic() - began < total_real_s:
            started = daemon.session("start", "--patient", f"soak-{index % 5}")
            session_began = time.monotonic()
            while time.monotonic() - session_began < session_real_s:
                time.sleep(sample_every_s)
                sample = proc_sample(pid)
                sample["media_s"] = round((time.monotonic() - began) * speed, 1)
                sample["session"] = index
                sample["db_mb"] = round(sum(p.stat().st_size for p in db.parent.glob("affectbox.db*")) / 2**20, 3)
                samples.append(sample)
            ended = daemon.session("stop")
            sessions.append({"session_id": started["session_id"], "windows": ended["windows"]})
            index += 1
        final = daemon.status()
    finally:
        code = daemon.terminate(30)
    if code != 0:
        raise SystemExit(f"the daemon exited with {code}: {daemon.log()[-3000:]}")
    warm = [s for s in samples if s["session"] >= 1] or samples
    rss_growth = slope_per_hour([(s["media_s"], s["rss_mb"]) for s in warm])
    return {
        "media_hours": round(samples[-1]["media_s"] / 3600, 3) if samples else 0.0,
        "speed": speed,
        "sessions": len(sessions),
        "windows_stored": sum(s["windows"] for s in sessions),
        "rss_mb_first_after_warmup": warm[0]["rss_mb"] if warm else None,
        "rss_mb_last": samples[-1]["rss_mb"] if samples else None,
        "rss_mb_max": max(s["rss_mb"] for s in samples) if samples else None,
        "rss_growth_mb_per_media_hour": round(rss_growth, 2),
        "threads_min_max_after_warmup": [min(s["threads"] for s in warm), max(s["threads"] for s in warm)],
        "fds_min_max_after_warmup": [min(s["fds"] for s in warm), max(s["fds"] for s in warm)],
        "db_mb_last": samples[-1]["db_mb"] if samples else None,
        "dropped_frames": final["components"]["camera"]["dropped"],
        "audio_blocks_dropped": final["components"]["microphone"]["dropped"],
        "samples": samples,
    }


def verdict(result: dict[str, Any], max_growth_mb_per_hour: float = 10.0) -> list[str]:
    """The pass criteria that failed (empty = pass)."""
    problems = []
    if not result["rss_growth_mb_per_media_hour"] < max_growth_mb_per_hour:
        problems.append(f"RSS grows {result['rss_growth_mb_per_media_hour']} MB per hour of session "
                        f"(limit {max_growth_mb_per_hour})")
    low, high = result["threads_min_max_after_warmup"]
    if high - low > 2:
        problems.append(f"thread count varies from {low} to {high}")
    low, high = result["fds_min_max_after_warmup"]
    if high - low > 3:
        problems.append(f"open files vary from {low} to {high}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media-hours", type=float, default=2.0)
    parser.add_argument("--speed", type=float, default=8.0)
    parser.add_argument("--session-minutes", type=float, default=15.0, help="media minutes per session")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        result = soak(Path(tmp), args.media_hours, args.speed, args.session_minutes)
    problems = verdict(result)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.json_out:
        report = {"benchmark": "soak_daemon", "command": " ".join([Path(sys.executable).name, *sys.argv]),
                  **result, "problems": problems}
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
