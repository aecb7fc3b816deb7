"""The installer's subcommands, `affectbox provision` and `affectbox selftest`: flags, prompts, output.

The work is done by device/provision.py and device/selftest.py; this module parses the command
line, asks a person at a terminal for what the flags left open, prints one line per step and
chooses the exit code (0 fine, 1 a check failed, 2 bad input, as everywhere in the CLI).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from device.cli_args import bounded
from device.config import DEFAULT_CONFIG_PATH, load_config
from device.errors import AffectboxError
from device.notice import NOTICE_SHORT as NOTICE

# Flags that change something (anything else is --check, --json, --timeout, --no-prompt, paths).
_CHANGE_FLAGS = ("device_id", "site", "room", "hub_host", "no_hub", "hub_port", "hub_tls", "hub_protocol",
                 "allow_plaintext", "ca_file", "make_csr", "new_key", "client_cert", "hub_username",
                 "hub_password_file", "no_hub_auth", "web_password_file")


_positive_seconds = bounded(float, 0.1, 600, "a number of seconds", " seconds")
_port = bounded(int, 0, 65535, "a port number")


def _os_error(exc: OSError) -> AffectboxError:
    where = f"{exc.filename}: " if exc.filename else ""
    if isinstance(exc, PermissionError):
        return AffectboxError(f"{where}permission denied; provisioning writes /etc/affectbox and the state "
                              "folder: run it as root (sudo)")
    return AffectboxError(f"{where}{exc.strerror or exc}")


def cmd_provision(args: argparse.Namespace) -> int:
    from device import provision as prov
    from device.hub_check import format_check

    config_path = Path(args.config)
    changes = any(getattr(args, name) not in (None, False) for name in _CHANGE_FLAGS)
    interactive = sys.stdin.isatty() and not args.no_prompt and (changes or not args.check)
    request = prov.ProvisionRequest(
        config_path=config_path,
        credentials_dir=Path(args.credentials_dir) if args.credentials_dir else None,
        device_id=args.device_id, site=args.site, room=args.room,
        hub_enabled=False if args.no_hub else None, hub_host=args.hub_host, hub_port=args.hub_port,
        hub_tls=args.hub_tls, hub_protocol=args.hub_protocol, allow_plaintext=args.allow_plaintext,
        ca_file=Path(args.ca_file) if args.ca_file else None, make_csr=args.make_csr, new_key=args.new_key,
        client_cert=Path(args.client_cert) if args.client_cert else None, hub_username=args.hub_username,
        no_hub_auth=args.no_hub_auth,
    )
    if args.hub_password_file:
        request.hub_password = prov.read_secret_input(args.hub_password_file, "hub password")
    if args.web_password_file:
        request.web_password = prov.read_secret_input(args.web_password_file, "status page password")
    out = sys.stderr if args.json else sys.stdout
    try:
        if interactive:
            prov.fill_in_by_prompts(request)
        if changes or interactive or not args.check:
            result = prov.provision(request)
            print(f"device id: {result.device_id}", file=out)
            for line in result.done:
                print(f"ok: {line}", file=out)
            if not result.done:
                print("ok: nothing to change", file=out)
            for line in result.notes:
                print(f"next: {line}", file=out)
            if result.done:
                print("next: systemctl restart affectbox.service (to apply), then: affectbox selftest", file=out)
    except OSError as exc:
        raise _os_error(exc) from None
    if not args.check:
        return 0
    check = prov.run_check(config_path, args.timeout)
    if args.json:
        print(json.dumps(check.to_json()))
    else:
        for line in format_check(check):
            print(line)
    return 0 if check.ok else 1


def add_provision_parser(sub: Any) -> None:
    """Register `affectbox provision`."""
    p = sub.add_parser(
        "provision", help="set this device's identity, hub endpoint and secrets (as root); --check tests the hub",
        description="Write /etc/affectbox/config.toml (no secrets) and the secret files in "
                    "/etc/affectbox/credentials/ (0600). Values not given are asked for on a terminal, "
                    "or kept. --check connects to the hub and names the step that fails (DNS, TCP, TLS, "
                    "auth, ACL).")
    p.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="the config file to write (default: %(default)s)")
    p.add_argument("--credentials-dir", help="folder of the secret files (default: credentials/ next to the config)")
    p.add_argument("--device-id", help="set the device id (default: derived from the Pi serial or generated once)")
    p.add_argument("--site", help="site label (free text, no patient data)")
    p.add_argument("--room", help="room label (free text, no patient data)")
    hub = p.add_argument_group("hub (MQTT broker)")
    where = hub.add_mutually_exclusive_group()
    where.add_argument("--hub-host", help="the broker's host name or IP address (enables the hub link)")
    where.add_argument("--no-hub", action="store_true", help="disable the hub link (keeps its settings)")
    hub.add_argument("--hub-port", type=_port, help="the broker's port (0 = 8883 with TLS, 1883 without)")
    hub.add_argument("--hub-tls", choices=("on", "off"), help="TLS with certificate verification (default on)")
    hub.add_argument("--hub-protocol", choices=("mqtt5", "mqtt311"), help="MQTT version (default mqtt5)")
    hub.add_argument("--allow-plaintext", action="store_true",
                     help="allow --hub-tls off to a broker on another machine (trusted, isolated networks only)")
    hub.add_argument("--ca-file", help="PEM file of the CA that signed the broker's certificate (copied)")
    auth = hub.add_mutually_exclusive_group()
    auth.add_argument("--make-csr", action="store_true",
                      help="make a client key on this device (kept) and a certificate signing request to sign")
    auth.add_argument("--client-cert", help="install the signed client certificate (must match the device's key)")
    auth.add_argument("--no-hub-auth", action="store_true", help="remove the hub user name and password")
    hub.add_argument("--new-key", action="store_true", help="with --make-csr: replace an existing client key")
    hub.add_argument("--hub-username", help="MQTT user name")
    hub.add_argument("--hub-password-file", help="file holding the MQTT password (must not be readable by others)")
    p.add_argument("--web-password-file", help="file holding the status page password (stored as a hash)")
    p.add_argument("--no-prompt", action="store_true", help="never ask, even on a terminal (fleet scripts)")
    p.add_argument("--check", action="store_true", help="then connect to the hub and report each step")
    p.add_argument("--timeout", type=_positive_seconds, default=5.0, help="seconds per network step of --check")
    p.add_argument("--json", action="store_true", help="print the --check result as one JSON object")
    p.set_defaults(func=cmd_provision)


def cmd_selftest(args: argparse.Namespace) -> int:
    from device.capture.probe import check_media_path
    from device.identity import device_id_path, resolve_device_id
    from device.selftest import CheckResult, SelftestOptions, format_row, run_selftest

    for path in (args.camera_file, args.microphone_file):
        if path:
            check_media_path(Path(path))
    config_path = Path(args.config) if args.config else (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file()
                                                         else None)
    config = load_config(config_path)
    device_id = config.device.id or resolve_device_id(config.device, persist=False)
    stored = bool(config.device.id) or device_id_path(config.device).is_file()
    options = SelftestOptions(
        camera_file=Path(args.camera_file) if args.camera_file else None,
        microphone_file=Path(args.microphone_file) if args.microphone_file else None,
        seconds=args.seconds, skip=tuple(args.skip or ()), config_path=config_path, hub_timeout_s=args.timeout)
    results: list[CheckResult] = []
    if not args.json:
        print(f"affectbox selftest: device {device_id}{'' if stored else ' (not stored yet)'}, "
              f"config {config_path or 'built-in defaults'}")
        print(f"{'check':<11} {'result':<5} detail")
    for result in run_selftest(config, options, device_id):
        results.append(result)
        if not args.json:
            print(format_row(result), flush=True)
    failed = [r.name for r in results if r.status == "fail"]
    if args.json:
        print(json.dumps({"device_id": device_id, "config": str(config_path) if config_path else None,
                          "ok": not failed, "checks": [r.to_json() for r in results]}))
    else:
        skipped = sum(r.status == "skip" for r in results)
        warned = [r.name for r in results if r.status == "warn"]
        if failed:
            print(f"{len(failed)} check{'s' if len(failed) != 1 else ''} failed: {', '.join(failed)}")
        elif warned:
            print(f"all checks passed ({skipped} skipped; see the warning in: {', '.join(warned)})")
        else:
            print(f"all checks passed ({skipped} skipped)")
        print(NOTICE)
    return 1 if failed else 0


def add_selftest_parser(sub: Any) -> None:
    """Register `affectbox selftest`."""
    from device.selftest import CHECKS

    p = sub.add_parser("selftest", help="check camera, face, microphone, speech, models, hub, disk and clock",
                       description="A pass/fail/skip table; exit 1 when any check fails. Stand in front of the "
                                   "camera and speak while it runs, or replay files.")
    p.add_argument("--config", help=f"TOML config file (default: {DEFAULT_CONFIG_PATH} if present, else defaults)")
    p.add_argument("--camera-file", metavar="VIDEO", help="read frames from this video instead of the camera")
    p.add_argument("--microphone-file", metavar="AUDIO", help="read audio from this file instead of the microphone")
    p.add_argument("--seconds", type=_positive_seconds, default=3.0,
                   help="how long the camera and the microphone are read (default %(default)s)")
    p.add_argument("--skip", action="append", choices=CHECKS, metavar="CHECK",
                   help=f"leave a check out (repeatable): {', '.join(CHECKS)}")
    p.add_argument("--timeout", type=_positive_seconds, default=5.0, help="seconds per network step of the hub check")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=cmd_selftest)


def add_setup_commands(sub: Any) -> None:
    """Register the installer's subcommands on the CLI's subparsers."""
    add_provision_parser(sub)
    add_selftest_parser(sub)
