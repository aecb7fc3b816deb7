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
    add_dashboard_commands(sub, command)
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


# ---- the dashboard (hub/dashboard/): people, serving, audit, exports -------------------------------------------

def _password(args: argparse.Namespace) -> str:
    import getpass

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AffectboxError("the two passwords differ")
    return first


def cmd_user(args: argparse.Namespace) -> int:
    from hub.dashboard import accounts

    engine = _engine(_config(args))
    if args.user_command == "add":
        accounts.add_user(engine, args.username, args.role, _password(args))
        print(f"user {args.username} added ({args.role})")
    elif args.user_command == "passwd":
        accounts.set_password(engine, args.username, _password(args))
        print(f"password of {args.username} changed")
    elif args.user_command in ("disable", "enable"):
        accounts.set_active(engine, args.username, args.user_command == "enable")
        print(f"user {args.username} {args.user_command}d")
    else:
        _print(accounts.list_users(engine), args.json)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from hub.dashboard.server import serve

    config = _config(args)
    logging.basicConfig(level=config.service.log_level.upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    serve(config, _engine(config))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from hub.dashboard import audit

    _print(audit.read(_engine(_config(args)), patient_id=args.patient, username=args.user, limit=args.limit), args.json)
    return 0


def cmd_fhir(args: argparse.Namespace) -> int:
    from hub.dashboard import fhir
    from hub.dashboard.app import questionnaires
    from hub.dashboard.records import clinic_ref, patient_sessions

    config = _config(args)
    engine = _engine(config)
    with engine.connect() as conn:
        points = patient_sessions(conn, args.patient)
        document = fhir.bundle(args.patient, clinic_ref(conn, args.patient), points,
                               questionnaires(conn, args.patient))
    fhir.validate(document)
    if args.out:
        args.out.write_text(json.dumps(document, indent=1), encoding="utf-8")
        print(f"{len(document['entry'])} entries written to {args.out}")
    if args.deliver:
        d = config.dashboard
        if not d.fhir_url:
            raise AffectboxError("dashboard.fhir_url is not set")
        token = Path(d.fhir_token_file).read_text(encoding="utf-8").strip() if d.fhir_token_file else None
        answer = fhir.deliver(document, d.fhir_url, token)
        print(f"delivered {len(document['entry'])} entries to {d.fhir_url}: "
              f"{len(answer.get('entry') or [])} answered")
    from hub.dashboard import audit

    audit.record(engine, args.as_user, "export", patient_id=args.patient, target="FHIR (command line)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hub.dashboard import audit, research

    engine = _engine(_config(args))
    with engine.connect() as conn:
        rows = research.table(conn, args.level, with_mapping=args.mapping)
    with args.out.open("wb") as out:
        research.write(rows, out, args.format, args.level, args.mapping)
    args.out.with_suffix(".codebook.md").write_text(research.codebook_markdown(), encoding="utf-8")
    audit.record(engine, args.as_user, "export", target=f"research {args.level}.{args.format} (command line)"
                 + (" with clinic mapping" if args.mapping else ""))
    print(f"{len(rows)} rows written to {args.out} (codebook beside it)")
    return 0


def add_dashboard_commands(sub: Any, command: Any) -> None:
    """The dashboard's subcommands (`user`, `dashboard`, `audit`, `fhir`, `export`)."""
    from hub.dashboard.accounts import ROLES
    from hub.dashboard.research import LEVELS

    user = command("user", cmd_user, "dashboard accounts: add, passwd, list, disable, enable")
    usub = user.add_subparsers(dest="user_command", required=True)
    for name, text in (("add", "add a person"), ("passwd", "set a new password"), ("disable", "stop a login"),
                       ("enable", "allow a disabled login again"), ("list", "every account")):
        p = usub.add_parser(name, help=text)
        p.add_argument("--config", type=Path, default=argparse.SUPPRESS)
        if name != "list":
            p.add_argument("username")
        if name == "add":
            p.add_argument("--role", choices=ROLES, required=True)
        if name in ("add", "passwd"):
            p.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
        if name == "list":
            p.add_argument("--json", action="store_true")
    command("dashboard", cmd_dashboard, "serve the clinicians' dashboard until stopped")
    audit_p = command("audit", cmd_audit, "who viewed or exported which patient's data")
    audit_p.add_argument("--patient")
    audit_p.add_argument("--user")
    audit_p.add_argument("--limit", type=int, default=200)
    audit_p.add_argument("--json", action="store_true")
    fhir_p = command("fhir", cmd_fhir, "a patient's sessions and scores as a FHIR R4 transaction Bundle")
    fhir_p.add_argument("patient")
    fhir_p.add_argument("--out", type=Path)
    fhir_p.add_argument("--deliver", action="store_true", help="POST it to dashboard.fhir_url (idempotent)")
    fhir_p.add_argument("--as-user", default="cli", help="name recorded in the audit log")
    export_p = command("export", cmd_export, "a research table (window, session or patient-month)")
    export_p.add_argument("level", choices=LEVELS)
    export_p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    export_p.add_argument("--out", type=Path, required=True)
    export_p.add_argument("--mapping", action="store_true", help="add the clinic reference (administrators)")
    export_p.add_argument("--as-user", default="cli", help="name recorded in the audit log")
