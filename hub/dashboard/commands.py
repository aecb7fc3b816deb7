"""Start and stop a session at a device from the dashboard, through the device's MQTT commands.

The dashboard publishes `cmd/start_session` or `cmd/stop_session` (QoS 1, not retained) with a
fresh request id and records it in `commands_sent` (who, when, which patient). The device's
answer (`cmd/<name>/result`) is stored by the collector in `command_results` like every other
event; the Devices page shows it by request id, or "waiting" until it arrives. The dashboard
therefore needs no subscription: one short-lived publishing connection per command, with the
hub's broker credentials (`[mqtt]`) under its own client id (`<client_id>-dash`).
"""

from __future__ import annotations

import json
import ssl
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import Engine, select

from device.contract.timestamps import utc_timestamp
from device.contract.topics import validate_device_id
from device.errors import AffectboxError
from device.mqtt_sockets import close_client_sockets
from hub import schema
from hub.config import HubConfig

COMMANDS = ("start_session", "stop_session")
CONNECT_TIMEOUT_S = 10.0


class CommandError(AffectboxError):
    """The command could not be sent (broker unreachable, refused); the message says why."""


def publish_once(config: HubConfig, topic: str, body: bytes, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Connect, publish at QoS 1, wait for the broker's PUBACK, disconnect."""
    m = config.mqtt
    v5 = m.protocol == "mqtt5"
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"{m.client_id[:59]}-dash",
                         protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311)
    if m.tls == "on":
        context = ssl.create_default_context(cafile=m.ca_file or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if m.cert_file:
            context.load_cert_chain(m.cert_file, m.key_file)
        client.tls_set_context(context)
    if m.username:
        password = Path(m.password_file).read_text(encoding="utf-8").strip() if m.password_file else None
        client.username_pw_set(m.username, password)
    try:
        client.connect(m.host, config.broker_port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot reach the broker at {m.host}:{config.broker_port} ({exc})") from None
    client.loop_start()
    try:
        info = client.publish(topic, body, qos=1)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise CommandError(f"the broker at {m.host}:{config.broker_port} did not accept the command "
                               f"within {timeout_s:g} s")
    finally:
        client.disconnect()
        client.loop_stop()
        close_client_sockets(client)


def send(engine: Engine, config: HubConfig, device_id: str, command: str, username: str, *,
         patient_id: str | None = None, max_duration_s: float | None = None) -> str:
    """Publish one command and record it; returns its request id."""
    validate_device_id(device_id)
    if command not in COMMANDS:
        raise CommandError(f"command must be one of {', '.join(COMMANDS)} (got {command!r})")
    request_id = f"dash-{uuid.uuid4().hex[:24]}"
    body: dict[str, Any] = {"request_id": request_id}
    if command == "start_session":
        body["patient_id"] = patient_id
        if max_duration_s is not None:
            body["max_duration_s"] = max_duration_s
    with engine.begin() as conn:
        conn.execute(schema.commands_sent.insert().values(request_id=request_id, device_id=device_id,
                                                          command=command, patient_id=patient_id,
                                                          username=username, sent_at=utc_timestamp()))
    try:
        publish_once(config, f"{config.mqtt.topic_root}/{device_id}/cmd/{command}", json.dumps(body).encode())
    except Exception:
        with engine.begin() as conn:  # never sent: not shown as awaited
            conn.execute(schema.commands_sent.delete().where(schema.commands_sent.c.request_id == request_id))
        raise
    return request_id


def recent(engine: Engine, device_id: str, waited_since: str, limit: int = 10) -> list[dict[str, Any]]:
    """The device's latest dashboard commands with their results; a command sent before
    `waited_since` (UTC ISO) without a result is reported as unanswered."""
    c, r = schema.commands_sent.c, schema.command_results.c
    query = (select(c.request_id, c.command, c.patient_id, c.username, c.sent_at, r.ok, r.result, r.received_at)
             .select_from(schema.commands_sent.outerjoin(schema.command_results, r.request_id == c.request_id))
             .where(c.device_id == device_id).order_by(c.sent_at.desc()).limit(limit))
    with engine.connect() as conn:
        rows = [dict(x) for x in conn.execute(query).mappings()]
    for row in rows:
        result = json.loads(row["result"]) if row["result"] else None
        if row["ok"] is None:
            row["outcome"] = "waiting for the device" if row["sent_at"] >= waited_since else \
                "no answer (device offline or busy; the broker may still deliver it)"
        elif row["ok"]:
            row["outcome"] = "done" + (f": session {result.get('session_id')}" if isinstance(result, dict)
                                       and result.get("session_id") else "")
        else:
            row["outcome"] = "refused: " + (result.get("message", "") if isinstance(result, dict) else str(result))
        row["waiting"] = row["ok"] is None and row["sent_at"] >= waited_since
    return rows
