"""Stores a batch of MQTT messages in one transaction: raw events, rejections, devices, typed rows.

For each message, in arrival order (intake.classify says what it is):
- an accepted event of an approved device goes into `events_raw` with `INSERT ... ON CONFLICT
  DO NOTHING`; a new row is derived into the typed tables (derive.py) in the same transaction;
  an `event_id` already held is a duplicate and dropped; a `(device_id, session_id, seq)` held
  under another `event_id` is a device bug and rejected (`seq_conflict`);
- an event of a device not (or no longer) approved is kept in `rejected` (`unapproved` /
  `revoked`) with its payload, so an approval can replay it (admission.py);
- an invalid message goes to `rejected` with its code and reason;
- availability updates the device row.
Every device seen gets a `devices` row (pending unless admission is off).

Nothing here acks: the collector acks the batch after `store` returned, i.e. after COMMIT. If
anything fails the transaction rolls back as a whole and `store` raises; the collector retries
the same batch, which is safe because every step is idempotent.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import SQLAlchemyError

from device.contract.timestamps import utc_timestamp
from hub import schema
from hub.config import HubConfig
from hub.db import insert_ignoring_conflicts
from hub.derive import derive
from hub.intake import Accepted, Availability, Ignored, Rejected, classify

log = logging.getLogger("affectbox.hub.writer")


@dataclass
class Delivery:
    """One message as the network thread received it."""

    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 1
    received_at: str = field(default_factory=utc_timestamp)
    generation: int = 0  # the connection it arrived on (acks never cross a reconnect)


@dataclass
class Totals:
    """What the writer did, by outcome (`stored`, `duplicate`, `rejected:<code>`, ...)."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, other: Totals) -> None:
        self.counts.update(other.counts)


class Writer:
    def __init__(self, engine: Engine, config: HubConfig) -> None:
        self.engine = engine
        self.root = config.mqtt.topic_root
        self.max_bytes = config.ingest.max_payload_bytes
        self.require_approval = config.admission.require_approval

    def store(self, batch: list[Delivery]) -> Totals:
        """Store the batch in one transaction (raises on a database error: nothing was stored).

        A failure that is not the database's (a bug meeting an unforeseen payload) must not turn
        the message into a poison that crashes every restart: the batch is stored again with a
        savepoint per message, and the one that fails goes to `rejected` (`internal`).
        """
        try:
            with self.engine.begin() as conn:
                return self.store_in(conn, batch)
        except SQLAlchemyError:
            raise
        except Exception:
            log.exception("a message of this batch could not be stored; storing them one by one")
        with self.engine.begin() as conn:
            return self.store_in(conn, batch, guarded=True)

    def store_in(self, conn: Connection, batch: list[Delivery], guarded: bool = False) -> Totals:
        totals = Totals()
        verdicts = [classify(self.root, d.topic, d.payload, self.max_bytes) for d in batch]
        admission = self._devices(conn, {v.device_id for v in verdicts if getattr(v, "device_id", None)},
                                  batch[-1].received_at if batch else utc_timestamp())
        for delivery, verdict in zip(batch, verdicts, strict=True):
            if not guarded:
                totals.counts[self._one(conn, delivery, verdict, admission)] += 1
                continue
            try:
                with conn.begin_nested():
                    outcome = self._one(conn, delivery, verdict, admission)
            except SQLAlchemyError:
                raise
            except Exception as exc:
                outcome = self._reject(conn, delivery, "internal", f"the hub failed to store it ({type(exc).__name__}: "
                                       f"{' '.join(str(exc).split())[:200]})", getattr(verdict, "device_id", None))
            totals.counts[outcome] += 1
        return totals

    def _devices(self, conn: Connection, device_ids: set[str], now: str) -> dict[str, str]:
        """Register unknown devices (pending), refresh last_seen; return each one's admission."""
        if not device_ids:
            return {}
        initial = "pending" if self.require_approval else "approved"
        for device_id in sorted(device_ids):  # sorted: concurrent collectors lock rows in one order
            conn.execute(insert_ignoring_conflicts(conn, schema.devices).values(
                device_id=device_id, admission=initial, first_seen=now, last_seen=now,
                approved_at=None if self.require_approval else now))
        d = schema.devices.c
        # FOR SHARE (PostgreSQL): an approval's UPDATE waits for this batch, so it replays what the batch
        # held back; collectors sharing a subscription do not block each other on it
        rows = conn.execute(select(d.device_id, d.admission, d.last_seen).where(d.device_id.in_(sorted(device_ids)))
                            .with_for_update(read=True)).all()
        # last_seen to the minute: a row write per batch would serialise collectors on the device rows
        stale = sorted(device_id for device_id, _, seen in rows if seen[:16] < now[:16])
        if stale:
            conn.execute(update(schema.devices).where(d.device_id.in_(stale), d.last_seen < now).values(last_seen=now))
        return {device_id: state for device_id, state, _ in rows}

    def _reject(self, conn: Connection, delivery: Delivery, code: str, reason: str, device_id: str | None,
                keep_payload: bool = True) -> str:
        conn.execute(schema.rejected.insert().values(
            received_at=delivery.received_at, topic=delivery.topic[:256], device_id=device_id, code=code,
            reason=reason, size=len(delivery.payload), payload=delivery.payload if keep_payload else None))
        return f"rejected:{code}"

    def _one(self, conn: Connection, delivery: Delivery, verdict: object, admission: dict[str, str]) -> str:
        if isinstance(verdict, Ignored):
            return "ignored"
        if isinstance(verdict, Rejected):
            return self._reject(conn, delivery, verdict.code, verdict.reason, verdict.device_id,
                                verdict.keep_payload)
        if isinstance(verdict, Availability):
            conn.execute(update(schema.devices).where(schema.devices.c.device_id == verdict.device_id).values(
                availability=verdict.value, availability_at=delivery.received_at))
            return "availability"
        assert isinstance(verdict, Accepted)
        state = admission.get(verdict.device_id, "pending")
        if state != "approved":
            code = "revoked" if state == "revoked" else "unapproved"
            return self._reject(conn, delivery, code, f"device {verdict.device_id!r} is {state}, not approved",
                                verdict.device_id)
        p = verdict.payload
        row = {"event_id": p["event_id"], "device_id": p["device_id"], "session_id": p["session_id"],
               "kind": verdict.kind, "seq": p["seq"], "schema_version": p["schema"], "ts": p["ts"],
               "received_at": delivery.received_at, "topic": delivery.topic,
               "payload": delivery.payload.decode("utf-8")}
        # RETURNING rather than rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING
        inserted = conn.execute(insert_ignoring_conflicts(conn, schema.events_raw).values(**row).returning(
            schema.events_raw.c.event_id)).first()
        if inserted is not None:
            derive(conn, row)
            return "stored"
        held = conn.execute(select(schema.events_raw.c.event_id).where(
            schema.events_raw.c.event_id == p["event_id"])).scalar()
        if held is not None:
            return "duplicate"
        return self._reject(conn, delivery, "seq_conflict",
                            f"seq {p['seq']} of session {p['session_id']!r} is already held under another event_id",
                            verdict.device_id)
