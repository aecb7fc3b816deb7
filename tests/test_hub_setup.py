"""`./setup.sh --hub` into a temporary root (AFFECTBOX_ROOT): layout and modes, a rerun that keeps the
CA, config and broker files, the rendered unit (`systemd-analyze verify`, hardening directives), and
the installed Mosquitto configuration run for real: TLS with the clinic CA, the collector logging in
with its generated password, a device admitted by `affectbox-hub device approve --csr` connecting with
its signed certificate, and the ACL refusing what it publishes under another device's id.
(Apt, the system user and starting services need a whole system; those steps are skipped here.)"""

from __future__ import annotations

import getpass
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.provision import check_certificate_matches_key, make_client_key, make_csr
from tests.daemon_harness import ROOT
from tests.hub_support import HubProcess, SimDevice, hub_windows
from tests.mqtt_support import MOSQUITTO, free_port, needs_broker
from tests.support import wait_until

pytestmark = [pytest.mark.timeout(600), needs_broker]
PREFIX = "opt/affectbox-hub"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def setup_hub(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AFFECTBOX_ROOT": str(root)}
    env.pop("AFFECTBOX_HUB_PREFIX", None)
    return subprocess.run([str(ROOT / "setup.sh"), "--hub"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=540, check=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the hub set-up runs as root")
    folder = tmp_path_factory.mktemp("hub-root")
    result = setup_hub(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    return folder


def test_layout_and_modes(root: Path):
    ca = root / "etc/affectbox-hub/ca"
    assert mode(ca) == 0o700 and mode(ca / "ca.key") == 0o600
    assert mode(root / "etc/affectbox-hub/credentials/broker-password") == 0o600
    assert mode(root / "etc/mosquitto/affectbox/broker.key") == 0o640
    assert (root / "etc/mosquitto/conf.d/affectbox.conf").is_file()
    passwd = (root / "etc/mosquitto/affectbox/passwd").read_text()
    assert passwd.startswith("affectbox-hub:") and "broker-password" not in passwd
    acl = (root / "etc/mosquitto/affectbox/acl").read_text()
    assert "user affectbox-hub\ntopic read affectbox/#\ntopic write affectbox/+/cmd/#" in acl
    exe = root / PREFIX / "venv/bin/affectbox-hub"
    check = subprocess.run([str(exe), "validate-config", "--config", str(root / "etc/affectbox-hub/config.toml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    # the hub's venv holds the [hub] pins, not the device's inference stack
    listed = subprocess.run([str(root / PREFIX / "venv/bin/python"), "-m", "pip", "list"], capture_output=True,
                            text=True, timeout=60).stdout.lower()
    assert "sqlalchemy" in listed and "psycopg" in listed
    assert "opencv" not in listed and "ai-edge-litert" not in listed
    unit = (root / "etc/systemd/system/affectbox-hub.service").read_text()
    assert "@PREFIX@" not in unit and f"/{PREFIX}/venv/bin/affectbox-hub run" in unit


def test_rerun_keeps_ca_config_and_broker_files(root: Path):
    kept = [root / "etc/affectbox-hub/ca/ca.crt", root / "etc/affectbox-hub/config.toml",
            root / "etc/mosquitto/affectbox/broker.crt", root / "etc/affectbox-hub/credentials/broker-password"]
    before = [p.read_bytes() for p in kept]
    result = setup_hub(root)
    assert result.returncode == 0, result.stderr
    assert [p.read_bytes() for p in kept] == before
    assert "ok: clinic CA kept" in result.stdout and "ok: config /etc/affectbox-hub/config.toml kept" in result.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_verifies_and_is_hardened(root: Path, tmp_path: Path):
    unit = (root / "etc/systemd/system/affectbox-hub.service").read_text()
    rendered = tmp_path / "affectbox-hub.service"
    rendered.write_text(unit.replace(f"/{PREFIX}/", f"{root}/{PREFIX}/"))
    result = subprocess.run(["systemd-analyze", "verify", str(rendered)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert rendered.name not in result.stderr, result.stderr
    for line in ("Type=notify", "WatchdogSec=60", "User=affectbox-hub", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "PrivateDevices=yes", "CapabilityBoundingSet=", "Restart=always",
                 "LoadCredential=broker-password:/etc/affectbox-hub/credentials/broker-password"):
        assert line in unit.splitlines(), line


@pytest.fixture
def broker(root: Path, tmp_path: Path) -> Iterator[tuple[int, int, int]]:
    """The installed Mosquitto config, its paths moved under `root` and its ports to free ones."""
    conf = (root / "etc/mosquitto/conf.d/affectbox.conf").read_text().replace("/etc/", f"{root}/etc/")
    ports = free_port(), free_port()
    conf = conf.replace("listener 8883", f"listener {ports[0]} 127.0.0.1").replace(
        "listener 8884", f"listener {ports[1]} 127.0.0.1")
    path = tmp_path / "mosquitto.conf"
    # (run as this user: the files sit in pytest's private folder, which Debian's `mosquitto` user cannot read)
    path.write_text(f"user {getpass.getuser()}\npersistence true\npersistence_location {tmp_path}/\n" + conf)
    with (tmp_path / "mosquitto.log").open("w") as log:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(path)], stdout=log, stderr=log)
        try:
            assert wait_until(lambda: "Opening ipv4 listen socket" in (tmp_path / "mosquitto.log").read_text()
                              or proc.poll() is not None, 10), "no listener"
            assert proc.poll() is None, (tmp_path / "mosquitto.log").read_text()
            yield ports[0], ports[1], proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


def test_installed_broker_tls_acl_and_certificate_admission(root: Path, tmp_path: Path, broker):
    password_port, cert_port, pid = broker
    etc = root / "etc/affectbox-hub"
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = tmp_path / "hub.toml"
    config.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {password_port}
ca_file = "{etc}/ca/ca.crt"
username = "affectbox-hub"
password_file = "{etc}/credentials/broker-password"
reconnect_min_s = 1
reconnect_max_s = 1
[database]
url = "{url}"
[admission]
acl_file = "{root}/etc/mosquitto/affectbox/acl"
ca_dir = "{etc}/ca"
reload_command = "kill -HUP {pid}"
[completeness]
enabled = false
""")
    hub = HubProcess(tmp_path, config).wait_ready().wait_connected()
    try:
        keys = {}
        for device in ("pi-x", "pi-y"):
            key, csr = tmp_path / f"{device}.key", tmp_path / f"{device}.csr"
            make_client_key(key)  # what `affectbox provision --make-csr` does on the device
            make_csr(key, csr, device, site="room-3")
            result = subprocess.run([sys.executable, "-m", "hub", "device", "approve", device, "--csr", str(csr),
                                     "--config", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            check_certificate_matches_key(csr.with_suffix(".crt"), key)
            keys[device] = {"ca": f"{etc}/ca/ca.crt", "cert": str(csr.with_suffix(".crt")), "key": str(key)}
        # a CSR whose name is not the device id is refused
        wrong = subprocess.run([sys.executable, "-m", "hub", "device", "approve", "pi-z", "--csr",
                                str(tmp_path / "pi-x.csr"), "--config", str(config)], cwd=ROOT, capture_output=True,
                               text=True, timeout=60)
        assert wrong.returncode == 2 and "common name" in wrong.stderr
        x = SimDevice(cert_port, "pi-x", tls=keys["pi-x"])
        y = SimDevice(cert_port, "pi-y", tls=keys["pi-y"])
        try:
            _, own = x.session_events(4)
            x.publish(own)
            _, forged = x.session_events(3)  # pi-x's events, sent by pi-y on pi-x's topics: the ACL drops them
            y.publish(forged)
            assert wait_until(lambda: len(hub_windows(url)) == 4, 20), hub.log()
            time_to_settle = wait_until(lambda: len(hub_windows(url)) > 4, 2)
            assert not time_to_settle
        finally:
            x.close()
            y.close()
    finally:
        assert hub.terminate() == 0
