"""The hub's collector measured on this machine: ingest rate, a simulated clinic day, backlog drain.

Real parts: Mosquitto (persistence on, queue limits from hub/deploy/mosquitto-affectbox.conf), the
hub as a process (`python -m hub run`), SQLite or a real PostgreSQL (tests.hub_support.Postgres),
simulated devices that publish contract-built events exactly as a device outbox would.

    .venv/bin/python bench/bench_hub_ingest.py rate --events 6000
    .venv/bin/python bench/bench_hub_ingest.py clinic --devices 50 --minutes 3
    .venv/bin/python bench/bench_hub_ingest.py backlog --devices 50 --hours 1

- `rate`: N events are queued at the broker for the hub's persistent session(s) while the
  collector is away, then the collector(s) start and the time until all N are stored gives
  events/s; for SQLite with one collector, PostgreSQL with one and two on `$share`.
- `clinic`: D devices in session at ten times real pace (a 10-s window every second per device)
  for M minutes of wall time; hub CPU (cores), peak RSS, database bytes per window, and, from
  those, per device-day (6 h of sessions = 2160 windows).
- `backlog`: D devices x H hours of windows (360 per device-hour) queued while the hub is down,
  then the time to drain them; the broker's queue must hold them (max_queued_messages).
Markdown to stdout, `--json-out FILE` for the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.procstat import cpu_model, process_cpu_s, rss_mb  # noqa: E402
from tests.hub_support import HubProcess, Postgres, SimDevice, count, hub_config  # noqa: E402
from tests.mqtt_support import Broker  # noqa: E402
from tests.support import wait_until  # noqa: E402

QUEUE_LIMIT = 200000  # hub/deploy/mosquitto-affectbox.conf
WINDOWS_PER_DEVICE_DAY = 6 * 360


def broker(folder: Path) -> Broker:
    b = Broker(folder, persistence=True)
    b.conf.write_text(b.conf.read_text().replace("max_queued_messages 10000",
                                                 f"max_queued_messages {QUEUE_LIMIT}\nmax_queued_bytes 400000000"))
    b.start()
    return b


def db_bytes(url: str) -> int:
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        size = int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())
    engine.dispose()
    return size


def queue_sessions(port: int, devices: int, windows: int) -> int:
    """Publish `windows` mood events per device (plus session start/end/summary); returns the event count."""
    total = 0
    sims = [SimDevice(port, f"bench-{n:02d}") for n in range(devices)]
    try:
        for sim in sims:
            _, events = sim.session_events(windows)
            sim.publish(events)
            total += len(events)
    finally:
        for sim in sims:
            sim.close()
    return total


def start_hubs(folder: Path, port: int, url: str, n: int) -> list[HubProcess]:
    share = "bench" if n > 1 else ""
    return [HubProcess(folder, hub_config(folder, port, url, client_id=f"affectbox-hub-{i}", share_group=share))
            .wait_ready().wait_connected() for i in range(n)]


def drain(folder: Path, port: int, url: str, collectors: int, devices: int, windows: int) -> dict[str, Any]:
    """Collectors subscribe, go away, the devices publish; then the collectors start and drain."""
    for hub in start_hubs(folder, port, url, collectors):
        assert hub.terminate() == 0
    before = count(url, "events_raw")
    sent = queue_sessions(port, devices, windows)
    launched = time.monotonic()
    hubs = start_hubs(folder, port, url, collectors)
    # the rate is timed from the first stored event (process start and imports left out)
    wait_until(lambda: count(url, "events_raw") > before, 120, step_s=0.05)
    began, first = time.monotonic(), count(url, "events_raw") - before
    ok = wait_until(lambda: count(url, "events_raw") - before >= sent, 3600, step_s=0.2)
    done = time.monotonic()
    elapsed = done - began
    cpu = sum(process_cpu_s(h.proc.pid) for h in hubs)
    rss = max(rss_mb(h.proc.pid, peak=True) for h in hubs)
    for hub in hubs:
        hub.terminate()
    stored = count(url, "events_raw") - before
    return {"events": sent, "stored": stored, "complete": ok and stored == sent,
            "drain_s_from_start": round(done - launched, 1), "events_per_s": round((stored - first) / elapsed, 1),
            "hub_cpu_ms_per_event": round(1000 * cpu / max(stored, 1), 3),
            "hub_peak_rss_mb": round(rss, 1)}


def bench_rate(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    rows = []
    b = broker(work / "broker")
    pg = Postgres()
    try:
        per_device = args.events // 10
        cases = [("sqlite", 1, f"sqlite:///{work / 'rate.db'}"), ("postgresql", 1, pg.url), ("postgresql", 2, pg.url)]
        for name, collectors, url in cases:
            figures = drain(work / f"{name}-{collectors}", b.port, url, collectors, 10, per_device)
            rows.append({"database": name, "collectors": collectors, **figures})
            print(f"rate {name} x{collectors}: {figures}", file=sys.stderr)
    finally:
        pg.close()
        b.stop()
    return rows


def bench_backlog(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    b = broker(work / "broker")
    try:
        windows = int(args.hours * 360)
        url = f"sqlite:///{work / 'backlog.db'}"
        figures = drain(work / "hub", b.port, url, 1, args.devices, windows)
        figures.update(devices=args.devices, outage_h=args.hours, queue_needed=args.devices * (windows + 3),
                       queue_limit=QUEUE_LIMIT, broker_peak_rss_mb=round(rss_mb(b.proc.pid, peak=True), 1))
        return [figures]
    finally:
        b.stop()


def bench_clinic(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    b = broker(work / "broker")
    url = f"sqlite:///{work / 'clinic.db'}"
    hub = start_hubs(work / "hub", b.port, url, 1)[0]
    sims = [SimDevice(b.port, f"room-{n:02d}") for n in range(args.devices)]
    try:
        sessions = [sim.session_events(args.minutes * 60 + 1) for sim in sims]
        for sim, (_, events) in zip(sims, sessions, strict=True):
            sim.publish(events[:1])
        cpu0, t0 = process_cpu_s(hub.proc.pid), time.monotonic()
        for second in range(args.minutes * 60):  # 10x pace: one 10-s window per device per second
            tick = time.monotonic()
            for sim, (_, events) in zip(sims, sessions, strict=True):
                sim.publish([events[1 + second]], wait=False)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        for sim, (_, events) in zip(sims, sessions, strict=True):
            sim.publish(events[-3:])
        sent = sum(len(events) - 1 for _, events in sessions) - len(sims)  # every event except the unsent window
        wait_until(lambda: count(url, "events_raw") >= sent, 120, step_s=0.5)
        elapsed = time.monotonic() - t0
        cpu = process_cpu_s(hub.proc.pid) - cpu0
        windows = count(url, "windows")
        size = db_bytes(url)
        return [{"devices": args.devices, "wall_minutes": args.minutes, "pace": 10, "windows": windows,
                 "hub_cpu_cores": round(cpu / elapsed, 3), "hub_peak_rss_mb": round(rss_mb(hub.proc.pid, peak=True), 1),
                 "db_bytes_per_window": round(size / max(windows, 1)),
                 "db_mb_per_device_day": round(size / max(windows, 1) * WINDOWS_PER_DEVICE_DAY / 1e6, 2),
                 "hub_cpu_s_per_device_day": round(cpu / max(windows, 1) * WINDOWS_PER_DEVICE_DAY, 2)}]
    finally:
        for sim in sims:
            sim.close()
        hub.terminate()
        b.stop()


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    rate = sub.add_parser("rate")
    rate.add_argument("--events", type=int, default=6000)
    clinic = sub.add_parser("clinic")
    clinic.add_argument("--devices", type=int, default=50)
    clinic.add_argument("--minutes", type=int, default=3)
    backlog = sub.add_parser("backlog")
    backlog.add_argument("--devices", type=int, default=50)
    backlog.add_argument("--hours", type=float, default=1.0)
    for p in (rate, clinic, backlog):
        p.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hub-") as tmp:
        rows = {"rate": bench_rate, "clinic": bench_clinic, "backlog": bench_backlog}[args.what](args, Path(tmp))
    print(f"# bench_hub_ingest {args.what}\n\nCPU: {cpu_model()} ({os.cpu_count()} cores), Python "
          f"{platform.python_version()}; command: {' '.join(sys.argv)}\n")
    print(table(rows))
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
