"""Benchmark of the status page's cost: the daemon's CPU with the page open and refreshing vs. closed.

Runs the real daemon on a generated session video with speech (`affectbox run --replay FILE --loop
--patient bench`, so a session runs throughout, at real-time pace, with the status page on a free
127.0.0.1 port), then measures the daemon process's user+system CPU time (/proc/PID/stat) over
phases of `--seconds` each, in rounds, one after the other in the same run:

- closed: no browser page open (the anchor);
- session page: headless Chromium (Debian's, driven by Playwright) showing the Session page, which
  polls /api/live every 2 s and redraws the live chart;
- status page: the Status page, which polls /api/status every 3 s.

Reported per phase: CPU seconds per minute (mean over rounds), the ratio to `closed`, the API
requests the page made, and the extra CPU milliseconds per request. Then each endpoint the pages
poll (/api/live?compact=1, /api/status; and the full /api/live) is requested `--burst` times back
to back, which gives the daemon's CPU per request with far less noise than the phases; times the
polling rate, that is what an open page costs. Nothing leaves the machine.

Usage:
    .venv/bin/python bench/bench_web.py [--seconds 30] [--rounds 2] [--json-out bench/results/bench_web.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.procstat import cpu_model, process_cpu_s  # noqa: E402
from device.credentials import hash_password, write_secret  # noqa: E402
from tests.media import write_av_session  # noqa: E402

PASSWORD = "bench-password"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
PHASES = ("closed", "session page", "status page")




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_health(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the daemon exited with {proc.returncode} before its status page answered")
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"error: {url}/api/health did not answer within {timeout_s:.0f} s")


def api_login(base: str) -> str:
    """The login cookie ("name=value") for direct API requests."""
    request = urllib.request.Request(base + "/api/login", data=json.dumps({"password": PASSWORD}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Set-Cookie"].split(";", 1)[0]


def burst(base: str, cookie: str, path: str, count: int, pid: int, idle_cpu_per_s: float) -> dict[str, float]:
    """`count` sequential requests to `path`: the daemon's CPU per request beyond its idle rate."""
    before = process_cpu_s(pid)
    start = time.monotonic()
    size = 0
    for _ in range(count):
        request = urllib.request.Request(base + path, headers={"Cookie": cookie})
        with urllib.request.urlopen(request, timeout=10) as response:
            size += len(response.read())
    wall = time.monotonic() - start
    cpu = process_cpu_s(pid) - before
    extra = cpu - idle_cpu_per_s * wall
    return {"requests": count, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "cpu_ms_per_request": round(extra * 1000 / count, 3), "mean_response_bytes": round(size / count)}


def write_config(folder: Path, port: int) -> Path:
    path = folder / "config.toml"
    path.write_text(f"""
[device]
id = "bench"
state_dir = "{folder / 'state'}"
[store]
path = "{folder / 'state' / 'affectbox.db'}"
[control]
socket = "{folder / 'control.sock'}"
[session]
debug_recording_dir = "{folder / 'state' / 'debug'}"
[hub]
enabled = false
[web]
bind = "127.0.0.1"
port = {port}
""", encoding="utf-8")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each measured phase")
    parser.add_argument("--rounds", type=int, default=2, help="times each phase is measured (alternating)")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds after the session starts before measuring")
    parser.add_argument("--burst", type=int, default=300, help="back-to-back requests per polled endpoint")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        folder = Path(tmp)
        video = folder / "session.mkv"
        print("generating the replay video ...", file=sys.stderr)
        write_av_session(video, duration=60.0, speech_at=tuple(1.0 + 8.0 * k for k in range(7)),
                         face_spans=((0.0, 60.0),), fps=15)
        port = free_port()
        config = write_config(folder, port)
        credentials = folder / "credentials"
        write_secret(credentials / "web-password", hash_password(PASSWORD))
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env["CREDENTIALS_DIRECTORY"] = str(credentials)
        command = [sys.executable, "-m", "device", "run", "--config", str(config), "--replay", str(video), "--loop",
                   "--patient", "bench"]
        log = (folder / "daemon.log").open("w")
        daemon = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        samples: dict[str, list[dict[str, float]]] = {phase: [] for phase in PHASES}
        try:
            wait_health(base, daemon, 120)
            print(f"daemon up; warming up {args.warmup:.0f} s ...", file=sys.stderr)
            time.sleep(args.warmup)
            with sync_playwright() as pw:
                context = pw.chromium.launch_persistent_context(
                    str(folder / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                    viewport={"width": 1280, "height": 860})
                page = context.pages[0] if context.pages else context.new_page()
                page.goto(base + "/login")
                page.fill("#password", PASSWORD)
                page.click("#login-button")
                page.wait_for_url(base + "/")
                page.close()
                for round_no in range(args.rounds):
                    for phase in PHASES:
                        requests = [0]
                        page = None
                        if phase != "closed":
                            page = context.new_page()
                            page.on("request", lambda r, n=requests: n.__setitem__(0, n[0] + 1)
                                    if "/api/" in r.url else None)
                            page.goto(base + ("/session" if phase == "session page" else "/"))
                            page.wait_for_selector("#live-panel:not([hidden])" if phase == "session page"
                                                   else "#components tbody tr")
                            time.sleep(1.0)  # the first requests are done; measure the steady state
                            requests[0] = 0
                        before = process_cpu_s(daemon.pid)
                        wall = time.monotonic()
                        time.sleep(args.seconds)
                        cpu = process_cpu_s(daemon.pid) - before
                        wall = time.monotonic() - wall
                        if page is not None:
                            page.close()
                        samples[phase].append({"cpu_s": cpu, "wall_s": wall, "requests": requests[0]})
                        print(f"round {round_no + 1} {phase}: {cpu / wall * 60:.2f} CPU s/min, "
                              f"{requests[0]} API requests", file=sys.stderr)
                context.close()
            # each endpoint the pages poll, hit back to back: CPU per request, less noisy than the phases
            idle = sum(r["cpu_s"] for r in samples["closed"]) / sum(r["wall_s"] for r in samples["closed"])
            cookie = api_login(base)
            bursts = {path: burst(base, cookie, path, args.burst, daemon.pid, idle)
                      for path in ("/api/live?compact=1", "/api/live", "/api/status")}
            for path, row in bursts.items():
                print(f"burst {path}: {row['cpu_ms_per_request']:.2f} CPU ms/request", file=sys.stderr)
        finally:
            daemon.terminate()
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(5)
            log.close()
        if daemon.returncode != 0:
            print((folder / "daemon.log").read_text()[-2000:], file=sys.stderr)
            print(f"error: the daemon exited with {daemon.returncode}", file=sys.stderr)
            return 1

    def per_min(rows: list[dict[str, float]]) -> float:
        return statistics.fmean(r["cpu_s"] / r["wall_s"] * 60 for r in rows)

    closed = per_min(samples["closed"])
    results: dict[str, Any] = {}
    for phase in PHASES:
        rows = samples[phase]
        cpu_min = per_min(rows)
        requests = sum(r["requests"] for r in rows)
        wall = sum(r["wall_s"] for r in rows)
        extra_cpu_s = sum(r["cpu_s"] for r in rows) - closed / 60 * wall
        results[phase] = {
            "cpu_s_per_min": round(cpu_min, 3),
            "cpu_share_of_one_core": round(cpu_min / 60, 4),
            "ratio_to_closed": round(cpu_min / closed, 3) if closed > 0 else None,
            "api_requests": requests,
            "requests_per_s": round(requests / wall, 3),
            "extra_cpu_ms_per_request": round(extra_cpu_s * 1000 / requests, 2) if requests else None,
            "rounds": rows,
        }
    report = {
        "benchmark": "bench_web",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "note": "shared 2-core development machine: compare phases of this run, not runs"},
        "daemon": "affectbox run --replay (640x480, 15 fps video with speech, looped) --patient bench; "
                  "window 10 s; hub off",
        "seconds_per_phase": args.seconds,
        "rounds": args.rounds,
        "phases": results,
        "per_request": bursts,
        # what the pages' polling costs by the per-request figures: the Session page asks for
        # /api/live?compact=1 every 2 s, the Status page for /api/status every 3 s
        "polling_cpu_s_per_min": {
            "session page": round(bursts["/api/live?compact=1"]["cpu_ms_per_request"] * 30 / 1000, 4),
            "status page": round(bursts["/api/status"]["cpu_ms_per_request"] * 20 / 1000, 4),
        },
    }
    print("| page | daemon CPU s/min | x closed | API requests/s | extra CPU ms/request |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for phase, row in results.items():
        extra = row["extra_cpu_ms_per_request"]
        print(f"| {phase} | {row['cpu_s_per_min']:.2f} | {row['ratio_to_closed']:.3f} | {row['requests_per_s']:.2f} "
              f"| {'-' if extra is None else f'{extra:.1f}'} |")
    for path, row in bursts.items():
        print(f"{path}: {row['cpu_ms_per_request']:.2f} CPU ms per request ({row['mean_response_bytes']} bytes)")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
