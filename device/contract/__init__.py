"""The device-to-hub contract: topics, payload builders and versions, JSON Schemas, id rules (docs/MQTT.md).

Both sides import it unchanged: the device's uplink (`device.uplink`) publishes what it builds,
and the clinic hub (`hub/`) validates what it receives against the same schemas.

- `ids`: the opaque-id rule for device, patient and session ids;
- `topics`: the topic names under `hub.topic_prefix`;
- `timestamps`: the one UTC timestamp format (`2025-01-31T09:15:02.123Z`) of every payload, API
  answer and export, with its formatter `utc_timestamp` and parser `parse_utc_timestamp`;
- `payloads`: builders for every payload, `SCHEMA_VERSION`, the kinds, and the schemas in
  `schemas/` (package data).

May import: device.labels, device.errors and the standard library only (no pipeline, no store,
no paho), so a hub-side service can use it without the device's runtime.
"""
