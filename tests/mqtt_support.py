"""Mosquitto brokers and hub-side MQTT clients for the hub tests (test_hub.py, test_daemon_hub.py).

A `Broker` is one `mosquitto` process on a free 127.0.0.1 port with a generated config,
restartable on the same port (optionally with persistence, as a real hub's broker would have).
An `Observer` is a hub-side MQTT 5 client that records what arrives on its subscriptions; with
`persistent=True` it keeps its session on the broker across its own and the broker's restarts.
A `Relay` stands between the device and a broker and can cut the network without closing a
connection (packets silently lost both ways), then restore it.
Every wait is bounded; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import queue
import selectors
import shutil
import socket
import struct
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

from device.contract import payloads
from device.mqtt_sockets import close_client_sockets

MOSQUITTO = shutil.which("mosquitto")
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (./setup.sh --dev installs it)")
HOST = "127.0.0.1"


def validate(name: str, payload: Any) -> None:
    """Validate a payload against its JSON Schema (device/contract/schemas), formats included."""
    schema = payloads.load_schema(name)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(payload)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


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
        close_client_sockets(self.client)


def events(messages: list[mqtt.MQTTMessage], suffix: str = "") -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith(suffix) and m.payload[:1] == b"{"]


def availability(messages: list[mqtt.MQTTMessage]) -> list[str]:
    return [m.payload.decode() for m in messages if m.topic.endswith("/availability")]


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a TCP stack answers a segment of a connection it forgot."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Link:
    """One relayed connection: end 0 is the client's, end 1 the broker's (None until it is connected)."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.socks: list[socket.socket | None] = [client, upstream]
        self.held = [bytearray(), bytearray()]  # bytes from end i, not yet delivered to the other end
        self.gone = [False, False]  # end i closed its socket while the network was cut


class Relay:
    """A TCP relay 127.0.0.1:<port> -> the broker that can cut the network without closing anything.

    `cut()` makes it a black hole: every connection stays open at both ends, nothing crosses in
    either direction, not even a FIN or an RST (a pulled switch cable, a Wi-Fi drop): only the
    endpoints' own timers (MQTT keep-alive) can tell. A connection opened during the cut is
    accepted but goes nowhere, so its client waits for a CONNACK that never comes (with a real cut
    its SYN would be lost and the connect time out; either way the attempt fails after a timeout).

    `restore()` does what TCP makes of the cut once packets flow again: what a sender wrote
    during the cut sits in its retransmission queue, so for a connection both ends still hold,
    the held bytes are delivered late and in order and it carries on; a connection that one end
    gave up during the cut (its keep-alive timer closed it) is reset at the other end, whose
    retransmission now reaches a peer that forgot the connection; a connection opened during the
    cut reaches the broker now (its SYN retransmission gets through). Nothing is lost silently
    from a live connection: that is not what a network does to TCP.

    One thread with a selector; control requests run on that thread. Counters: `links` accepted,
    `held` bytes that went into the black hole (from client, from broker), `resets` sent at restore,
    `survived` connections that carried on after it, `late_links` opened during it.
    """

    def __init__(self, target_port: int) -> None:
        self.target = (HOST, target_port)
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._links: list[_Link] = []
        self._cut = False
        self._requests: queue.SimpleQueue[tuple[str, threading.Event]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.links = 0
        self.held = [0, 0]
        self.resets = 0
        self.survived = 0
        self.late_links = 0
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()

    # ---- control (any thread) ----

    def cut(self) -> None:
        self._request("cut")

    def restore(self) -> None:
        self._request("restore")

    def _request(self, what: str) -> None:
        done = threading.Event()
        self._requests.put((what, done))
        assert done.wait(5), f"relay did not {what}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for link in self._links:
            for sock in link.socks:
                if sock is not None:
                    sock.close()
        self._links = []
        self._selector.close()
        self._listener.close()

    # ---- the relay thread ----

    def _run(self) -> None:
        while not self._stop.is_set():
            while not self._requests.empty():
                what, done = self._requests.get()
                if what == "cut":
                    self._cut = True
                else:
                    self._restore()
                done.set()
            for key, _ in self._selector.select(0.05):
                if key.data is None:
                    self._accept()
                else:
                    link, end = key.data
                    if link.socks[end] is not None:  # not closed by an earlier event of this round
                        self._readable(link, end)

    def _register(self, link: _Link, end: int) -> None:
        sock = link.socks[end]
        assert sock is not None
        self._selector.register(sock, selectors.EVENT_READ, (link, end))

    def _connect(self, link: _Link) -> bool:
        try:
            link.socks[1] = socket.create_connection(self.target, timeout=5)
        except OSError:  # the broker is down: refuse the client as a closed port would
            self._close(link)
            return False
        self._register(link, 1)
        return True

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        client.settimeout(5)
        self.links += 1
        link = _Link(client, None)
        self._links.append(link)
        self._register(link, 0)
        if self._cut:
            self.late_links += 1
        else:
            self._connect(link)

    def _close(self, link: _Link, *, reset: bool = False) -> None:
        for end, sock in enumerate(link.socks):
            if sock is not None:
                self._selector.unregister(sock)
                if reset:
                    _reset(sock)
                    self.resets += 1
                else:
                    sock.close()
                link.socks[end] = None
        if link in self._links:
            self._links.remove(link)

    def _readable(self, link: _Link, end: int) -> None:
        sock = link.socks[end]
        assert sock is not None
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if self._cut:  # into the black hole: the other end hears nothing, not even a close
            if data:
                link.held[end] += data
                self.held[end] += len(data)
            else:
                self._selector.unregister(sock)
                sock.close()
                link.socks[end] = None
                link.gone[end] = True
            return
        other = link.socks[1 - end]
        if not data or other is None:
            self._close(link)
            return
        try:
            other.sendall(data)
        except OSError:
            self._close(link)

    def _restore(self) -> None:
        self._cut = False
        for link in list(self._links):
            if any(link.gone):
                self._close(link, reset=True)  # the survivor's retransmission meets a forgotten connection
                continue
            if link.socks[1] is None and not self._connect(link):
                continue
            try:
                for end in (0, 1):
                    if link.held[end]:
                        target = link.socks[1 - end]
                        assert target is not None
                        target.sendall(bytes(link.held[end]))
                        link.held[end].clear()
            except OSError:
                self._close(link)
                continue
            self.survived += 1
