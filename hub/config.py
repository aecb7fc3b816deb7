"""The hub's typed configuration: TOML in, frozen dataclasses out, every bad key named.

Validation is the device's (`device.config`: the same field metadata, the same one-line error
per bad key, unknown keys refused), applied to the hub's own sections. Secrets (the broker
password) live in credential files named here, never in the file itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.config import _opt, build_config, read_config_file
from device.contract.ids import is_opaque_id

DEFAULT_CONFIG_PATH = Path("/etc/affectbox-hub/config.toml")
DEFAULT_DATABASE_URL = "sqlite:////var/lib/affectbox-hub/hub.db"


@dataclass(frozen=True)
class MqttConfig:
    """The collector's connection to the clinic's broker."""

    host: str = _opt("127.0.0.1", "broker host name or address")
    port: int = _opt(0, "broker port; 0 = 8883 with TLS, 1883 without", min=0, max=65535)
    protocol: str = _opt("mqtt5", "MQTT protocol version", choices=("mqtt5", "mqtt311"))
    client_id: str = _opt("affectbox-hub-1", "fixed, unique client id (the persistent session is keyed on it)")
    session_expiry_s: int = _opt(7 * 86400, "how long the broker keeps the session (and queues for it) while "
                                            "the hub is away (MQTT 5)", min=60, max=90 * 86400)
    keepalive: int = _opt(30, "MQTT keep-alive in seconds", min=5, max=3600)
    receive_maximum: int = _opt(100, "messages in flight from the broker before it waits for acks (MQTT 5)",
                                min=1, max=65535)
    tls: str = _opt("on", "TLS to the broker", choices=("on", "off"))
    ca_file: str = _opt("", "CA certificate that signed the broker's certificate; empty = system CAs")
    cert_file: str = _opt("", "client certificate for the hub (optional)")
    key_file: str = _opt("", "the client certificate's key file")
    username: str = _opt("", "user name at the broker (optional)")
    password_file: str = _opt("", "file holding the broker password (a credential file, never the password here)")
    topic_root: str = _opt("affectbox", "first topic level of every device (devices use <root>/<device_id>/...)")
    share_group: str = _opt("", "subscribe as member of $share/<group>/... so several collectors share the "
                                "load; empty = a plain subscription")
    reconnect_min_s: float = _opt(1.0, "first reconnect delay", min=0.1, max=600)
    reconnect_max_s: float = _opt(30.0, "longest reconnect delay", min=0.1, max=3600)


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the record lives: SQLite (one file, WAL) or PostgreSQL."""

    url: str = _opt(DEFAULT_DATABASE_URL, "SQLAlchemy URL: sqlite:////path/hub.db or "
                                          "postgresql+psycopg://user@host/db (password in password_file)")
    password_file: str = _opt("", "file holding the database password (PostgreSQL)")
    busy_timeout_ms: int = _opt(10000, "SQLite: wait this long for a lock", min=0, max=600000)


@dataclass(frozen=True)
class IngestConfig:
    """The writer: bounds and retries."""

    max_payload_bytes: int = _opt(262144, "larger payloads are rejected unread", min=1024, max=16 * 1024 * 1024)
    batch_max: int = _opt(100, "messages stored per transaction (at most receive_maximum)", min=1, max=10000)
    queue_max: int = _opt(10000, "messages waiting for the writer before the network thread waits",
                          min=10, max=1_000_000)
    retry_min_s: float = _opt(0.2, "first retry delay after a database error", min=0.01, max=60)
    retry_max_s: float = _opt(30.0, "longest retry delay after database errors", min=0.01, max=3600)


@dataclass(frozen=True)
class AdmissionConfig:
    """Which devices are listened to, and the broker files the hub writes for them."""

    require_approval: bool = _opt(True, "events of a device are held in `rejected` until "
                                        "`affectbox-hub device approve` admits it")
    acl_file: str = _opt("", "Mosquitto ACL file the hub rewrites on approve/revoke; empty = none")
    broker_password_file: str = _opt("", "Mosquitto password file (mosquitto_passwd); empty = none")
    ca_dir: str = _opt("", "folder with the clinic CA (ca.crt, ca.key) that signs device CSRs")
    hub_username: str = _opt("affectbox-hub", "the collector's user name in the ACL (read every device's "
                                              "topics, write commands)")
    reload_command: str = _opt("", "run after the ACL or password file changed, e.g. "
                                   "'systemctl reload mosquitto'; empty = none")
    cert_days: int = _opt(825, "validity of a signed device certificate", min=1, max=3650)


@dataclass(frozen=True)
class CompletenessConfig:
    """Asking devices for what the hub is missing (`cmd/resend`)."""

    enabled: bool = _opt(True, "ask devices to resend missing session events")
    check_every_s: float = _opt(60.0, "how often sessions are checked", min=0.5, max=86400)
    quiet_s: float = _opt(120.0, "a session is checked once nothing arrived for it this long", min=0.1, max=86400)
    max_attempts: int = _opt(5, "requests per session before it is reported incomplete", min=1, max=100)
    retry_after_s: float = _opt(300.0, "wait this long for a request's effect before asking again",
                                min=0.5, max=86400)


@dataclass(frozen=True)
class ServiceConfig:
    """The process."""

    log_level: str = _opt("info", "log level", choices=("debug", "info", "warning", "error"))
    status_every_s: float = _opt(10.0, "sd_notify STATUS and watchdog interval", min=0.5, max=3600)


@dataclass(frozen=True)
class DashboardConfig:
    """The clinicians' dashboard (`affectbox-hub dashboard`, hub/dashboard/)."""

    bind: str = _opt("127.0.0.1", "address the dashboard listens on (behind the clinic's TLS proxy)")
    port: int = _opt(8480, "dashboard port", min=1, max=65535)
    session_minutes: float = _opt(30.0, "a login expires this long after it was made", min=1, max=24 * 60)
    login_attempts_per_minute: int = _opt(5, "failed logins per client and minute", min=1, max=1000)
    login_failures_overall_per_minute: int = _opt(60, "failed logins from all clients per minute", min=1, max=100000)
    secret_key_file: str = _opt("", "file with the key for CSRF tokens (a credential file); empty = random "
                                    "per start (logins end at a restart anyway)")
    silent_after_s: float = _opt(180.0, "a device marked online but heard from longer ago than this is shown "
                                        "as silent (devices send their status every 30 s)", min=10, max=7 * 86400)
    command_wait_s: float = _opt(30.0, "how long a start/stop command's result is awaited", min=1, max=600)
    baseline_sessions: int = _opt(8, "review rule: sessions that make a patient's baseline", min=2, max=100)
    ewma_lambda: float = _opt(0.3, "review rule: EWMA weight of the newest session", min=0.01, max=1.0)
    ewma_limit_sds: float = _opt(3.0, "review rule: lower control limit in baseline SDs", min=0.5, max=10)
    run_length: int = _opt(2, "review rule: sessions below the limit in a row that suggest a review",
                           min=1, max=20)
    min_coverage: float = _opt(0.3, "review rule: sessions with less mood coverage do not count", min=0, max=1)
    fhir_url: str = _opt("", "FHIR R4 server base URL for `affectbox-hub fhir --deliver`; empty = none")
    fhir_token_file: str = _opt("", "file with a bearer token for the FHIR server (a credential file)")
    chromium: str = _opt("/usr/bin/chromium", "headless Chromium that prints the PDF reports")


@dataclass(frozen=True)
class HubConfig:
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    completeness: CompletenessConfig = field(default_factory=CompletenessConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)

    @property
    def broker_port(self) -> int:
        return self.mqtt.port or (8883 if self.mqtt.tls == "on" else 1883)


def _validate_relations(config: HubConfig, errors: list[str]) -> None:
    m = config.mqtt
    if not is_opaque_id(m.client_id):
        errors.append(f"mqtt.client_id: must be 1-64 characters of A-Z a-z 0-9 . _ - (got {m.client_id!r})")
    if not m.topic_root or any(c in m.topic_root for c in "#+") or m.topic_root.startswith(("/", "$")) \
            or m.topic_root.endswith("/"):
        errors.append(f"mqtt.topic_root: must be topic levels without wildcards, '$' or a leading or trailing "
                      f"'/' (got {m.topic_root!r})")
    if m.share_group and not is_opaque_id(m.share_group):
        errors.append(f"mqtt.share_group: must be 1-64 characters of A-Z a-z 0-9 . _ - (got {m.share_group!r})")
    if m.reconnect_min_s > m.reconnect_max_s:
        errors.append("mqtt.reconnect_min_s: must not exceed mqtt.reconnect_max_s")
    if bool(m.cert_file) != bool(m.key_file):
        errors.append("mqtt.cert_file: cert_file and key_file go together")
    if config.ingest.retry_min_s > config.ingest.retry_max_s:
        errors.append("ingest.retry_min_s: must not exceed ingest.retry_max_s")
    if config.ingest.batch_max > m.receive_maximum:
        errors.append(f"ingest.batch_max: must not exceed mqtt.receive_maximum ({m.receive_maximum}): a batch "
                      "waits for messages the broker only sends after acks")
    url = config.database.url
    if not url.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
        errors.append(f"database.url: must start with sqlite:/// or postgresql:// (got {url.split(':', 1)[0]!r})")
    elif "@" in url and ":" in url.split("://", 1)[1].split("@", 1)[0]:
        errors.append("database.url: must not contain a password; put it in database.password_file")


def config_from_dict(raw: dict[str, Any], source: str = "config") -> HubConfig:
    """Validate a parsed TOML document; raise ConfigError naming every bad key."""
    return build_config(HubConfig, raw, source, _validate_relations)


def load_config(path: str | Path | None) -> HubConfig:
    """Load and validate a TOML file; `None` gives the defaults."""
    if path is None:
        return config_from_dict({}, "defaults")
    return config_from_dict(read_config_file(path), str(path))
