"""Device admission: pending until an administrator approves; approve writes credentials and the ACL.

A device the hub has never been told about appears as `pending` with its first message; its
events are held in `rejected` (code `unapproved`, payload kept). `approve` admits it:
- with `--csr FILE` (from `affectbox provision`), signs the CSR with the clinic CA in
  `admission.ca_dir` (openssl; the CA key never leaves the hub) after checking that its common
  name is the device id, and writes the certificate (the broker maps the certificate's CN to the
  user name: `use_identity_as_username true`);
- with `--password-out FILE`, issues a random broker password (`mosquitto_passwd` into
  `admission.broker_password_file`) and writes it, mode 0600, for the device's credential file;
- rewrites the broker ACL (`admission.acl_file`): each approved device may read and write only
  `<root>/<device_id>/#`, the hub reads everything and writes commands; then runs
  `admission.reload_command` (e.g. `systemctl reload mosquitto`);
- replays the device's held events through the normal writer (same transaction as the approval).
`revoke` marks the device revoked, removes its password, rewrites the ACL (so the broker refuses
its topics) and reloads; its later events are rejected (`revoked`).
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import Engine, select, update

from device.contract.ids import is_opaque_id
from device.contract.timestamps import utc_timestamp
from device.errors import AffectboxError
from hub import schema
from hub.config import HubConfig
from hub.db import insert_ignoring_conflicts
from hub.writer import Delivery, Totals, Writer


class AdmissionError(AffectboxError):
    """An approval or revocation cannot be done; the message says why."""


def _check_id(device_id: str) -> None:
    if not is_opaque_id(device_id):
        raise AdmissionError(f"device id {device_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ -")


def _run(args: list[str], what: str) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise AdmissionError(f"{what}: {args[0]} is not installed") from None
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout).split())[:300]
        raise AdmissionError(f"{what} failed: {detail}")
    return result.stdout


def _atomic_write(path: Path, text: str, mode: int = 0o640) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def acl_text(config: HubConfig, approved: list[str]) -> str:
    root = config.mqtt.topic_root
    lines = ["# Written by `affectbox-hub device approve/revoke`; edits here are overwritten.",
             f"user {config.admission.hub_username}", f"topic read {root}/#", f"topic write {root}/+/cmd/#", ""]
    for device_id in approved:
        lines += [f"user {device_id}", f"topic readwrite {root}/{device_id}/#", ""]
    return "\n".join(lines)


def write_acl(engine: Engine, config: HubConfig) -> Path | None:
    """Rewrite the ACL file from the approved devices (None when no ACL file is configured)."""
    if not config.admission.acl_file:
        return None
    with engine.connect() as conn:
        approved = list(conn.execute(select(schema.devices.c.device_id).where(
            schema.devices.c.admission == "approved").order_by(schema.devices.c.device_id)).scalars())
    path = Path(config.admission.acl_file)
    _atomic_write(path, acl_text(config, approved))
    return path


def _reload(config: HubConfig) -> None:
    if config.admission.reload_command:
        _run(shlex.split(config.admission.reload_command), "admission.reload_command")


def sign_csr(config: HubConfig, device_id: str, csr: Path, cert_out: Path) -> None:
    ca_dir = config.admission.ca_dir
    if not ca_dir:
        raise AdmissionError("signing a CSR needs admission.ca_dir (the clinic CA's ca.crt and ca.key)")
    ca_crt, ca_key = Path(ca_dir) / "ca.crt", Path(ca_dir) / "ca.key"
    for path in (ca_crt, ca_key, csr):
        if not path.is_file():
            raise AdmissionError(f"{path}: not found")
    _run(["openssl", "req", "-in", str(csr), "-noout", "-verify"], f"{csr}: CSR signature check")
    subject = _run(["openssl", "req", "-in", str(csr), "-noout", "-subject", "-nameopt", "multiline"], str(csr))
    names = [line.split("=", 1)[1].strip() for line in subject.splitlines() if line.strip().startswith("commonName")]
    if names != [device_id]:
        raise AdmissionError(f"{csr}: the CSR's common name is {names[0] if names else 'missing'!r}, "
                             f"not the device id {device_id!r}")
    with tempfile.TemporaryDirectory() as tmp:
        ext = Path(tmp) / "ext.cnf"
        ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=clientAuth\n")
        _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
              "-CAcreateserial", "-CAserial", str(Path(ca_dir) / "ca.srl"), "-days", str(config.admission.cert_days),
              "-sha256", "-extfile", str(ext), "-out", str(cert_out)], "signing the CSR")


def issue_password(config: HubConfig, device_id: str, password_out: Path) -> None:
    passwd_file = config.admission.broker_password_file
    if not passwd_file:
        raise AdmissionError("issuing a password needs admission.broker_password_file")
    if shutil.which("mosquitto_passwd") is None:
        raise AdmissionError("mosquitto_passwd is not installed (Debian package mosquitto)")
    password = secrets.token_urlsafe(24)
    Path(passwd_file).parent.mkdir(parents=True, exist_ok=True)
    Path(passwd_file).touch(mode=0o640, exist_ok=True)
    _run(["mosquitto_passwd", "-b", passwd_file, device_id, password], "mosquitto_passwd")
    _atomic_write(password_out, password + "\n", mode=0o600)


def approve(engine: Engine, config: HubConfig, device_id: str, *, csr: Path | None = None,
            cert_out: Path | None = None, password_out: Path | None = None) -> Totals:
    """Admit a device (see the module docstring); returns what replaying its held events stored."""
    _check_id(device_id)
    credential = None
    if csr is not None:
        sign_csr(config, device_id, csr, cert_out or csr.with_suffix(".crt"))
        credential = "certificate"
    if password_out is not None:
        issue_password(config, device_id, password_out)
        credential = "password" if credential is None else "certificate+password"
    now = utc_timestamp()
    writer = Writer(engine, config)
    r = schema.rejected.c
    with engine.begin() as conn:
        conn.execute(insert_ignoring_conflicts(conn, schema.devices).values(
            device_id=device_id, admission="pending", first_seen=now, last_seen=now))
        values = {"admission": "approved", "approved_at": now, "revoked_at": None}
        if credential:
            values["credential"] = credential
        conn.execute(update(schema.devices).where(schema.devices.c.device_id == device_id).values(**values))
        held = conn.execute(select(r.id, r.topic, r.payload, r.received_at).where(
            r.device_id == device_id, r.code == "unapproved", r.readmitted_at.is_(None)).order_by(r.id)).all()
        totals = writer.store_in(conn, [Delivery(topic, payload, received_at=received_at)
                                        for _, topic, payload, received_at in held]) if held else Totals()
        if held:
            conn.execute(update(schema.rejected).where(r.id.in_([row[0] for row in held])).values(readmitted_at=now))
    write_acl(engine, config)
    _reload(config)
    return totals


def revoke(engine: Engine, config: HubConfig, device_id: str) -> None:
    _check_id(device_id)
    with engine.begin() as conn:
        found = conn.execute(update(schema.devices).where(schema.devices.c.device_id == device_id).values(
            admission="revoked", revoked_at=utc_timestamp())).rowcount
    if not found:
        raise AdmissionError(f"device {device_id!r} is not known to this hub")
    passwd_file = config.admission.broker_password_file
    if passwd_file and Path(passwd_file).is_file() and shutil.which("mosquitto_passwd"):
        text = Path(passwd_file).read_text(encoding="utf-8")
        if any(line.split(":", 1)[0] == device_id for line in text.splitlines()):
            _run(["mosquitto_passwd", "-D", passwd_file, device_id], "mosquitto_passwd -D")
    write_acl(engine, config)
    _reload(config)
