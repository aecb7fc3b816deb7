"""Peak memory of the device's MQTT link when a 100 MB command arrives (issue 12; docs/RELIABILITY.md).

A real Mosquitto on loopback, the real HubClient in this process, `mosquitto_pub -f` sending a
100 MB payload on `cmd/ping`. Prints RSS and peak RSS (VmHWM) of this process before and after:

    .venv/bin/python bench/mqtt_oversized.py --protocol mqtt5
    .venv/bin/python bench/mqtt_oversized.py --protocol mqtt311
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.uplink import HubClient, Outbox
from tests.mqtt_support import Broker
from tests.test_hub import RecordingHandler, hub_config


def memory_mb() -> dict[str, float]:
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmHWM", "VmRSS")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=("mqtt5", "mqtt311"), default="mqtt5")
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mqtt-oversized-"))
    payload = folder / "command.bin"
    with payload.open("wb") as handle:  # written in chunks: the file must not raise this process's peak
        for _ in range(args.megabytes):
            handle.write(b"x" * (1 << 20))
    broker = Broker(folder / "broker")
    broker.start()
    outbox = Outbox(folder / "outbox.db", max_bytes=1 << 20)
    handler = RecordingHandler()
    client = HubClient(hub_config(broker.port, protocol=args.protocol), "dev-1", None, outbox, handler)
    try:
        client.start()
        if not client.wait_connected(10):
            raise SystemExit("the client did not connect")
        time.sleep(1.0)
        before = memory_mb()
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
                        "-V", "mqttv5" if args.protocol == "mqtt5" else "mqttv311",
                        "-t", "affectbox/dev-1/cmd/ping", "-f", str(payload)], check=True, timeout=120)
        time.sleep(3.0)
        connected = client.wait_connected(10)
        after = memory_mb()
        refused = getattr(client._client, "oversized_refused", 0)
        print(f"RELIABILITY mqtt {args.protocol}: {args.megabytes} MB command: RSS {before['VmRSS']:.1f} -> "
              f"{after['VmRSS']:.1f} MB, peak {before['VmHWM']:.1f} -> {after['VmHWM']:.1f} MB; refused from the "
              f"packet header by the client: {refused}; handler calls: {len(handler.calls)}; connected: {connected}")
    finally:
        client.stop()
        outbox.close()
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
