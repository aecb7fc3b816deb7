"""`affectbox provision`: the config editor, fleet flags, prompts on a terminal, secrets and their
permissions, the client key and CSR (openssl), and `--check` against real Mosquitto brokers
(the Broker class of tests/mqtt_support.py): every step passing, then a
failure at each step in turn: DNS (an unresolvable name), TCP (a port nobody listens on), TLS
(an untrusted broker certificate, a missing client certificate), auth (a wrong password) and
ACL (a publish or subscription the broker's access rules refuse)."""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from device.config import HubConfig, config_from_dict, describe_defaults
from device.credentials import verify_password
from device.errors import ConfigError
from device.hub_check import check_hub
from device.provision import (
    ProvisionError,
    config_skeleton,
    set_config_values,
)
from tests.mqtt_support import Broker, free_port, needs_broker
from tests.test_hub import make_tls_material

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent


def affectbox(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", *args], cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


def one_line_error(result: subprocess.CompletedProcess, fragment: str) -> str:
    assert result.returncode == 2, result
    err = result.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("affectbox: error:") and fragment in err, err
    return err


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """An /etc/affectbox stand-in whose config keeps the state folder in the temporary folder too."""
    folder = tmp_path / "etc"
    folder.mkdir()
    text = set_config_values(config_skeleton(), {"device": {"state_dir": str(tmp_path / "state")}})
    (folder / "config.toml").write_text(text)
    return folder


def secret_file(folder: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = folder / name
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def load(path: Path) -> dict:
    return tomllib.loads(path.read_text())


# ---- the config file -------------------------------------------------------------------------------------------

def test_skeleton_names_every_key_commented_out_and_is_valid():
    text = config_skeleton()
    raw = tomllib.loads(text)
    assert all(value == {} for value in raw.values()), raw  # sections only: every default applies
    config_from_dict(raw)
    for line in describe_defaults().splitlines():
        if line and not line.startswith(("#", "[")):
            assert f"# {line}" in text, line
    assert "password" not in "".join(v for v in raw)


def test_editor_keeps_unmanaged_keys_and_comments():
    text = ('# my notes\n[face]\nmin_score = 0.7  # tuned for room 3\n\n[hub]\n# host = ""\nusername = "old"\n'
            'keepalive = 30\n')
    new = set_config_values(text, {"hub": {"enabled": True, "host": "hub.example", "username": None},
                                   "device": {"site": 'Clinic "Nord"', "room": "3 \\ B"}})
    assert "# my notes" in new and "min_score = 0.7  # tuned for room 3" in new and "keepalive = 30" in new
    assert 'username' not in new.split("[hub]")[1].split("[device]")[0].replace("# host", "")
    raw = tomllib.loads(new)
    assert raw["hub"] == {"enabled": True, "host": "hub.example", "keepalive": 30}
    assert raw["device"] == {"site": 'Clinic "Nord"', "room": "3 \\ B"}
    assert new.index('host = "hub.example"') == new.index('# host = ""') + len('# host = ""\n')
    assert set_config_values(new, {"hub": {"host": "hub.example"}}) == new


def test_editor_refuses_what_it_cannot_edit_safely():
    with pytest.raises(ProvisionError, match="edit it by hand"):
        set_config_values('[hub]\nhost = """\nhub.example"""\n', {"hub": {"host": "other"}})
    with pytest.raises(ConfigError, match=r"hub\.host: must be set"):
        set_config_values("", {"hub": {"enabled": True}})


# ---- fleet flags, secrets, permissions -----------------------------------------------------------------------

def test_fleet_flags_write_config_without_secrets_and_0600_secrets(etc: Path, tmp_path: Path):
    hub_pw = secret_file(tmp_path, "hub-pw", "mqtt s3cret pw")
    web_pw = secret_file(tmp_path, "web-pw", "status-page-pw")
    result = affectbox("provision", "--config", str(etc / "config.toml"), "--no-prompt", "--device-id", "room-7",
                       "--site", "Clinic North", "--room", "7", "--hub-host", "127.0.0.1", "--hub-tls", "off",
                       "--hub-username", "dev-7", "--hub-password-file", str(hub_pw),
                       "--web-password-file", str(web_pw))
    assert result.returncode == 0, result.stderr
    assert "device id: room-7" in result.stdout and "Traceback" not in result.stderr
    config_text = (etc / "config.toml").read_text()
    assert "s3cret" not in config_text and "status-page-pw" not in config_text
    raw = load(etc / "config.toml")
    assert raw["device"]["id"] == "room-7" and raw["device"]["site"] == "Clinic North"
    assert raw["hub"] == {"enabled": True, "host": "127.0.0.1", "tls": "off", "username": "dev-7",
                          "password_file": "hub-password"}
    assert raw["web"]["password_file"] == "web-password"
    creds = etc / "credentials"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    for name in ("hub-password", "web-password"):
        assert stat.S_IMODE((creds / name).stat().st_mode) == 0o600
    assert (creds / "hub-password").read_text() == "mqtt s3cret pw\n"
    stored = (creds / "web-password").read_text().strip()
    assert stored.startswith("scrypt$") and verify_password("status-page-pw", stored)
    assert not verify_password("wrong-password", stored)
    assert "s3cret" not in result.stdout + result.stderr and "status-page-pw" not in result.stdout + result.stderr
    assert (tmp_path / "state" / "device-id").read_text() == "room-7\n"
    validated = affectbox("validate-config", str(etc / "config.toml"))
    assert validated.returncode == 0, validated.stderr


def test_derived_device_id_is_stored_once(etc: Path, tmp_path: Path):
    first = affectbox("provision", "--config", str(etc / "config.toml"), "--no-prompt", "--site", "A")
    assert first.returncode == 0, first.stderr
    stored = (tmp_path / "state" / "device-id").read_text().strip()
    assert f"device id: {stored}" in first.stdout
    second = affectbox("provision", "--config", str(etc / "config.toml"), "--no-prompt", "--room", "B")
    assert f"device id: {stored}" in second.stdout
    assert "id" not in load(etc / "config.toml")["device"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_secret_input_readable_by_others_is_refused(etc: Path, tmp_path: Path, mode: int):
    loose = secret_file(tmp_path, "pw", "mqtt-password", mode)
    before = (etc / "config.toml").read_text()
    result = affectbox("provision", "--config", str(etc / "config.toml"), "--no-prompt", "--hub-host", "localhost",
                       "--hub-username", "u", "--hub-password-file", str(loose))
    one_line_error(result, "chmod 600")
    assert (etc / "config.toml").read_text() == before
    assert not (etc / "credentials" / "hub-password").exists()


def test_plaintext_to_another_machine_needs_allow_plaintext(etc: Path):
    config = str(etc / "config.toml")
    refused = affectbox("provision", "--config", config, "--no-prompt", "--hub-host", "192.0.2.10", "--hub-tls", "off")
    one_line_error(refused, "refusing unencrypted MQTT")
    assert "--allow-plaintext" in refused.stderr
    allowed = affectbox("provision", "--config", config, "--no-prompt", "--hub-host", "192.0.2.10", "--hub-tls",
                        "off", "--allow-plaintext")
    assert allowed.returncode == 0, allowed.stderr
    assert load(etc / "config.toml")["hub"]["allow_plaintext"] is True


@pytest.mark.parametrize(("args", "fragment"), [
    (["--device-id", "bad id"], "--device-id"),
    (["--hub-host", "mqtt://hub"], "--hub-host"),
    (["--site", "a\nb"], "--site"),
    (["--hub-port", "70000"], "between 0 and 65535"),
    (["--ca-file", "/nonexistent/ca.pem", "--hub-host", "localhost"], "cannot read the CA certificate"),
    (["--hub-username", "u", "--hub-password-file", "/nonexistent/pw"], "does not exist"),
])
def test_bad_input_is_a_one_line_error(etc: Path, args: list[str], fragment: str):
    result = affectbox("provision", "--config", str(etc / "config.toml"), "--no-prompt", *args)
    if result.returncode == 2 and result.stderr.startswith("usage:"):  # argparse's own check
        assert fragment in result.stderr
        return
    one_line_error(result, fragment)


def test_short_web_password_is_refused(etc: Path, tmp_path: Path):
    short = secret_file(tmp_path, "pw", "short")
    one_line_error(affectbox("provision", "--config", str(etc / "config.toml"), "--no-prompt",
                             "--web-password-file", str(short)), "at least 8 characters")


def openssl(*args: str, cwd: Path) -> str:
    return subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=30).stdout


def test_client_key_stays_on_the_device_csr_and_signed_certificate(etc: Path, tmp_path: Path):
    pki = tmp_path / "pki"
    make_tls_material(pki)
    config = str(etc / "config.toml")
    made = affectbox("provision", "--config", config, "--no-prompt", "--device-id", "dev-tls", "--hub-host",
                     "localhost", "--ca-file", str(pki / "ca.crt"), "--make-csr")
    assert made.returncode == 0, made.stderr
    key = etc / "credentials" / "hub-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and "PRIVATE KEY" in key.read_text()
    assert "PRIVATE KEY" not in made.stdout
    csr = etc / "hub-client.csr"
    assert "CN = dev-tls" in openssl("req", "-in", str(csr), "-noout", "-subject", cwd=tmp_path)
    assert load(etc / "config.toml")["hub"]["ca_file"] == str(etc / "hub-ca.crt")
    assert (etc / "hub-ca.crt").read_text() == (pki / "ca.crt").read_text()
    assert "cert_file" not in load(etc / "config.toml")["hub"]  # not before the signed certificate is back

    # a second --make-csr keeps the key
    key_before = key.read_text()
    again = affectbox("provision", "--config", config, "--no-prompt", "--make-csr")
    assert again.returncode == 0 and key.read_text() == key_before, again.stderr

    # the clinic's CA signs the CSR
    (pki / "dev.ext").write_text("extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "dev.crt", "-days", "2", "-extfile", "dev.ext", cwd=pki)
    wrong = affectbox("provision", "--config", config, "--no-prompt", "--client-cert", str(pki / "client.crt"))
    one_line_error(wrong, "not issued for this device's key")
    signed = affectbox("provision", "--config", config, "--no-prompt", "--client-cert", str(pki / "dev.crt"))
    assert signed.returncode == 0, signed.stderr
    hub = load(etc / "config.toml")["hub"]
    assert hub["cert_file"] == str(etc / "hub-client.crt") and hub["key_file"] == "hub-key"
    assert key.read_text() == key_before


def test_prompts_on_a_terminal(etc: Path, tmp_path: Path):
    """A person at a terminal: every open value is asked for; passwords are typed twice, not echoed."""
    config = str(etc / "config.toml")
    answers = [("device id", ""), ("site label", "Clinic South"), ("room label", "12"),
               ("host name", "localhost"), ("TLS", "on"), ("port", ""), ("CA certificate", ""),
               ("authentication", "password"), ("user name", "dev-12"), ("MQTT password", "mqtt-pw-123"),
               ("again", "mqtt-pw-123"), ("status page password", "page-pw-123"), ("again", "page-pw-123")]
    pid, fd = pty.fork()
    if pid == 0:  # the child: affectbox on the terminal
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "device", "provision", "--config", config])
    seen = b""
    try:
        for prompt, answer in answers:
            deadline = time.monotonic() + 20
            while prompt.encode() not in seen:
                assert time.monotonic() < deadline, (prompt, seen.decode(errors="replace"))
                ready, _, _ = select.select([fd], [], [], 0.5)
                if ready:
                    seen += os.read(fd, 4096)
            seen = seen[seen.index(prompt.encode()) + len(prompt):]
            os.write(fd, answer.encode() + b"\n")
        output = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")
    assert b"mqtt-pw-123" not in output and b"page-pw-123" not in output  # passwords are not echoed
    raw = load(etc / "config.toml")
    assert raw["device"]["site"] == "Clinic South" and raw["device"]["room"] == "12"
    assert raw["hub"]["host"] == "localhost" and raw["hub"]["username"] == "dev-12"
    assert raw["hub"]["port"] == 8883 and raw["hub"]["tls"] == "on"
    assert (etc / "credentials" / "hub-password").read_text() == "mqtt-pw-123\n"
    assert verify_password("page-pw-123", (etc / "credentials" / "web-password").read_text())


# ---- --check against real brokers ------------------------------------------------------------------------------

def hub(port: int, **overrides) -> HubConfig:
    return HubConfig(**{"enabled": True, "host": "127.0.0.1", "port": port, "tls": "off", **overrides})


def statuses(check) -> dict[str, str]:
    return {step.name: step.status for step in check.steps}


@pytest.fixture
def plain_broker(tmp_path: Path):
    broker = Broker(tmp_path / "plain")
    broker.start()
    yield broker
    broker.stop()


@needs_broker
@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
def test_check_passes_every_step(plain_broker: Broker, protocol: str):
    check = check_hub(hub(plain_broker.port, protocol=protocol), "dev-1", None, timeout_s=5)
    assert check.ok, check.to_json()
    assert statuses(check) == {"dns": "ok", "tcp": "ok", "tls": "skip", "auth": "ok", "acl": "ok"}
    assert "received it back" in check.steps[-1].detail


def test_check_reports_dns():
    check = check_hub(hub(1883, host="nonexistent.invalid", tls="on"), "dev-1", None, timeout_s=5)
    assert statuses(check) == {"dns": "fail", "tcp": "skip", "tls": "skip", "auth": "skip", "acl": "skip"}
    assert "cannot resolve 'nonexistent.invalid'" in check.failed.detail


def test_check_reports_tcp():
    check = check_hub(hub(free_port()), "dev-1", None, timeout_s=5)
    assert check.failed is not None and check.failed.name == "tcp", check.to_json()
    assert "refused" in check.failed.detail.lower()


@pytest.fixture
def tls_setup(tmp_path: Path):
    """A TLS broker that wants a client certificate and a password, with ACLs per user."""
    pki = tmp_path / "pki"
    make_tls_material(pki)
    passwords = pki / "passwd"
    for user, password in (("dev-tls", "s3cret-device-pw"), ("readonly", "readonly-pw"), ("writeonly", "writeonly-pw")):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if not passwords.exists() else []), str(passwords),
                        user, password], check=True, capture_output=True, timeout=30)
    acl = pki / "acl"
    acl.write_text("user dev-tls\ntopic readwrite affectbox/dev-tls/#\n\n"
                   "user readonly\ntopic read affectbox/dev-tls/cmd/#\n\n"
                   "user writeonly\ntopic write affectbox/dev-tls/#\n")
    extra = (f"cafile {pki}/ca.crt", f"certfile {pki}/server.crt", f"keyfile {pki}/server.key",
             "require_certificate true", f"password_file {passwords}", f"acl_file {acl}", "allow_anonymous false")
    broker = Broker(tmp_path / "tls-broker", extra=extra)
    broker.start()
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    (creds / "hub-key").write_bytes((pki / "client.key").read_bytes())
    (creds / "hub-key").chmod(0o600)
    yield broker, pki, creds
    broker.stop()


def tls_hub(port: int, pki: Path, **overrides) -> HubConfig:
    values = {"host": "localhost", "tls": "on", "ca_file": str(pki / "ca.crt"), "cert_file": str(pki / "client.crt"),
              "key_file": "hub-key", "username": "dev-tls", "password_file": "hub-password", **overrides}
    return hub(port, **values)


def set_password(creds: Path, password: str) -> None:
    secret_file(creds, "hub-password", password)


@needs_broker
def test_check_tls_auth_and_acl_against_a_tls_broker(tls_setup):
    broker, pki, creds = tls_setup
    set_password(creds, "s3cret-device-pw")
    good = check_hub(tls_hub(broker.port, pki), "dev-tls", creds, timeout_s=5)
    assert good.ok, good.to_json()
    assert statuses(good) == {"dns": "ok", "tcp": "ok", "tls": "ok", "auth": "ok", "acl": "ok"}
    assert "certificate verified for localhost" in good.steps[2].detail

    set_password(creds, "wrong-password-123")
    wrong = check_hub(tls_hub(broker.port, pki), "dev-tls", creds, timeout_s=5)
    assert wrong.failed is not None and wrong.failed.name == "auth", wrong.to_json()
    assert "refused the connection" in wrong.failed.detail and "hub.username" in wrong.failed.detail
    assert statuses(wrong)["acl"] == "skip"
    assert "wrong-password-123" not in json.dumps(wrong.to_json())

    untrusted = check_hub(tls_hub(broker.port, pki, ca_file=str(pki / "client.crt")), "dev-tls", creds, 5)
    assert untrusted.failed is not None and untrusted.failed.name == "tls", untrusted.to_json()
    assert "certificate was not accepted" in untrusted.failed.detail

    no_cert = check_hub(tls_hub(broker.port, pki, cert_file="", key_file=""), "dev-tls", creds, 5)
    assert no_cert.failed is not None and no_cert.failed.name == "tls", no_cert.to_json()
    assert "requires a client certificate" in no_cert.failed.detail

    set_password(creds, "readonly-pw")
    readonly = check_hub(tls_hub(broker.port, pki, username="readonly"), "dev-tls", creds, 5)
    assert readonly.failed is not None and readonly.failed.name == "acl", readonly.to_json()
    assert "refused publishing to affectbox/dev-tls/check" in readonly.failed.detail

    set_password(creds, "writeonly-pw")
    writeonly = check_hub(tls_hub(broker.port, pki, username="writeonly"), "dev-tls", creds, 5)
    assert writeonly.failed is not None and writeonly.failed.name == "acl", writeonly.to_json()
    assert "never came back" in writeonly.failed.detail and "read" in writeonly.failed.detail


@needs_broker
def test_provision_check_cli_output_and_exit_codes(plain_broker: Broker, etc: Path):
    config = str(etc / "config.toml")
    result = affectbox("provision", "--config", config, "--no-prompt", "--device-id", "dev-cli", "--hub-host",
                       "127.0.0.1", "--hub-port", str(plain_broker.port), "--hub-tls", "off", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hub check passed" in result.stdout
    for name in ("dns", "tcp", "tls", "auth", "acl"):
        assert f"  {name}" in result.stdout
    as_json = affectbox("provision", "--config", config, "--check", "--json")
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["ok"] is True and [s["step"] for s in body["steps"]] == ["dns", "tcp", "tls", "auth", "acl"]

    plain_broker.stop()
    down = affectbox("provision", "--config", config, "--check")
    assert down.returncode == 1, down.stdout + down.stderr
    assert "hub check failed at TCP" in down.stdout
