"""Real parts for the hub tests: a PostgreSQL server, the hub as a process, simulated devices.

- `Postgres`: Debian's PostgreSQL (`/usr/lib/postgresql/<v>/bin`) initialised into a fresh
  temporary folder and run on a free 127.0.0.1 port, as `nobody` when the tests run as root
  (PostgreSQL refuses to run as root; CI runs as root). `stop()` (fast shutdown) and `start()`
  again on the same port and data, for database-outage tests.
- `HubProcess`: `python -m hub run --config ...` as a subprocess with a recording sd_notify
  socket; `kill()` is SIGKILL, `terminate()` SIGTERM.
- `SimDevice`: publishes sessions built with the contract's own builders and derived event ids,
  exactly as a device's outbox would (QoS 1, MQTT 5), and remembers what it sent: for faults
  that need many events fast or precise control (duplicates, reordering, poison). The
  end-to-end tests use the real replaying daemon (tests/daemon_harness.py) instead.
Nothing leaves 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import create_engine, select, text

from device.contract import payloads
from device.mqtt_sockets import close_client_sockets
from device.notice import NOT_A_DIAGNOSIS
from tests.daemon_harness import ROOT, NotifySocket
from tests.mqtt_support import HOST, free_port
from tests.support import wait_until

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None) \
    if Path("/usr/lib/postgresql").is_dir() else None
needs_postgres = pytest.mark.skipif(PG_BIN is None or not (PG_BIN / "initdb").exists(),
                                    reason="PostgreSQL is not installed (./setup.sh --dev installs it)")


class Postgres:
    """One PostgreSQL server in its own temporary folder; `url` points at database `hub`."""

    def __init__(self) -> None:
        assert PG_BIN is not None
        self.root = Path(tempfile.mkdtemp(prefix="affectbox-pg-"))  # not under pytest's 0700 root folder
        self.data = self.root / "data"
        self.port = free_port()
        self.log = self.root / "postgres.log"
        self._as_nobody = os.geteuid() == 0
        if self._as_nobody:
            shutil.chown(self.root, "nobody", "nogroup")
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "hub", "-A", "trust", "-E", "UTF8",
                   "--no-sync"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()
        admin = create_engine(self.url_for("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE hub"))
        admin.dispose()

    def _user(self) -> dict[str, Any]:
        return {"user": "nobody", "group": "nogroup"} if self._as_nobody else {}

    def _run(self, args: list[str]) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=120, cwd=self.root, **self._user())

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://hub@{HOST}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for("hub")

    def start(self) -> None:
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
             "-c", f"listen_addresses={HOST}", "-c", "fsync=on", "-c", "max_connections=50"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.root, **self._user())
        log.close()
        ok = wait_until(lambda: self.proc.poll() is not None or subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", HOST, "-p", str(self.port)], capture_output=True).returncode == 0, 30)
        if not ok or self.proc.poll() is not None:
            raise RuntimeError(f"postgres did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)  # fast shutdown: clients are disconnected
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def hub_config(folder: Path, port: int, database_url: str, *, client_id: str = "affectbox-hub-test",
               extra: str = "", approval: bool = False, share_group: str = "",
               completeness: str = "enabled = false\n") -> Path:
    """A hub config for a plain-MQTT broker on 127.0.0.1:port."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"hub-{client_id}.toml"
    path.write_text(f"""
[mqtt]
host = "{HOST}"
port = {port}
tls = "off"
client_id = "{client_id}"
share_group = "{share_group}"
reconnect_min_s = 1
reconnect_max_s = 1
keepalive = 5
[database]
url = "{database_url}"
[ingest]
retry_min_s = 0.2
retry_max_s = 1
[admission]
require_approval = {str(approval).lower()}
[completeness]
{completeness}
[service]
status_every_s = 1
log_level = "info"
""" + extra)
    return path


class HubProcess:
    """`python -m hub run` in a subprocess."""

    def __init__(self, folder: Path, config: Path) -> None:
        self.folder = folder
        self.config = config
        self.notify = NotifySocket(folder / f"hub-notify-{time.monotonic_ns()}.sock")
        self.log_path = folder / f"hub-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env.update(NOTIFY_SOCKET=str(self.notify.path), PYTHONUNBUFFERED="1")
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "hub", "run", "--config", str(config)], cwd=ROOT,
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> HubProcess:
        if not wait_until(lambda: self.notify.lines("READY=1") or self.proc.poll() is not None, timeout) \
                or self.proc.poll() is not None:
            raise AssertionError(f"hub not ready; log:\n{self.log()}")
        return self

    def wait_connected(self, timeout: float = 20) -> HubProcess:
        if not wait_until(lambda: any(s.startswith("STATUS=connected") for s in self.notify.lines("STATUS=")),
                          timeout):
            raise AssertionError(f"hub not connected; log:\n{self.log()}")
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.close()

    def terminate(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        self.notify.close()
        self._log.close()

    def stop(self) -> None:
        self.kill()


def window_json(index: int, seconds: float = 10.0, rng: random.Random | None = None) -> dict[str, Any]:
    """A stored window's JSON as the device's aggregator writes it (what mood_payload reads)."""
    rng = rng or random.Random(index)
    raw = [rng.random() + 0.05 for _ in range(7)]
    total = sum(raw)
    probs = [p / total for p in raw]
    labels = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    return {"index": index, "start": index * seconds, "end": (index + 1) * seconds, "probs": probs,
            "dominant": labels[probs.index(max(probs))], "valence": rng.uniform(-1, 1),
            "arousal": rng.uniform(-1, 1), "fusion_weights": {"face": 0.6, "speech": 0.4},
            "modalities": {"face": {"items": 100, "present": 90, "share": 0.9}}, "prosody": None}


class SimDevice:
    """A device's outbox in miniature: builds a session's events with the contract and publishes them."""

    def __init__(self, port: int, device_id: str = "sim-1", auth: tuple[str, str] | None = None,
                 tls: dict[str, str] | None = None) -> None:
        self.device_id = device_id
        self.seq: dict[str | None, int] = {}
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"affectbox-{device_id}", protocol=MQTTProtocolVersion.MQTTv5)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        if auth:
            self.client.username_pw_set(*auth)
        if tls:
            self.client.tls_set(ca_certs=tls["ca"], certfile=tls.get("cert"), keyfile=tls.get("key"))
        self.client.connect(HOST, port, keepalive=30)
        self.client.loop_start()
        self.topic = f"affectbox/{device_id}"

    def next_seq(self, session_id: str | None) -> int:
        self.seq[session_id] = self.seq.get(session_id, -1) + 1
        return self.seq[session_id]

    def session_events(self, windows: int, session_id: str | None = None, patient: str = "P-1",
                       ) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        """(session_id, [(topic, payload)]) of a whole session, in the order a device sends them."""
        sid = session_id or str(uuid.uuid4())
        d = self.device_id

        def with_id(payload: dict[str, Any], key: str) -> dict[str, Any]:
            payload["event_id"] = payloads.derived_event_id(d, sid, payload["kind"], key)
            return payload

        out = [(f"{self.topic}/session", with_id(payloads.session_payload(
            d, sid, self.next_seq(sid), "started", patient_id=patient), "started"))]
        for i in range(windows):
            out.append((f"{self.topic}/mood", with_id(payloads.mood_payload(d, sid, self.next_seq(sid),
                                                                            window_json(i)), f"window:{i}")))
        out.append((f"{self.topic}/session", with_id(payloads.session_payload(
            d, sid, self.next_seq(sid), "ended", patient_id=patient, duration_s=windows * 10.0, windows=windows),
            "ended")))
        summary = {"duration_s": windows * 10.0, "windows": windows, "windows_with_mood": windows,
                   "probs": window_json(0)["probs"], "dominant": "neutral", "valence": 0.0, "arousal": 0.0,
                   "notice": NOT_A_DIAGNOSIS}
        out.append((f"{self.topic}/summary", with_id(payloads.summary_payload(
            d, sid, self.next_seq(sid), summary, patient_id=patient), "summary")))
        return sid, out

    def publish(self, events: list[tuple[str, Any]], wait: bool = True, pace_s: float = 0.0) -> None:
        infos = []
        for topic, payload in events:
            data = payload if isinstance(payload, bytes) else payloads.encode(payload)
            infos.append(self.client.publish(topic, data, qos=1))
            if pace_s:
                time.sleep(pace_s)
        if wait:
            for info in infos:
                info.wait_for_publish(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        close_client_sockets(self.client)

    def stop(self) -> None:
        self.close()


def hub_windows(url: str, device_id: str | None = None) -> list[tuple[str, int, str]]:
    """(session_id, window_index, event_id) of every window the hub holds."""
    from hub import schema

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            w = schema.windows.c
            query = select(w.session_id, w.window_index, w.event_id).order_by(w.session_id, w.window_index)
            if device_id:
                query = query.where(w.device_id == device_id)
            return [tuple(r) for r in conn.execute(query)]
    finally:
        engine.dispose()


def count(url: str, table: str, where: str = "") -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table} {where}")).scalar())
    finally:
        engine.dispose()


def rejected_rows(url: str) -> list[tuple[str, str, str]]:
    """(topic, code, reason) of every rejected message."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT topic, code, reason FROM rejected ORDER BY id"))]
    finally:
        engine.dispose()
