"""The clinic hub: collects every affectbox device's MQTT reports into one record, exactly once.

Data flow (each module one job):

    MQTT (Mosquitto, persistent session, QoS 1, manual ack)
      -> collector.py   paho callbacks only enqueue; one writer thread stores and acks
      -> intake.py      topic + payload -> an accepted event or a rejection with its reason
                        (size bound, JSON, schema version and JSON Schema from device.contract)
      -> writer.py      one transaction per batch: events_raw (append-only, keyed by event_id),
                        rejected, devices; then derive.py fills the typed tables
      -> derive.py      devices, sessions, windows, summaries, status history from raw events
      -> completeness.py  per-session gaps; asks devices to `resend` what is missing

Around it: config.py (typed TOML), db.py + schema.py + migrations/ (SQLAlchemy Core 2, Alembic;
SQLite or PostgreSQL), admission.py (pending devices, approve/revoke, broker ACL, CA signing),
backup.py (backup, restore), migrate.py (SQLite -> PostgreSQL), cli.py (`affectbox-hub`).

The hub imports the device-to-hub contract from `device.contract` (never redefines it) and
nothing else of the device's runtime except `device.health`'s sd_notify and `device.config`'s
typed-section validator; it never needs numpy, OpenCV or the models.
"""

from device import __version__  # one version for the whole distribution (pyproject.toml)

__all__ = ["__version__"]
