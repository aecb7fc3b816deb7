"""The hub link: aggregated mood events to the clinic hub over MQTT (issue 5; contract in docs/MQTT.md).

- `payloads`: builders for every payload (availability, info, status, session, mood, summary,
  command result) and their JSON Schemas in `schemas/` (package data);
- `topics`: the topic names under `hub.topic_prefix`;
- `outbox`: the bounded SQLite store-and-forward queue (an event is deleted only on PUBACK);
- `client`: `HubClient`, the paho-mqtt 2.x client (availability, retained state, outbox
  draining, commands validated and handed to a `CommandHandler`).

Only aggregates leave the device: no module here ever sees a frame or an audio block.
May import: device.config, device.errors, device.labels, paho-mqtt. Not device.store or the
pipeline (the daemon passes windows and summaries in).
"""

from device.hub.client import CommandHandler, HubClient, RateLimitedLog, default_secrets_dir, parse_command
from device.hub.outbox import Outbox, OutboxEntry, OutboxError
from device.hub.topics import Topics

__all__ = ["CommandHandler", "HubClient", "Outbox", "OutboxEntry", "OutboxError", "RateLimitedLog", "Topics",
           "default_secrets_dir", "parse_command"]
