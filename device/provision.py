"""Provisioning: write one device's identity, hub endpoint and secrets, and check the hub link step by step.

`affectbox provision` (device/cli.py) is a thin wrapper around this module:

- `config_skeleton()`: the commented `/etc/affectbox/config.toml` that setup.sh installs.
- `set_config_values()`: edit a TOML document in place, line by line, for the keys provisioning
  manages (device id, site, room, [hub] endpoint and credential names), keeping every other
  key and comment; the result is parsed and validated before it is written (atomically, 0644).
- Secrets never go in the config: the MQTT password, the status page's password hash and the
  TLS client key are files in the credentials folder (`/etc/affectbox/credentials`, 0700,
  files 0600, written with `credentials.write_secret`). systemd hands them to the daemon with
  `LoadCredential=` under fixed names (`web-password`, `hub-password`, `hub-key`; see
  hardware/affectbox.service). Secret input files that other users can read are refused.
- The client key is made here with the `openssl` command and never leaves the device; only the
  certificate signing request (CSR, subject CN = device id) is handed out, and the signed
  certificate comes back with `--client-cert`, checked to match the key.
- `run_check()`: loads the config and runs the hub check (`device.hub_check.check_hub`), which
  names the first step of the link to the broker that fails (DNS, TCP, TLS, auth, ACL).
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from device.atomic import check_output_path, write_text_atomic
from device.config import (
    DEFAULT_CONFIG_PATH,
    HUB_DEFAULT_PORTS,
    Config,
    config_from_dict,
    describe_defaults,
    hub_plaintext_problem,
    parse_toml,
)
from device.credentials import (
    MIN_PASSWORD_LENGTH,
    CredentialError,
    credentials_folder,
    hash_password,
    read_secret,
    write_secret,
)
from device.errors import AffectboxError, ConfigError
from device.hub_check import HubCheck, check_hub, hub_secrets_dir
from device.identity import DEVICE_ID_RE, device_id_path, resolve_device_id, store_device_id

# Credential names the systemd unit loads (LoadCredential=); the config refers to them by name.
HUB_PASSWORD_CREDENTIAL = "hub-password"
HUB_KEY_CREDENTIAL = "hub-key"
WEB_PASSWORD_CREDENTIAL = "web-password"
# Public files next to the config.
CA_FILE_NAME = "hub-ca.crt"
CLIENT_CERT_NAME = "hub-client.crt"
CSR_NAME = "hub-client.csr"
OPENSSL_TIMEOUT_S = 60.0
MAX_LABEL_CHARS = 80


class ProvisionError(AffectboxError):
    """Provisioning input or a provisioning step is not acceptable; the message says which and why."""


# ---- the config file -----------------------------------------------------------------------------


def config_skeleton() -> str:
    """Every section and key of `affectbox show-config`, each assignment commented out (defaults apply)."""
    lines = ["# affectbox appliance configuration, installed by setup.sh and filled in by `affectbox provision`.",
             "# Keys left commented out keep their defaults (`affectbox show-config` lists them all).",
             "# Secrets never go here: they are files in /etc/affectbox/credentials/ (0700).",
             "# affectbox supports clinical judgment; it does not diagnose."]
    for line in describe_defaults().splitlines()[1:]:
        if line and not line.startswith(("#", "[")):
            line = f"# {line}"
        lines.append(line)
    return "\n".join(lines) + "\n"


_SECTION_RE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$")


def toml_value(value: Any) -> str:
    """One TOML value (string, bool, int, float or list of those) as written in the config."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's string escapes are valid in a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _section_ranges(lines: list[str]) -> dict[str, tuple[int, int]]:
    """section name -> (index of its header line, index after its last line); the first header wins."""
    headers = [(i, m.group(1)) for i, line in enumerate(lines) if (m := _SECTION_RE.match(line))]
    ranges: dict[str, tuple[int, int]] = {}
    for k, (i, name) in enumerate(headers):
        end = headers[k + 1][0] if k + 1 < len(headers) else len(lines)
        ranges.setdefault(name, (i, end))
    return ranges


def _set_one(lines: list[str], section: str, key: str, value: Any) -> list[str]:
    ranges = _section_ranges(lines)
    assignment = re.compile(rf"^\s*{re.escape(key)}\s*=")
    commented = re.compile(rf"^\s*#\s*{re.escape(key)}\s*=")
    if section not in ranges:
        if value is None:
            return lines
        while lines and not lines[-1].strip():
            lines = lines[:-1]
        return [*lines, "", f"[{section}]", f"{key} = {toml_value(value)}"]
    start, end = ranges[section]
    for i in range(start + 1, end):
        if assignment.match(lines[i]):
            if value is None:
                return lines[:i] + lines[i + 1:]
            return [*lines[:i], f"{key} = {toml_value(value)}", *lines[i + 1:]]
    if value is None:
        return lines
    at = next((i + 1 for i in range(start + 1, end) if commented.match(lines[i])), None)
    if at is None:
        at = start + 1
        for i in range(start + 1, end):
            if lines[i].strip():
                at = i + 1
    return [*lines[:at], f"{key} = {toml_value(value)}", *lines[at:]]


def set_config_values(text: str, values: dict[str, dict[str, Any]], source: str = "config") -> str:
    """`text` with each `values[section][key]` set (None: removed), everything else kept as it was.

    The result is parsed back and validated; a document this line editor cannot change safely
    (say a managed key written as a multi-line value or an inline table) is a ProvisionError.
    """
    lines = text.splitlines()
    for section, pairs in values.items():
        for key, value in pairs.items():
            lines = _set_one(lines, section, key, value)
    new = "\n".join(lines) + "\n"
    try:
        raw = parse_toml(new, source)
    except ConfigError as exc:
        raise ProvisionError(f"{source}: cannot update it automatically ({exc}); edit it by hand or move it away "
                             "and run setup.sh again for a fresh skeleton") from None
    for section, pairs in values.items():
        for key, value in pairs.items():
            got = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
            want = list(value) if isinstance(value, tuple) else value
            if got != want:
                raise ProvisionError(f"{source}: could not set {section}.{key} automatically (is it written in an "
                                     "unusual form?); edit it by hand")
    config_from_dict(raw, source)
    return new


def read_config_text(path: Path) -> str:
    """The config file's text; "" when it does not exist yet."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisionError(f"{path}: cannot read the config file ({exc})") from None


def parse_config_text(text: str, source: str) -> Config:
    """The validated config of `text` (the defaults for an empty document)."""
    try:
        raw = parse_toml(text, source)
    except ConfigError as exc:
        raise ProvisionError(str(exc)) from None
    return config_from_dict(raw, source)


# ---- inputs ------------------------------------------------------------------------------------------


def read_secret_input(path: str | os.PathLike[str], what: str) -> str:
    """A secret given as a file, read by the one rule (device.credentials.read_secret)."""
    try:
        return read_secret(path, what)
    except CredentialError as exc:
        raise ProvisionError(str(exc)) from None


def check_label(value: str, what: str) -> str:
    """A site or room label: one line of printable text, at most MAX_LABEL_CHARS characters."""
    value = value.strip()
    if len(value) > MAX_LABEL_CHARS or any(not c.isprintable() for c in value):
        raise ProvisionError(f"--{what}: must be one line of at most {MAX_LABEL_CHARS} printable characters "
                             f"(got {value!r})")
    return value


def check_host(host: str) -> str:
    """A broker host: a bare DNS name or IP address."""
    host = host.strip()
    if not host or len(host) > 253 or not re.fullmatch(r"[A-Za-z0-9.:_-]+|\[[0-9A-Fa-f:.]+\]", host):
        raise ProvisionError(f"--hub-host: must be a bare host name or IP address (got {host!r})")
    return host.strip("[]")


def _check_pem_certificates(path: Path, what: str) -> str:
    """The text of a PEM file that OpenSSL accepts as CA certificate(s)."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisionError(f"{path}: cannot read the {what} ({exc})") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ProvisionError(f"{path}: the {what} is not a PEM certificate (-----BEGIN CERTIFICATE-----)")
    if "PRIVATE KEY" in text:
        raise ProvisionError(f"{path}: the {what} contains a private key; give the certificate alone")
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ProvisionError(f"{path}: the {what} is not readable by OpenSSL ({exc})") from None
    return text


def _openssl(*args: str, what: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("openssl")
    if exe is None:
        raise ProvisionError("the openssl command is missing (Debian package openssl; setup.sh installs it)")
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=OPENSSL_TIMEOUT_S,
                              check=False, umask=0o077)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProvisionError(f"openssl: {what} failed ({exc})") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProvisionError(f"openssl: {what} failed: {last}")
    return done


def make_client_key(key_path: Path) -> None:
    """A new EC P-256 private key at `key_path` (0600), generated on this device by openssl."""
    check_output_path(key_path, overwrite=True)  # a symlink, FIFO or device there is refused, not replaced
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = key_path.with_name(f".{key_path.name}.{secrets.token_hex(4)}.tmp")
    try:
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(temporary),
                 what="making the client key")
        os.chmod(temporary, 0o600)
        os.replace(temporary, key_path)
    finally:
        temporary.unlink(missing_ok=True)


def make_csr(key_path: Path, csr_path: Path, device_id: str, site: str = "") -> None:
    """A certificate signing request for the key, subject CN = device id (O = affectbox, OU = site)."""
    subject = f"/O=affectbox/CN={device_id}"
    if site:
        cleaned = re.sub(r"[^A-Za-z0-9 ._-]", "_", site)[:64]
        subject = f"/O=affectbox/OU={cleaned}/CN={device_id}"
    check_output_path(csr_path, overwrite=True)
    temporary = csr_path.with_name(f".{csr_path.name}.{secrets.token_hex(4)}.tmp")
    try:
        _openssl("req", "-new", "-key", str(key_path), "-subj", subject, "-out", str(temporary),
                 what="making the certificate signing request")
        os.chmod(temporary, 0o644)
        os.replace(temporary, csr_path)
    finally:
        temporary.unlink(missing_ok=True)


def _public_key(*args: str, what: str) -> str:
    return _openssl(*args, what=what).stdout.strip()


def check_certificate_matches_key(cert_path: Path, key_path: Path) -> None:
    """Refuse a client certificate that is not for this device's key."""
    cert_key = _public_key("x509", "-in", str(cert_path), "-noout", "-pubkey", what=f"reading {cert_path}")
    own_key = _public_key("pkey", "-in", str(key_path), "-pubout", what="reading the client key")
    if cert_key != own_key:
        raise ProvisionError(f"{cert_path}: this certificate was not issued for this device's key "
                             f"(make a CSR with --make-csr and have it signed)")


# ---- provisioning --------------------------------------------------------------------------------------


@dataclass
class ProvisionRequest:
    """What to change; None = keep what the config has."""

    config_path: Path = DEFAULT_CONFIG_PATH
    credentials_dir: Path | None = None
    device_id: str | None = None
    site: str | None = None
    room: str | None = None
    hub_enabled: bool | None = None
    hub_host: str | None = None
    hub_port: int | None = None
    hub_tls: str | None = None
    hub_protocol: str | None = None
    allow_plaintext: bool = False
    ca_file: Path | None = None
    make_csr: bool = False
    new_key: bool = False
    client_cert: Path | None = None
    hub_username: str | None = None
    hub_password: str | None = None
    no_hub_auth: bool = False
    web_password: str | None = None


@dataclass
class ProvisionResult:
    """What was done, one line each, for the CLI to print."""

    device_id: str
    config_path: Path
    done: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: Config = field(default_factory=Config)


def provision(request: ProvisionRequest) -> ProvisionResult:
    """Apply `request`: secrets first (each atomically), then the config (atomically, validated)."""
    config_path = request.config_path
    creds = request.credentials_dir or credentials_folder(config_path)
    etc = config_path.resolve().parent
    text = read_config_text(config_path)
    current = parse_config_text(text, str(config_path))
    values: dict[str, dict[str, Any]] = {"device": {}, "hub": {}, "web": {}}
    done: list[str] = []
    notes: list[str] = []

    # identity
    if request.device_id is not None:
        if not DEVICE_ID_RE.fullmatch(request.device_id):
            raise ProvisionError(f"--device-id: must be 1-64 characters of A-Z a-z 0-9 . _ - "
                                 f"(got {request.device_id!r})")
        values["device"]["id"] = request.device_id
    if request.site is not None:
        values["device"]["site"] = check_label(request.site, "site")
    if request.room is not None:
        values["device"]["room"] = check_label(request.room, "room")

    # hub endpoint
    hub = values["hub"]
    if request.hub_enabled is not None:
        hub["enabled"] = request.hub_enabled
    if request.hub_host is not None:
        hub["host"] = check_host(request.hub_host)
        hub.setdefault("enabled", True)
    if request.hub_port is not None:
        if not 0 <= request.hub_port <= 65535:
            raise ProvisionError(f"--hub-port: must be between 0 and 65535 (got {request.hub_port})")
        hub["port"] = request.hub_port
    if request.hub_tls is not None:
        hub["tls"] = request.hub_tls
    if request.hub_protocol is not None:
        hub["protocol"] = request.hub_protocol
    if request.allow_plaintext:
        hub["allow_plaintext"] = True
    planned = dataclasses.replace(current.hub, **{k: v for k, v in hub.items() if v is not None})
    problem = hub_plaintext_problem(planned)
    if problem:
        raise ProvisionError(problem.replace("hub.allow_plaintext = true", "--allow-plaintext")
                             .replace('set hub.tls = "on"', "use --hub-tls on"))
    if planned.tls == "off":
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(current.hub, key):
                hub[key] = None
        if request.ca_file or request.client_cert or request.make_csr:
            raise ProvisionError("--ca-file, --make-csr and --client-cert need --hub-tls on")

    device_id = request.device_id or current.device.id or resolve_device_id(current.device)
    if request.device_id is not None and not current.device.id:
        # keep the stored id in step with the configured one (the config wins anyway)
        store_device_id(device_id_path(current.device), request.device_id, replace=True)

    # CA certificate (public: next to the config, 0644)
    if request.ca_file is not None:
        pem = _check_pem_certificates(request.ca_file, "CA certificate")
        target = etc / CA_FILE_NAME
        write_text_atomic(target, pem if pem.endswith("\n") else pem + "\n", mode=0o644)
        hub["ca_file"] = str(target)
        done.append(f"CA certificate copied to {target}")

    # client key and certificate
    key_path = creds / HUB_KEY_CREDENTIAL
    if request.make_csr:
        if request.new_key or not key_path.exists():
            make_client_key(key_path)
            done.append(f"client key made on this device: {key_path} (0600; it never leaves the device)")
        else:
            done.append(f"client key kept: {key_path}")
        csr = etc / CSR_NAME
        make_csr(key_path, csr, device_id, current.device.site if request.site is None else request.site)
        done.append(f"certificate signing request written: {csr} (CN={device_id})")
        notes.append(f"have {csr} signed by the clinic's CA, then run: affectbox provision --client-cert SIGNED.crt")
    if request.client_cert is not None:
        if not key_path.is_file():
            raise ProvisionError(f"--client-cert: there is no client key {key_path} yet; run affectbox provision "
                                 "--make-csr first")
        _check_pem_certificates(request.client_cert, "client certificate")
        check_certificate_matches_key(request.client_cert, key_path)
        target = etc / CLIENT_CERT_NAME
        write_text_atomic(target, request.client_cert.read_text(encoding="ascii"), mode=0o644)
        hub["cert_file"] = str(target)
        hub["key_file"] = HUB_KEY_CREDENTIAL
        done.append(f"client certificate installed: {target} (matches {key_path})")

    # user name and password
    if request.no_hub_auth:
        hub["username"] = None
        hub["password_file"] = None
        (creds / HUB_PASSWORD_CREDENTIAL).unlink(missing_ok=True)
        done.append("hub user name and password removed")
    if request.hub_username is not None:
        if not request.hub_username or any(not c.isprintable() for c in request.hub_username):
            raise ProvisionError(f"--hub-username: must be printable text (got {request.hub_username!r})")
        hub["username"] = request.hub_username
    if request.hub_password is not None:
        username = request.hub_username or current.hub.username
        if not username:
            raise ProvisionError("--hub-password-file: a password needs --hub-username")
        write_secret(creds / HUB_PASSWORD_CREDENTIAL, request.hub_password)
        hub["password_file"] = HUB_PASSWORD_CREDENTIAL
        done.append(f"hub password stored: {creds / HUB_PASSWORD_CREDENTIAL} (0600)")

    # status page password (hashed)
    if request.web_password is not None:
        name = current.web.password_file or WEB_PASSWORD_CREDENTIAL
        try:
            stored = hash_password(request.web_password)
        except CredentialError as exc:
            raise ProvisionError(f"status page password: {exc}") from None
        write_secret(creds / name, stored)
        values["web"]["password_file"] = name
        done.append(f"status page password stored as an scrypt hash: {creds / name} (0600)")
        if name != WEB_PASSWORD_CREDENTIAL:
            notes.append(f"web.password_file is {name!r}: add LoadCredential={name}:{creds / name} to the "
                         "service (systemctl edit affectbox.service)")

    values = {section: pairs for section, pairs in values.items() if pairs}
    if values:
        new_text = set_config_values(text or config_skeleton(), values, str(config_path))
        if new_text != text:
            config_path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(config_path, new_text, mode=0o644)
            changed = ", ".join(f"{s}.{k}" for s, pairs in values.items() for k in pairs)
            done.append(f"config updated: {config_path} ({changed})")
    final = parse_config_text(read_config_text(config_path), str(config_path)) if values else current
    if final.hub.enabled and final.hub.password_file and not (creds / final.hub.password_file).is_file():
        notes.append(f"hub.password_file names {final.hub.password_file!r}, but {creds / final.hub.password_file} "
                     "does not exist: give --hub-password-file")
    web_hash = creds / (final.web.password_file or WEB_PASSWORD_CREDENTIAL)
    if final.web.enabled and not web_hash.is_file():
        notes.append("no status page password yet: give --web-password-file (or run provision on a terminal)")
    return ProvisionResult(final.device.id or device_id, config_path, done, notes, final)


# ---- prompts -------------------------------------------------------------------------------------------


def _ask(prompt: str, default: str, stream: TextIO) -> str:
    shown = f" [{default}]" if default else ""
    print(f"{prompt}{shown}: ", end="", file=stream, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise ProvisionError("provisioning cancelled (end of input)")
    return line.strip() or default


def _ask_password(prompt: str, min_length: int = 1, stream: TextIO = sys.stderr) -> str:
    """A password typed twice without echo; "" when left empty. Too short: asked again."""
    for _ in range(3):
        first = getpass.getpass(f"{prompt}: ")
        if not first:
            return ""
        if len(first) < min_length:
            print(f"at least {min_length} characters, please", file=stream)
            continue
        if getpass.getpass("again: ") != first:
            raise ProvisionError("the two passwords differ; nothing was changed")
        return first
    raise ProvisionError(f"no password of at least {min_length} characters given; nothing was changed")


def fill_in_by_prompts(request: ProvisionRequest, stream: TextIO = sys.stderr) -> None:
    """Ask a person at a terminal for each value the flags left open (Enter keeps the shown value)."""
    current = parse_config_text(read_config_text(request.config_path), str(request.config_path))
    creds = request.credentials_dir or credentials_folder(request.config_path)
    print("affectbox provisioning (Enter keeps the value in brackets)", file=stream)
    if request.device_id is None:
        try:  # store a derived or generated id now, so that the one shown is the one kept
            shown = current.device.id or resolve_device_id(current.device)
        except AffectboxError:
            shown = resolve_device_id(current.device, persist=False)
        answer = _ask("device id", shown, stream)
        if answer != shown:
            request.device_id = answer
    if request.site is None:
        request.site = _ask("site label (no patient data)", current.device.site, stream)
    if request.room is None:
        request.room = _ask("room label (no patient data)", current.device.room, stream)
    if request.hub_host is None and request.hub_enabled is None:
        host = _ask("hub (MQTT broker) host name, or - for none", current.hub.host or "-", stream)
        if host == "-":
            request.hub_enabled = False
        else:
            request.hub_host = host
    if request.hub_enabled is not False:
        if request.hub_tls is None:
            request.hub_tls = _ask("TLS (on/off)", current.hub.tls, stream)
            if request.hub_tls not in ("on", "off"):
                raise ProvisionError(f"TLS must be on or off (got {request.hub_tls!r})")
        if request.hub_port is None:
            default_port = str(current.hub.port or HUB_DEFAULT_PORTS[request.hub_tls or current.hub.tls])
            answer = _ask("port", default_port, stream)
            try:
                request.hub_port = int(answer)
            except ValueError:
                raise ProvisionError(f"the port must be a number (got {answer!r})") from None
        tls_on = (request.hub_tls or current.hub.tls) == "on"
        if tls_on and request.ca_file is None:
            answer = _ask("CA certificate file of the broker (empty = the system's CAs)", "", stream)
            request.ca_file = Path(answer) if answer else None
        has_auth = request.make_csr or request.client_cert or request.hub_username or request.no_hub_auth
        if not has_auth:
            choices = "password" + ("/certificate" if tls_on else "") + "/none"
            mode = _ask(f"authentication ({choices})",
                        "certificate" if current.hub.key_file else ("password" if current.hub.username else "none"),
                        stream)
            if mode == "password":
                request.hub_username = _ask("MQTT user name", current.hub.username, stream)
                password = _ask_password("MQTT password (empty = keep the stored one)")
                if password:
                    request.hub_password = password
            elif mode == "certificate" and tls_on:
                answer = _ask("signed client certificate file (empty = make a key and CSR now)", "", stream)
                if answer:
                    request.client_cert = Path(answer)
                else:
                    request.make_csr = True
            elif mode == "none":
                request.no_hub_auth = bool(current.hub.username)
            else:
                raise ProvisionError(f"authentication must be one of {choices} (got {mode!r})")
    if request.web_password is None:
        exists = (creds / (current.web.password_file or WEB_PASSWORD_CREDENTIAL)).is_file()
        label = "status page password (empty = keep the stored one)" if exists else "status page password"
        password = _ask_password(label, MIN_PASSWORD_LENGTH, stream)
        if password:
            request.web_password = password


def run_check(config_path: Path, timeout_s: float) -> HubCheck:
    """Load the config, resolve the device id (without storing one) and check the hub."""
    config = parse_config_text(read_config_text(config_path), str(config_path))
    device_id = config.device.id or resolve_device_id(config.device, persist=False)
    return check_hub(config.hub, device_id, hub_secrets_dir(config_path), timeout_s)
