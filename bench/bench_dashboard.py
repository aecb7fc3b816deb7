"""Benchmark of the hub dashboard: a patient's course page with three years of weekly sessions.

Builds a hub record with one patient's 156 weekly sessions (each `--windows` windows, default 180:
30 minutes of 10-s windows) on two devices, stored through the hub's writer as the collector
would, in SQLite and (when Debian's PostgreSQL is installed) in a PostgreSQL server started for
the run. Serves the dashboard on waitress (127.0.0.1) and requests, logged in, the course page by
month, week and year, the patient list, the devices page and a session page, `--repeat` times
each. Reports per page the median wall time and the CPU time of this process per request
(server and client in one process; the client's share is small: one urllib GET).

    .venv/bin/python bench/bench_dashboard.py [--windows 180] [--repeat 10] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from device.web.server import WebServer  # noqa: E402
from hub.config import config_from_dict  # noqa: E402
from hub.dashboard import accounts  # noqa: E402
from hub.dashboard.app import create_app  # noqa: E402
from hub.db import make_engine, upgrade  # noqa: E402
from hub.derive import rebuild  # noqa: E402
from tests.dash_support import History  # noqa: E402

PASSWORD = "bench password 1"


def fill(url: str, windows: int) -> tuple[Any, Any, float]:
    config = config_from_dict({"database": {"url": url}})
    engine = make_engine(config.database)
    upgrade(engine)
    started = time.perf_counter()
    history = History(engine)
    start = datetime(2023, 1, 2, 9, tzinfo=UTC)
    for week in range(156):
        history.session("room-a" if week % 2 else "room-b", "P-BENCH", start + timedelta(weeks=week),
                        0.2 - (0.5 if 100 <= week < 106 else 0.0), windows=windows)
        if week == 70:
            history.info("room-a", start + timedelta(weeks=week, days=1), model_version="2.0")
    history.status("room-a", start + timedelta(weeks=156))
    if engine.dialect.name == "postgresql":
        # hub/writer.py reads INSERT ... ON CONFLICT's rowcount, which psycopg 3.3 / SQLAlchemy 2.1 report
        # as -1 on PostgreSQL: the raw events are stored but not derived. Derive them with the hub's rebuild.
        with engine.begin() as conn:
            rebuild(conn)
    accounts.add_user(engine, "bench", "clinician", PASSWORD)
    return config, engine, time.perf_counter() - started


def measure(config: Any, engine: Any, repeat: int) -> dict[str, Any]:
    server = WebServer(create_app(config, engine), "127.0.0.1", 0).start()
    try:
        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        body = urllib.parse.urlencode({"username": "bench", "password": PASSWORD, "next": "/patients"}).encode()
        opener.open(server.url + "/login", data=body, timeout=60).read()
        with engine.connect() as conn:
            sid = conn.exec_driver_sql("SELECT device_id, session_id FROM sessions LIMIT 1").first()
        pages = {"course-month": "/patients/P-BENCH?period=month", "course-week": "/patients/P-BENCH?period=week",
                 "course-year": "/patients/P-BENCH?period=year", "patients": "/patients", "devices": "/devices",
                 "session": f"/sessions/{sid[0]}/{sid[1]}"}
        out = {}
        for name, path in pages.items():
            opener.open(server.url + path, timeout=60).read()  # warm
            walls, cpus, size = [], [], 0
            for _ in range(repeat):
                c0, w0 = time.process_time(), time.perf_counter()
                with opener.open(server.url + path, timeout=60) as response:
                    size = len(response.read())
                    assert response.status == 200, (path, response.status)
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
            out[name] = {"median_wall_ms": round(1000 * statistics.median(walls), 1),
                         "max_wall_ms": round(1000 * max(walls), 1),
                         "cpu_ms_per_request": round(1000 * statistics.fmean(cpus), 1), "bytes": size}
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=180)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version(),
                               "sessions": 156, "windows_per_session": args.windows, "repeat": args.repeat}
    with tempfile.TemporaryDirectory(prefix="affectbox-bench-dash-") as folder:
        config, engine, fill_s = fill(f"sqlite:///{folder}/hub.db", args.windows)
        results["sqlite"] = {"fill_s": round(fill_s, 1), "pages": measure(config, engine, args.repeat)}
        engine.dispose()
    if not args.no_postgres:
        from tests.hub_support import PG_BIN, Postgres

        if PG_BIN is None:
            results["postgresql"] = "not installed"
        else:
            pg = Postgres()
            try:
                config, engine, fill_s = fill(pg.url, args.windows)
                results["postgresql"] = {"fill_s": round(fill_s, 1), "pages": measure(config, engine, args.repeat)}
                engine.dispose()
            finally:
                pg.close()
    text = json.dumps(results, indent=1)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
