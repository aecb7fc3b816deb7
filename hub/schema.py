"""The hub's tables (SQLAlchemy Core), one definition for SQLite and PostgreSQL.

- `events_raw` is the source of truth: every accepted event (`session`, `mood`, `summary`,
  `info`, `status`, `command_result`), append-only, keyed by `event_id`, with the payload as
  received and the hub's receive time beside the device's `ts` (a Pi has no clock before NTP).
  `(device_id, session_id, seq)` is unique, which catches a device that reuses a seq under a new id.
- `rejected`: what was not accepted (invalid, unknown schema version, oversized, wrong device,
  unapproved device), with the reason; acked so a poison message never stalls the stream.
- `devices` holds admission (pending / approved / revoked) and the last availability; the rest
  of its columns and every other table are derived from `events_raw` (derive.py) and can be
  rebuilt from it (`affectbox-hub rebuild`, and the migration's check).
- `resend_requests`: what the hub asked devices to resend (completeness.py).

Times are UTC ISO-8601 strings with milliseconds (`device.contract.timestamps.utc_timestamp`),
which sort as text on both databases.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

ID = String(64)
TIME = String(32)

events_raw = Table(
    "events_raw", metadata,
    Column("event_id", String(36), primary_key=True),
    Column("device_id", ID, nullable=False),
    Column("session_id", ID, nullable=True),
    Column("kind", String(16), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("ts", TIME, nullable=False),
    Column("received_at", TIME, nullable=False),
    Column("topic", String(256), nullable=False),
    Column("payload", Text, nullable=False),
    UniqueConstraint("device_id", "session_id", "seq", name="events_raw_stream_seq"),
)
Index("events_raw_by_session", events_raw.c.device_id, events_raw.c.session_id, events_raw.c.seq)

rejected = Table(
    "rejected", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", TIME, nullable=False),
    Column("topic", String(256), nullable=False),
    Column("device_id", ID, nullable=True),  # from the topic, when it names a valid id
    Column("code", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=True),  # None when oversized (not kept)
    Column("readmitted_at", TIME, nullable=True),  # set when an approval replayed it
)
Index("rejected_by_device", rejected.c.device_id, rejected.c.code)

devices = Table(
    "devices", metadata,
    Column("device_id", ID, primary_key=True),
    Column("admission", String(16), nullable=False),  # pending | approved | revoked
    Column("first_seen", TIME, nullable=False),
    Column("last_seen", TIME, nullable=False),
    Column("approved_at", TIME, nullable=True),
    Column("revoked_at", TIME, nullable=True),
    Column("credential", String(16), nullable=True),  # certificate | password
    Column("availability", String(16), nullable=True),
    Column("availability_at", TIME, nullable=True),
    Column("software_version", String(64), nullable=True),
    Column("info_event_id", String(36), nullable=True),
    Column("status_event_id", String(36), nullable=True),
    Column("status_state", String(32), nullable=True),
    Column("outbox_dropped", Text, nullable=True),  # JSON of status.outbox.dropped
)

sessions = Table(
    "sessions", metadata,
    Column("device_id", ID, primary_key=True),
    Column("session_id", ID, primary_key=True),
    Column("patient_id", ID, nullable=True),
    Column("started_ts", TIME, nullable=True),
    Column("started_received_at", TIME, nullable=True),
    Column("end_event", String(16), nullable=True),  # ended | interrupted
    Column("end_reason", Text, nullable=True),
    Column("ended_ts", TIME, nullable=True),
    Column("ended_received_at", TIME, nullable=True),
    Column("duration_s", Float, nullable=True),
    Column("windows_reported", Integer, nullable=True),  # from the end event or the summary
    Column("last_received_at", TIME, nullable=False),
    Column("complete", Boolean, nullable=False, default=False),
    Column("incomplete_reason", Text, nullable=True),
)

windows = Table(
    "windows", metadata,
    Column("device_id", ID, primary_key=True),
    Column("session_id", ID, primary_key=True),
    Column("window_index", Integer, primary_key=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("seq", BigInteger, nullable=False),
    Column("start_s", Float, nullable=False),
    Column("end_s", Float, nullable=False),
    Column("has_mood", Boolean, nullable=False),
    Column("dominant", String(16), nullable=True),
    Column("valence", Float, nullable=True),
    Column("arousal", Float, nullable=True),
    Column("probs", Text, nullable=True),  # JSON
    Column("received_at", TIME, nullable=False),
)

summaries = Table(
    "summaries", metadata,
    Column("device_id", ID, primary_key=True),
    Column("session_id", ID, primary_key=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("seq", BigInteger, nullable=False),
    Column("patient_id", ID, nullable=True),
    Column("duration_s", Float, nullable=True),
    Column("windows", Integer, nullable=False),
    Column("windows_with_mood", Integer, nullable=True),
    Column("dominant", String(16), nullable=True),
    Column("valence", Float, nullable=True),
    Column("arousal", Float, nullable=True),
    Column("valence_sd", Float, nullable=True),
    Column("arousal_sd", Float, nullable=True),
    Column("received_at", TIME, nullable=False),
)

status_history = Table(
    "status_history", metadata,
    Column("event_id", String(36), primary_key=True),
    Column("device_id", ID, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", TIME, nullable=False),
    Column("received_at", TIME, nullable=False),
    Column("state", String(32), nullable=False),
    Column("active_session_id", ID, nullable=True),
    Column("outbox_depth", Integer, nullable=True),
    Column("outbox_dropped", Text, nullable=True),
)
Index("status_by_device", status_history.c.device_id, status_history.c.seq)

command_results = Table(
    "command_results", metadata,
    Column("event_id", String(36), primary_key=True),
    Column("device_id", ID, nullable=False),
    Column("command", String(32), nullable=True),
    Column("request_id", String(64), nullable=True),
    Column("ok", Boolean, nullable=False),
    Column("result", Text, nullable=True),  # JSON of result or error
    Column("received_at", TIME, nullable=False),
)
Index("command_results_by_request", command_results.c.request_id)

resend_requests = Table(
    "resend_requests", metadata,
    Column("request_id", String(64), primary_key=True),
    Column("device_id", ID, nullable=False),
    Column("session_id", ID, nullable=False),
    Column("from_window", Integer, nullable=False),
    Column("to_window", Integer, nullable=False),
    Column("session_events", Boolean, nullable=False),
    Column("sent_at", TIME, nullable=False),
    Column("outcome", String(16), nullable=True),  # ok | gone | error (from the command result)
    Column("detail", Text, nullable=True),
)
Index("resend_by_session", resend_requests.c.device_id, resend_requests.c.session_id)

# tables derived from events_raw (emptied and refilled by a rebuild), in delete order
DERIVED = (windows, summaries, status_history, command_results, sessions)

# ---- the dashboard's own tables (hub/dashboard/, migration 0002): not derived from events_raw ----------------
# People, their actions and what clinicians entered. Never sent to devices; `patient_refs` is the
# sensitive mapping from a device's opaque patient id to the clinic's own reference.

users = Table(
    "users", metadata,
    Column("username", ID, primary_key=True),
    Column("role", String(16), nullable=False),  # clinician | administrator
    Column("password_hash", String(256), nullable=False),  # device.credentials scrypt line
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", TIME, nullable=False),
    Column("password_changed_at", TIME, nullable=False),
    Column("disabled_at", TIME, nullable=True),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", TIME, nullable=False),
    Column("username", ID, nullable=True),  # None for a failed login with an unknown name
    Column("action", String(32), nullable=False),  # login | view | export | command | admin ...
    Column("patient_id", ID, nullable=True),
    Column("target", String(256), nullable=True),  # what was viewed or exported (a path, a format)
    Column("client", String(64), nullable=True),
)
Index("audit_by_patient", audit_log.c.patient_id, audit_log.c.at)

patient_refs = Table(
    "patient_refs", metadata,
    Column("patient_id", ID, primary_key=True),
    Column("clinic_ref", String(128), nullable=False),
    Column("updated_at", TIME, nullable=False),
    Column("updated_by", ID, nullable=False),
)

review_acks = Table(
    "review_acks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", ID, nullable=False),
    Column("flag_key", String(160), nullable=False),  # device_id/session_id of the session that raised it
    Column("at", TIME, nullable=False),
    Column("username", ID, nullable=False),
    Column("note", Text, nullable=False),
    UniqueConstraint("patient_id", "flag_key", name="review_acks_once"),
)

questionnaires = Table(
    "questionnaires", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", ID, nullable=False),
    Column("instrument", String(8), nullable=False),  # PHQ-9 | GAD-7
    Column("total", Integer, nullable=False),
    Column("taken_on", String(10), nullable=False),  # ISO date
    Column("entered_by", ID, nullable=False),
    Column("entered_at", TIME, nullable=False),
)
Index("questionnaires_by_patient", questionnaires.c.patient_id, questionnaires.c.taken_on)

commands_sent = Table(
    "commands_sent", metadata,
    Column("request_id", String(64), primary_key=True),
    Column("device_id", ID, nullable=False),
    Column("command", String(32), nullable=False),
    Column("patient_id", ID, nullable=True),
    Column("username", ID, nullable=False),
    Column("sent_at", TIME, nullable=False),
)

DASHBOARD_TABLES = (users, audit_log, patient_refs, review_acks, questionnaires, commands_sent)
