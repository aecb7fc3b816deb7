"""The collector: one paho-mqtt client with a persistent session, one writer thread, acks after commit.

- Identity: a fixed client id (`mqtt.client_id`); MQTT 5 with clean start off and a session
  expiry of days (`mqtt.session_expiry_s`), or MQTT 3.1.1 with clean session off, so the broker
  queues every QoS 1 message while the hub is away and resends what was not acked when it
  comes back. Subscriptions are QoS 1 and renewed on every connect (idempotent; a changed
  filter list takes effect), with `$share/<group>/` when several collectors share the load.
- `manual_ack`: paho's network thread only puts each message on a bounded queue with its
  message id and the connection it came on. One writer thread takes batches (at most
  `ingest.batch_max`, never more than the broker's in-flight window), stores each batch in one
  transaction (writer.py) and only after COMMIT acks its messages, in arrival order. Messages of
  an earlier connection are stored but not acked (the broker resends them on the new one, where
  their message ids may belong to other messages); their copies are dropped as duplicates.
- On a database error nothing is acked: the writer retries the same batch with exponential
  backoff (`ingest.retry_min_s` .. `retry_max_s`). The broker stops sending when the in-flight
  window is full, so the backlog waits in the broker, not in memory. If the process dies,
  whatever was not acked is redelivered to the next one.
- The main thread sends sd_notify READY/STATUS/WATCHDOG and runs the completeness checker.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from device.contract.timestamps import utc_timestamp
from device.credentials import CredentialError, read_secret
from device.errors import AffectboxError
from device.mqtt_sockets import close_client_sockets
from hub.config import HubConfig
from hub.db import one_line
from hub.intake import subscriptions
from hub.writer import Delivery, Totals, Writer

log = logging.getLogger("affectbox.hub.collector")


class CollectorError(AffectboxError):
    """The collector cannot be set up (TLS or credential files)."""


def _read_secret(path: str, what: str) -> str:
    try:
        return read_secret(path, what)
    except CredentialError as exc:
        raise CollectorError(str(exc)) from None


class Collector:
    """Receives, stores and acks; `start()`, then `stop()`."""

    def __init__(self, config: HubConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.writer = Writer(engine, config)
        self.totals = Totals()
        self.queue: queue.Queue[Delivery] = queue.Queue(maxsize=config.ingest.queue_max)
        self.generation = 0
        self.connected = False
        self.db_ok = True
        self.db_error: str | None = None
        self.last_beat = time.monotonic()
        self.acked = 0
        self._ack_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="affectbox-hub-writer", daemon=True)
        self.client = self._make_client()

    # ---- MQTT ----------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        m = self.config.mqtt
        v5 = m.protocol == "mqtt5"
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=m.client_id,
                             protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
                             clean_session=None if v5 else False, manual_ack=True)
        client.reconnect_delay_set(max(1, round(m.reconnect_min_s)), max(1, round(m.reconnect_max_s)))
        if m.tls == "on":
            context = ssl.create_default_context(cafile=m.ca_file or None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if m.cert_file:
                try:
                    context.load_cert_chain(m.cert_file, m.key_file)
                except (OSError, ssl.SSLError) as exc:
                    raise CollectorError(f"mqtt.cert_file: cannot load {m.cert_file} with its key ({exc})") from None
            client.tls_set_context(context)
        if m.username:
            password = _read_secret(m.password_file, "mqtt.password_file") if m.password_file else None
            client.username_pw_set(m.username, password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        with self._ack_lock:
            self.generation += 1
            self.connected = True
        log.info("connected to the broker (session present: %s)", flags.session_present)
        m = self.config.mqtt
        if m.protocol == "mqtt5":
            # retain handling 1: retained messages only for a new subscription, not at every reconnect
            options = SubscribeOptions(qos=1, retainHandling=1)
            topics = [(t, options) for t in subscriptions(m.topic_root, m.share_group)]
        else:
            topics = [(t, 1) for t in subscriptions(m.topic_root, m.share_group)]
        client.subscribe(topics)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        with self._ack_lock:
            self.connected = False
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # the only work on the network thread: a bounded queue keeps memory bounded (the broker's
        # in-flight window bounds it first)
        self.queue.put(Delivery(message.topic, bytes(message.payload), message.mid, message.qos, utc_timestamp(),
                                self.generation))

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish a command (QoS 1); False when paho refused it (not connected)."""
        info = self.client.publish(topic, payload, qos=1)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    # ---- the writer ------------------------------------------------------------------------------

    def _next_batch(self) -> list[Delivery]:
        try:
            batch = [self.queue.get(timeout=0.5)]
        except queue.Empty:
            return []
        while len(batch) < self.config.ingest.batch_max:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write_loop(self) -> None:
        ingest = self.config.ingest
        while not self._stop.is_set():
            self.last_beat = time.monotonic()
            batch = self._next_batch()
            if not batch:
                continue
            delay = ingest.retry_min_s
            while True:
                try:
                    totals = self.writer.store(batch)
                    break
                except SQLAlchemyError as exc:
                    message = one_line(exc)
                    if self.db_ok or message != self.db_error:
                        log.error("database error; nothing acked, retrying in %.1f s: %s", delay, message)
                    self.db_ok, self.db_error = False, message
                    if self._stop.wait(delay):
                        return  # stopping: not acked, so the broker keeps it for the next start
                    self.last_beat = time.monotonic()
                    delay = min(delay * 2, ingest.retry_max_s)
            if not self.db_ok:
                log.info("database works again")
            self.db_ok, self.db_error = True, None
            self.totals.add(totals)
            self._ack(batch)

    def _ack(self, batch: list[Delivery]) -> None:
        """PUBACK each message of the current connection, in arrival order (after COMMIT)."""
        with self._ack_lock:
            for delivery in batch:
                if delivery.qos > 0 and delivery.generation == self.generation and self.connected:
                    self.client.ack(delivery.mid, delivery.qos)
                    self.acked += 1

    # ---- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        m = self.config.mqtt
        properties = None
        if m.protocol == "mqtt5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = m.session_expiry_s
            properties.ReceiveMaximum = m.receive_maximum
            kwargs: dict[str, Any] = {"clean_start": False, "properties": properties}
        else:
            kwargs = {}
        self._thread.start()
        self.client.connect_async(m.host, self.config.broker_port, keepalive=m.keepalive, **kwargs)
        self.client.loop_start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand (stored and acked), then disconnect; the session stays on the broker."""
        self._stop.set()
        self._thread.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        close_client_sockets(self.client)

    def healthy(self, stale_s: float = 30.0) -> bool:
        return self._thread.is_alive() and time.monotonic() - self.last_beat < stale_s

    def status_line(self) -> str:
        c = self.totals.counts
        rejected = sum(v for k, v in c.items() if k.startswith("rejected"))
        db = "ok" if self.db_ok else f"error ({self.db_error})"
        return (f"{'connected' if self.connected else 'disconnected'}; stored {c['stored']}, duplicates "
                f"{c['duplicate']}, rejected {rejected}; waiting {self.queue.qsize()}; database {db}")
