"""The uplink: aggregated mood events from the device to the clinic hub over MQTT (docs/MQTT.md).

The contract it speaks (topics, payload builders, JSON Schemas, id rules) lives in
`device.contract`, which the hub imports too.

- `outbox`: the bounded SQLite store-and-forward queue (an event is deleted only on PUBACK);
- `client`: `HubClient`, the paho-mqtt 2.x client (availability, retained state, outbox
  draining, commands validated and handed to a `CommandHandler`).

Only aggregates leave the device: no module here ever sees a frame or an audio block.
May import: device.contract, device.config, device.errors, device.labels, paho-mqtt. Not device.store or the
pipeline (the daemon passes windows and summaries in).
"""

from device.contract.topics import Topics
from device.uplink.client import CommandHandler, HubClient, RateLimitedLog, default_secrets_dir, parse_command
from device.uplink.outbox import Outbox, OutboxEntry, OutboxError

__all__ = ["CommandHandler", "HubClient", "Outbox", "OutboxEntry", "OutboxError", "RateLimitedLog", "Topics",
           "default_secrets_dir", "parse_command"]
