"""`affectbox-hub`: run the collector, admit devices, inspect completeness, back up, restore, migrate.

Every failure is one line on stderr (`affectbox-hub: error: ...`) and exit status 2; nothing
here prints a secret.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from device.errors import AffectboxError
from device.health import SystemdNotifier
from hub import __version__, schema
from hub.config import DEFAULT_CONFIG_PATH, HubConfig, load_config

log = logging.getLogger("affectbox.hub")


def _config(args: argparse.Namespace) -> HubConfig:
    path = args.config
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    return load_config(path)


_ENGINES: list[Any] = []


def _engine(config: HubConfig) -> Any:
    from hub.db import make_engine, upgrade

    engine = make_engine(config.database)
    _ENGINES.append(engine)
    upgrade(engine)
    return engine


def cmd_run(args: argparse.Namespace) -> int:
    from hub.collector import Collector
    from hub.completeness import Checker

    config = _config(args)
    logging.basicConfig(level=config.service.log_level.upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    engine = _engine(config)
    collector = Collector(config, engine)
    checker = Checker(config, engine, collector.publish) if config.completeness.enabled else None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    notifier = SystemdNotifier()
    collector.start()
    notifier.ready()
    log.info("affectbox-hub %s collecting from %s:%d as %s", __version__, config.mqtt.host, config.broker_port,
             config.mqtt.client_id)
    next_check = time.monotonic() + min(config.completeness.check_every_s, config.completeness.quiet_s)
    try:
        while not stop.wait(min(config.service.status_every_s, 1.0)):
            if collector.healthy():
                notifier.watchdog()
            notifier.status(collector.status_line())
            if checker is not None and time.monotonic() >= next_check and collector.connected:
                next_check = time.monotonic() + config.completeness.check_every_s
                try:
                    checker.run_once()
                except Exception as exc:  # the database may be down: the writer reports it; try later
                    log.warning("completeness check failed: %s", " ".join(str(exc).split())[:200])
    finally:
        notifier.stopping()
        collector.stop()
        log.info("stopped: %s", collector.status_line())
    return 0


def cmd_validate_config(args: argparse.Namespace) -> int:
    _config(args)
    print("config ok")
    return 0


def _print(rows: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=1, default=str))
        return
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))


def cmd_devices(args: argparse.Namespace) -> int:
    engine = _engine(_config(args))
    d = schema.devices.c
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(d.device_id, d.admission, d.availability, d.last_seen,
                                                     d.software_version, d.credential).order_by(d.device_id))
                .mappings()]
    _print(rows, args.json)
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from hub.admission import approve

    config = _config(args)
    totals = approve(_engine(config), config, args.device_id, csr=args.csr, cert_out=args.cert_out,
                     password_out=args.password_out)
    held = sum(totals.counts.values())
    print(f"device {args.device_id} approved; {held} held events replayed ({totals.counts['stored']} stored)")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from hub.admission import revoke

    config = _config(args)
    revoke(_engine(config), config, args.device_id)
    print(f"device {args.device_id} revoked")
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    from hub.completeness import report

    rows = report(_engine(_config(args)), args.device, incomplete_only=args.incomplete)
    _print(rows, args.json)
    return 0


def cmd_rejected(args: argparse.Namespace) -> int:
    engine = _engine(_config(args))
    r = schema.rejected.c
    with engine.connect() as conn:
        rows = [dict(x) for x in conn.execute(select(r.id, r.received_at, r.device_id, r.code, r.reason, r.size)
                                              .order_by(r.id.desc()).limit(args.limit)).mappings()]
    _print(rows, args.json)
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from hub.derive import rebuild

    engine = _engine(_config(args))
    with engine.begin() as conn:
        count = rebuild(conn)
    print(f"derived tables rebuilt from {count} raw events")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from hub.db import make_engine
    from hub.migrate import migrate

    config = _config(args)
    counts = migrate(_engine(config), make_engine(args.to))
    print("migrated and verified: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from hub.backup import backup

    out = backup(_engine(_config(args)), args.out)
    print(f"backup written to {out}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from hub.backup import restore

    restore(args.backup, args.to)
    print(f"restored {args.backup} into {args.to.split('@')[-1]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="affectbox-hub", description="The affectbox clinic hub's collector.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", type=Path, default=None, help=f"TOML config (default {DEFAULT_CONFIG_PATH})")
        p.set_defaults(func=func)
        return p

    command("run", cmd_run, "collect device reports until stopped (the systemd service)")
    command("validate-config", cmd_validate_config, "check the config and exit")
    device = command("device", None, "list, approve or revoke devices")
    dsub = device.add_subparsers(dest="device_command", required=True)
    listing = dsub.add_parser("list", help="every device the hub knows, with its admission")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_devices)
    ok = dsub.add_parser("approve", help="admit a device: credentials, broker ACL, replay its held events")
    ok.add_argument("device_id")
    ok.add_argument("--csr", type=Path, help="the device's CSR (affectbox provision) to sign with the clinic CA")
    ok.add_argument("--cert-out", type=Path, help="where the signed certificate goes (default: CSR name .crt)")
    ok.add_argument("--password-out", type=Path, help="issue a broker password and write it here (mode 0600)")
    ok.set_defaults(func=cmd_approve)
    no = dsub.add_parser("revoke", help="withdraw a device's admission (ACL, password)")
    no.add_argument("device_id")
    no.set_defaults(func=cmd_revoke)
    for p in (listing, ok, no):
        p.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    sessions = command("sessions", cmd_sessions, "sessions with their completeness (gaps, missing windows)")
    sessions.add_argument("--device")
    sessions.add_argument("--incomplete", action="store_true", help="only incomplete sessions")
    sessions.add_argument("--json", action="store_true")
    rejected = command("rejected", cmd_rejected, "the newest rejected messages and why")
    rejected.add_argument("--limit", type=int, default=50)
    rejected.add_argument("--json", action="store_true")
    command("rebuild", cmd_rebuild, "re-derive the typed tables from the raw events")
    migrate = command("migrate", cmd_migrate, "copy this hub's record into another database and verify it")
    migrate.add_argument("--to", required=True, help="target URL, e.g. postgresql://hub@db.clinic/affectbox")
    backup = command("backup", cmd_backup, "write a consistent backup (SQLite online backup or pg_dump)")
    backup.add_argument("out", type=Path)
    restore = command("restore", cmd_restore, "restore a backup into a new SQLite file or an empty PostgreSQL")
    restore.add_argument("backup", type=Path)
    restore.add_argument("--to", required=True, help="target URL (sqlite:////new/file.db or postgresql://...)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is None and not hasattr(args, "config"):
        args.config = None
    try:
        return args.func(args)
    except AffectboxError as exc:
        print(f"affectbox-hub: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        from hub.db import give_back_sqlite_files

        for engine in _ENGINES:
            engine.dispose()
            give_back_sqlite_files(engine)
