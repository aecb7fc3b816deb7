"""The daemon's cost with speaker attribution: CPU per session minute and peak RSS, before and after.

    .venv/bin/python bench/bench_speaker_daemon.py [--seconds 40] [--json-out bench/results/bench_speaker_daemon.json]

Runs bench/bench_daemon.py's measurement (the real daemon replaying a 640x480, 15 fps session
with espeak-ng speech about 60 % of the time, at real-time pace) twice on the same input: with no
voice enrolled (attribution off: as before this feature), and with one voice enrolled that is not
the one in the recording (a female espeak-ng voice), so that every utterance is embedded and
compared and then still analysed: the worst case, attribution on top of everything else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_daemon import measure_daemon  # noqa: E402
from bench.procstat import cpu_model  # noqa: E402
from tests.daemon_harness import write_config  # noqa: E402
from tests.media import write_av_session  # noqa: E402
from tests.voice_media import ENROLL_LINES, PATIENT, say, write_wav  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-speaker-daemon-") as tmp:
        root = Path(tmp)
        video = root / "session.mkv"
        write_av_session(video, 60.0, [1.0 + 4.0 * k for k in range(15)], [(0.0, 60.0)], fps=15, size=(640, 480))
        (root / "before").mkdir()
        before = measure_daemon(root / "before", video, args.seconds, args.warmup)
        after_dir = root / "after"
        after_dir.mkdir()
        enroll = write_wav(after_dir / "enroll.wav", [say(t, PATIENT, after_dir) for t in ENROLL_LINES], 0.5)
        subprocess.run([sys.executable, "-m", "device", "voice", "enroll", "--name", "other", str(enroll), "--yes",
                        "--config", str(write_config(after_dir, window_seconds=10.0))], cwd=ROOT, check=True,
                       capture_output=True)
        after = measure_daemon(after_dir, video, args.seconds, args.warmup)
    report = {
        "benchmark": "bench_speaker_daemon", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "no_voice_enrolled": before, "one_voice_enrolled": after,
        "cpu_s_per_minute_added": round(after["cpu_s_per_session_minute"] - before["cpu_s_per_session_minute"], 2),
        "speech_stage_cpu_s_per_minute_added": round(after["split_cpu_s_per_minute"]["speech"]
                                                     - before["split_cpu_s_per_minute"]["speech"], 2),
        "peak_rss_mb_added": round(after["peak_rss_mb"] - before["peak_rss_mb"], 1),
    }
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}, indent=2))
    for name in ("no_voice_enrolled", "one_voice_enrolled"):
        r = report[name]
        print(f"{name}: {r['cpu_s_per_session_minute']} CPU s/min (speech {r['split_cpu_s_per_minute']['speech']}), "
              f"peak RSS {r['peak_rss_mb']} MB")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
