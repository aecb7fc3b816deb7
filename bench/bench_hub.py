"""Benchmark of the hub link's outbox: events per second and disk bytes per hour of session.

Starts its own mosquitto on a free 127.0.0.1 port (persistence off), a `HubClient` with an outbox
in a temporary folder, and a subscriber, then measures:

1. queueing: `publish_mood` (number, build, commit with fsync) while the broker is unreachable;
2. draining: the same events from the outbox through the broker to the subscriber after the
   client connects (PUBACK, batched delete);
3. live: one hour of session at the configured window length (default 10 s: 360 mood events),
   queued and delivered one by one, with the bytes the process wrote to disk (/proc/self/io
   write_bytes: SQLite's WAL, checkpoints and fsyncs, i.e. what an SD card sees) and the outbox
   file's size when everything is delivered.

Nothing is sent beyond 127.0.0.1. Usage:

    .venv/bin/python bench/bench_hub.py [--events 1000] [--window-seconds 10] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from device.config import HubConfig
from device.labels import LABELS
from device.mqtt_sockets import close_client_sockets
from device.uplink import HubClient, Outbox

HOST = "127.0.0.1"


class Handler:
    """No commands are sent in this benchmark."""

    def start_session(self, patient_id: str, max_duration_s: float | None) -> dict[str, Any]:
        return {}

    def stop_session(self) -> dict[str, Any]:
        return {}

    def ping(self) -> dict[str, Any]:
        return {}

    def get_status(self) -> dict[str, Any]:
        return {}


def window(index: int, seconds: float) -> dict[str, Any]:
    """A window as `Window.to_json()` gives it, with both modalities and prosody (a typical size)."""
    probs = {label: round(0.04 + 0.01 * i, 4) for i, label in enumerate(LABELS)}
    modality = {"items": 100, "present": 93, "share": 0.93, "mean_quality": 0.88, "probs": probs,
                "dominant": "neutral", "expressivity": 0.061}
    prosody = {k: 1.2345 for k in ("speech_s", "speech_share", "voiced_s", "pause_ratio", "pause_count",
                                   "mean_pause_s", "speaking_rate", "articulation_rate", "f0_mean_hz", "f0_sd_hz",
                                   "f0_mean_st", "f0_sd_st", "energy_mean_db", "energy_sd_db")}
    prosody["n_utterances"] = 2
    return {"index": index, "start": index * seconds, "end": (index + 1) * seconds, "has_mood": True,
            "dominant": "neutral", "valence": 0.0123, "arousal": -0.0456, "probs": probs,
            "fusion_weights": {"face": 0.61, "speech": 0.39},
            "modalities": {"face": modality, "speech": dict(modality, seconds=3.2)}, "prosody": prosody}


def written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="events queued during the outage (default 1000)")
    parser.add_argument("--window-seconds", type=float, default=10.0, help="window length (default 10 s)")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto")
    if mosquitto is None:
        print("bench_hub: error: mosquitto is not installed (./setup.sh --dev installs it)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="affectbox-bench-hub-") as tmp:
        folder = Path(tmp)
        port = free_port()
        (folder / "m.conf").write_text(f"persistence false\nlistener {port} {HOST}\nallow_anonymous true\n"
                                       "max_queued_messages 100000\n")
        broker = subprocess.Popen([mosquitto, "-c", str(folder / "m.conf")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            return run(folder, port, args)
        finally:
            broker.terminate()
            broker.wait(10)


def run(folder: Path, port: int, args: argparse.Namespace) -> int:
    received = 0
    done = threading.Condition()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        with done:
            received += 1
            done.notify_all()

    def wait_received(n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with done:
            while received < n and time.monotonic() < deadline:
                done.wait(deadline - time.monotonic())
            return received >= n

    subscriber = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-hub",
                             protocol=MQTTProtocolVersion.MQTTv5)
    subscriber.on_message = on_message
    for _ in range(100):  # the broker may take a moment to listen
        try:
            subscriber.connect(HOST, port)
            break
        except OSError:
            time.sleep(0.05)
    subscriber.subscribe("affectbox/bench/mood", qos=1)
    subscriber.loop_start()
    time.sleep(0.3)
    outbox_dir = folder / "outbox"
    config = HubConfig(enabled=True, host=HOST, port=port, tls="off", reconnect_min_s=1, reconnect_max_s=1)
    results: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                               "events": args.events, "window_seconds": args.window_seconds}
    outbox = Outbox(outbox_dir / "outbox.db", max_bytes=config.outbox_max_bytes)
    client = HubClient(config, "bench", None, outbox, Handler())
    try:
        # 1. queueing while disconnected (the client is not started yet)
        started = time.perf_counter()
        sizes = [len(json.dumps(client.publish_mood("s-1", window(i, args.window_seconds))))
                 for i in range(args.events)]
        queue_s = time.perf_counter() - started
        results["queue_events_per_s"] = round(args.events / queue_s, 1)
        results["mood_payload_bytes"] = round(sum(sizes) / len(sizes))
        results["outbox_file_bytes_queued"] = folder_size(outbox_dir)
        # 2. draining through the broker
        started = time.perf_counter()
        client.start()
        if not wait_received(args.events, 120):
            print(f"bench_hub: error: only {received} of {args.events} events arrived", file=sys.stderr)
            return 1
        results["drain_events_per_s"] = round(args.events / (time.perf_counter() - started), 1)
        deadline = time.monotonic() + 10
        while outbox.stats()["depth"] and time.monotonic() < deadline:
            time.sleep(0.05)
        # 3. one hour of session, live
        per_hour = int(round(3600 / args.window_seconds))
        before_bytes, base = written_bytes(), received
        started = time.perf_counter()
        for i in range(per_hour):
            client.publish_mood("s-2", window(i, args.window_seconds))
            if not wait_received(base + i + 1, 10):
                print("bench_hub: error: a live event did not arrive in 10 s", file=sys.stderr)
                return 1
        live_s = time.perf_counter() - started
        deadline = time.monotonic() + 10
        while outbox.stats()["depth"] and time.monotonic() < deadline:
            time.sleep(0.05)
        results["live_latency_ms"] = round(1000 * live_s / per_hour, 2)
        results["disk_write_bytes_per_session_hour"] = written_bytes() - before_bytes
        results["payload_bytes_per_session_hour"] = per_hour * results["mood_payload_bytes"]
        results["outbox_file_bytes_drained"] = folder_size(outbox_dir)
    finally:
        client.stop()
        outbox.close()
        subscriber.disconnect()
        subscriber.loop_stop()
        close_client_sockets(subscriber)
    print("| measure | value |\n| --- | --- |")
    for key, value in results.items():
        print(f"| {key} | {value} |")
    print(f"\ncommand: {' '.join(sys.argv)}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
