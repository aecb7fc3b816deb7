"""Mosquitto brokers and hub-side MQTT clients for the hub tests (test_hub.py, test_daemon_hub.py).

A `Broker` is one `mosquitto` process on a free 127.0.0.1 port with a generated config,
restartable on the same port (optionally with persistence, as a real hub's broker would have).
An `Observer` is a hub-side MQTT 5 client that records what arrives on its subscriptions; with
`persistent=True` it keeps its session on the broker across its own and the broker's restarts.
Every wait is bounded; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.hub import payloads

MOSQUITTO = shutil.which("mosquitto")
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (./setup.sh --dev installs it)")
HOST = "127.0.0.1"


def validate(name: str, payload: Any) -> None:
    """Validate a payload against its JSON Schema (device/hub/schemas), formats included."""
    schema = payloads.load_schema(name)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(payload)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Broker:
    """One mosquitto process on 127.0.0.1:<port> with a generated config; restartable on the same port."""

    def __init__(self, folder: Path, *, persistence: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        lines = [f"user {getpass.getuser()}", f"persistence {'true' if persistence else 'false'}"]
        if persistence:
            lines += [f"persistence_location {folder}/", "autosave_interval 0"]
        lines += [f"listener {self.port} {HOST}", *(extra or ("allow_anonymous true",)), "max_queued_messages 10000"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening in 10 s")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


class Observer:
    """A hub-side MQTT client that records what arrives on its subscriptions."""

    def __init__(self, port: int, topics: list[str], *, persistent: bool = False, tls: dict[str, str] | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        self.topics = topics
        self.messages: list[mqtt.MQTTMessage] = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"observer-{uuid.uuid4().hex[:8]}" if not persistent else "observer-hub",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        if tls:
            self.client.tls_set(ca_certs=tls["ca"], certfile=tls.get("cert"), keyfile=tls.get("key"))
        if auth:
            self.client.username_pw_set(*auth)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
        self.client.connect(HOST, port, keepalive=30, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10), "observer did not subscribe"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append(message)
            self.cond.notify_all()

    def on(self, suffix: str) -> list[mqtt.MQTTMessage]:
        with self.cond:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, predicate: Callable[[list[mqtt.MQTTMessage]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
            return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def events(messages: list[mqtt.MQTTMessage], suffix: str = "") -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith(suffix) and m.payload[:1] == b"{"]


def availability(messages: list[mqtt.MQTTMessage]) -> list[str]:
    return [m.payload.decode() for m in messages if m.topic.endswith("/availability")]
