"""The hub check: connect to the configured broker the way the daemon does and name the first step that fails.

`affectbox provision --check` (device/provision.py, device/cli_setup.py) and `affectbox selftest`
(device/selftest.py) both run it, so it sits below both. The steps are DNS, TCP, TLS, auth
(CONNACK), ACL: the subscription to `cmd/+` (judged by the SUBACK where the broker refuses there;
Mosquitto 2.0 grants every subscription and filters on delivery), then a QoS 1 publish to
`<prefix>/check` (judged by the MQTT 5 PUBACK reason code) that must come back through a
subscription to the same topic (proves reading under the prefix). It connects with the client id
`affectbox-<device_id>-check`, so a running daemon is not disconnected; broker access rules should
therefore key on the user name or certificate, not on the client id.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.config import DEFAULT_CONFIG_PATH, HUB_DEFAULT_PORTS, HubConfig, hub_plaintext_problem
from device.credentials import CredentialError, check_secret_permissions, credentials_folder
from device.errors import AffectboxError, HubError
from device.mqtt_sockets import close_client_sockets

CHECK_TOPIC = "check"


class HubSetupError(AffectboxError):
    """The local TLS or credential files of the hub link are not usable; the message says which and why."""


def hub_port(hub: HubConfig) -> int:
    """The configured broker port, or the default for hub.tls (8883 with TLS, 1883 without)."""
    return hub.port or HUB_DEFAULT_PORTS[hub.tls]


STEPS = ("dns", "tcp", "tls", "auth", "acl")


@dataclass
class CheckStep:
    """One step of the hub check: `status` is ok, fail or skip."""

    name: str
    status: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"step": self.name, "status": self.status, "detail": self.detail}


@dataclass
class HubCheck:
    """The steps of one hub check, in order; `ok` when none failed."""

    target: str
    steps: list[CheckStep]

    @property
    def ok(self) -> bool:
        return all(step.status != "fail" for step in self.steps)

    @property
    def failed(self) -> CheckStep | None:
        return next((step for step in self.steps if step.status == "fail"), None)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "ok": self.ok, "steps": [s.to_json() for s in self.steps]}


def hub_secrets_dir(config_path: str | os.PathLike[str] | None) -> Path | None:
    """Where a check run outside systemd finds the secret files: $CREDENTIALS_DIRECTORY, else next to the config."""
    value = os.environ.get("CREDENTIALS_DIRECTORY")
    if value:
        return Path(value)
    if config_path is not None:
        return credentials_folder(config_path)
    return credentials_folder(DEFAULT_CONFIG_PATH)


def _read_hub_secret(folder: Path | None, name: str, what: str) -> Path:
    if folder is None:
        raise HubSetupError(f"hub: the {what} credential {name!r} is configured but there is no credentials folder")
    path = folder / name
    if not path.is_file():
        raise HubSetupError(f"hub: the {what} credential file {path} does not exist")
    if os.environ.get("CREDENTIALS_DIRECTORY") is None:
        try:
            check_secret_permissions(path, f"{what} credential")
        except CredentialError as exc:
            raise HubSetupError(str(exc)) from None
    return path


def _password(folder: Path | None, name: str) -> str:
    path = _read_hub_secret(folder, name, "password")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HubSetupError(f"hub: cannot read the password credential file {path} ({exc})") from None
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text:
        raise HubSetupError(f"hub: the password credential file {path} is empty")
    return text


def _ssl_context(hub: HubConfig, secrets_dir: Path | None) -> ssl.SSLContext:
    """The same TLS settings as the daemon's hub client (device.uplink.client.make_ssl_context)."""
    from device.uplink.client import make_ssl_context

    key = _read_hub_secret(secrets_dir, hub.key_file, "TLS key") if hub.cert_file else None
    try:
        return make_ssl_context(hub, key)
    except HubError as exc:
        raise HubSetupError(str(exc)) from None


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the broker's certificate was not accepted: {exc.verify_message or exc}"
    reason = getattr(exc, "reason", None)
    if reason and "CERTIFICATE_REQUIRED" in str(reason).upper():
        return "the broker requires a client certificate (give --make-csr / --client-cert)"
    if reason and "UNKNOWN_CA" in str(reason).upper():
        return "the broker does not trust this device's client certificate (signed by another CA?)"
    return f"TLS handshake failed: {reason or exc}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_hub(hub: HubConfig, device_id: str, secrets_dir: Path | None, timeout_s: float = 5.0) -> HubCheck:
    """Connect to the configured broker and report each step; the first failing step ends the check."""
    port = hub_port(hub)
    target = f"{'mqtts' if hub.tls == 'on' else 'mqtt'}://{hub.host}:{port}"
    steps: list[CheckStep] = []

    def skip_rest(after: str, why: str) -> HubCheck:
        for name in STEPS[STEPS.index(after) + 1:]:
            steps.append(CheckStep(name, "skip", why))
        return HubCheck(target, steps)

    if not hub.enabled or not hub.host:
        return HubCheck(target, [CheckStep(name, "skip", "hub not configured (hub.enabled = false)")
                                 for name in STEPS])
    problem = hub_plaintext_problem(hub)
    if problem:
        steps.append(CheckStep("dns", "fail", problem))
        return skip_rest("dns", "refused before connecting")
    try:
        context = _ssl_context(hub, secrets_dir) if hub.tls == "on" else None
        password = _password(secrets_dir, hub.password_file) if hub.password_file else None
    except HubSetupError as exc:
        steps.append(CheckStep("dns", "fail", f"set-up: {exc}"))
        return skip_rest("dns", "the local TLS or credential files are not usable")

    # DNS
    try:
        infos = socket.getaddrinfo(hub.host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        steps.append(CheckStep("dns", "fail", f"cannot resolve {hub.host!r}: {getattr(exc, 'strerror', None) or exc}"))
        return skip_rest("dns", "needs the name resolved")
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    steps.append(CheckStep("dns", "ok", "an IP address, no lookup needed" if _is_ip(hub.host)
                           else f"{hub.host} -> {', '.join(addresses[:4])}"))

    # TCP
    sock: socket.socket | None = None
    errors: list[str] = []
    start = time.monotonic()
    for family, kind, proto, _, address in infos:
        candidate = socket.socket(family, kind, proto)
        try:
            candidate.settimeout(timeout_s)
            candidate.connect(address)
        except OSError as exc:
            candidate.close()
            errors.append(f"{address[0]}: {exc.strerror or exc}")
            continue
        sock = candidate
        break
    if sock is None:
        steps.append(CheckStep("tcp", "fail", f"cannot connect to port {port} ({'; '.join(errors)}): is the broker "
                                              "running, the port right and the firewall open?"))
        return skip_rest("tcp", "needs a TCP connection")
    steps.append(CheckStep("tcp", "ok", f"connected to {sock.getpeername()[0]}:{port} in "
                                        f"{1000 * (time.monotonic() - start):.0f} ms"))

    # TLS
    if context is None:
        sock.close()
        why = "allowed by hub.allow_plaintext" if hub.allow_plaintext else "to this machine"
        steps.append(CheckStep("tls", "skip", f"hub.tls = off (plaintext, {why})"))
    else:
        try:
            with context.wrap_socket(sock, server_hostname=hub.host) as tls:
                version = tls.version()
                # TLS 1.3: a broker refusing the client certificate says so after the handshake
                tls.settimeout(0.3)
                with contextlib.suppress(TimeoutError):
                    tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            detail = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else f"connection closed during TLS: {exc}"
            steps.append(CheckStep("tls", "fail", detail))
            return skip_rest("tls", "needs a TLS session")
        steps.append(CheckStep("tls", "ok", f"{version}, certificate verified for {hub.host}"
                                            + (", client certificate sent" if hub.cert_file else "")))

    # auth and ACL, over MQTT
    steps.extend(_mqtt_steps(hub, device_id, port, context, password, timeout_s))
    if steps[-1].name == "auth":
        return skip_rest("auth", "needs an accepted connection")
    return HubCheck(target, steps)


def _reason_text(code: Any) -> str:
    return str(code)


def _mqtt_steps(hub: HubConfig, device_id: str, port: int, context: ssl.SSLContext | None,
                password: str | None, timeout_s: float) -> list[CheckStep]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from device.contract.topics import Topics

    topics = Topics.for_device(hub.topic_prefix, device_id)
    check_topic = f"{topics.prefix}/{CHECK_TOPIC}"
    mqtt5 = hub.protocol == "mqtt5"
    state: dict[str, Any] = {"connack": None, "suback": None, "puback": None, "echo": False}
    nonce = secrets.token_hex(8)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"affectbox-{device_id}-check",
                         protocol=MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311,
                         clean_session=None if mqtt5 else True, reconnect_on_failure=False)
    if context is not None:
        client.tls_set_context(context)
    if hub.username:
        client.username_pw_set(hub.username, password)

    def on_connect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        state["connack"] = reason_code

    def on_subscribe(c: Any, userdata: Any, mid: int, reason_codes: list[Any], properties: Any) -> None:
        state["suback"] = reason_codes

    def on_publish(c: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        state["puback"] = reason_code

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        if message.topic == check_topic and nonce.encode() in message.payload:
            state["echo"] = True

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_publish, client.on_message = on_publish, on_message

    def arrived(key: str) -> bool:
        # identity checks: a ReasonCode compares equal to the int 0, hence to False
        return state[key] is not None and state[key] is not False

    def wait(key: str) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if arrived(key):
                return True
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                return arrived(key)
        return arrived(key)

    steps: list[CheckStep] = []
    try:
        try:
            client.connect(hub.host, port, keepalive=30)
        except ssl.SSLError as exc:
            return [CheckStep("auth", "fail", _ssl_reason(exc))]
        except OSError as exc:
            return [CheckStep("auth", "fail", f"connection failed: {exc.strerror or exc}")]
        if not wait("connack"):
            return [CheckStep("auth", "fail", f"no answer (CONNACK) from the broker within {timeout_s:g} s")]
        code = state["connack"]
        if code.is_failure:
            hint = ("check hub.username and the password credential file"
                    if int(code.value) in (0x86, 0x87, 4, 5) else "")
            return [CheckStep("auth", "fail", f"the broker refused the connection: {_reason_text(code)}"
                                              + (f" ({hint})" if hint else ""))]
        who = (f"user {hub.username!r}" if hub.username else "no user name") + (
            ", client certificate" if hub.cert_file else "")
        steps.append(CheckStep("auth", "ok", f"connected as affectbox-{device_id}-check ({who}, {hub.protocol})"))

        # ACL: the subscription the daemon makes, and a publish under the device's prefix
        client.subscribe([(topics.commands, 1), (check_topic, 1)])
        if not wait("suback"):
            steps.append(CheckStep("acl", "fail", f"no answer (SUBACK) to subscribing {topics.commands} "
                                                  f"within {timeout_s:g} s"))
            return steps
        commands_code, check_code = state["suback"]
        if commands_code.is_failure:
            steps.append(CheckStep("acl", "fail", f"the broker refused the subscription to {topics.commands} "
                                                  f"({_reason_text(commands_code)}): its access rules must let "
                                                  "the device read its own cmd/ topics"))
            return steps
        payload = json.dumps({"kind": "check", "device_id": device_id, "nonce": nonce})
        info = client.publish(check_topic, payload, qos=1, retain=False)
        if info.rc != mqtt.MQTT_ERR_SUCCESS or not wait("puback"):
            steps.append(CheckStep("acl", "fail", f"no acknowledgement (PUBACK) for publishing to {check_topic}"))
            return steps
        puback = state["puback"]
        if getattr(puback, "is_failure", False):
            steps.append(CheckStep("acl", "fail", f"the broker refused publishing to {check_topic} "
                                                  f"({_reason_text(puback)}): its access rules must let the "
                                                  f"device write under {topics.prefix}/"))
            return steps
        if not check_code.is_failure:
            if not wait("echo"):
                why = (f"the broker acknowledged it but did not deliver it back: its access rules do not let "
                       f"the device read under {topics.prefix}/ (it must read its cmd/ topics)") if mqtt5 else (
                       f"its access rules refuse writing or reading under {topics.prefix}/")
                steps.append(CheckStep("acl", "fail", f"a message published to {check_topic} never came back: "
                                                      + why))
                return steps
            steps.append(CheckStep("acl", "ok", f"subscribed to {topics.commands}; published to {check_topic} "
                                                "and received it back"))
        else:
            verified = "acknowledged" if mqtt5 else "sent (MQTT 3.1.1 cannot report a refused publish)"
            steps.append(CheckStep("acl", "ok", f"subscribed to {topics.commands}; publish to {check_topic} "
                                                f"{verified}"))
        return steps
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
            client.loop(timeout=0.05)
        close_client_sockets(client)


def format_check(check: HubCheck) -> Iterator[str]:
    """The check as aligned text lines."""
    yield f"hub check: {check.target}"
    for step in check.steps:
        yield f"  {step.name:<5} {step.status:<5} {step.detail}"
    failed = check.failed
    if failed is not None:
        yield f"hub check failed at {failed.name.upper()}: {failed.detail}"
    elif all(step.status == "skip" for step in check.steps):
        yield "hub check skipped: no hub configured"
    else:
        yield "hub check passed"
