"""`affectbox-hub dashboard`: the dashboard app on waitress (the device's `WebServer`, reused).

It reads the hub's database (migrated to head at start, like the collector) and publishes
commands through the broker; it runs as its own process beside the collector.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from sqlalchemy import Engine

from device.web.server import WebServer
from hub.config import HubConfig

log = logging.getLogger("affectbox.hub.dashboard")


def secret_key(config: HubConfig) -> bytes | None:
    path = config.dashboard.secret_key_file
    if not path:
        return None
    data = Path(path).read_bytes().strip()
    if len(data) < 32:
        from hub.dashboard.accounts import AccountError

        raise AccountError(f"dashboard.secret_key_file: {path} must hold at least 32 bytes")
    return data


def serve(config: HubConfig, engine: Engine, stop: threading.Event | None = None) -> None:
    from hub.dashboard.app import create_app

    app = create_app(config, engine, secret_key=secret_key(config))
    server = WebServer(app, config.dashboard.bind, config.dashboard.port).start()
    log.info("dashboard on %s", server.url)
    stop = stop or threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.stop()
