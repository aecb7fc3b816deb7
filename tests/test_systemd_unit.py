"""hardware/affectbox.service: rendered as setup.sh renders it, it passes `systemd-analyze verify`,
carries the directives the appliance relies on (notify + watchdog, start limit, credentials under
the names `affectbox provision` writes, the dedicated user, hardening), its commands are real CLI
subcommands, and its `systemd-analyze security --offline=true` exposure is the one hardware/README.md
records."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from device.cli import build_parser
from device.config import WebConfig
from device.provision import HUB_KEY_CREDENTIAL, HUB_PASSWORD_CREDENTIAL, WEB_PASSWORD_CREDENTIAL

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "hardware" / "affectbox.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")


def directives(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (in order), comments and blank lines left out."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, line
        current.setdefault(key, []).append(value)
    return sections


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    """The unit with @PREFIX@ replaced by a temporary prefix whose affectbox command exists."""
    prefix = tmp_path / "opt" / "affectbox"
    exe = prefix / "venv" / "bin" / "affectbox"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "affectbox.service"
    unit.write_text(UNIT.read_text().replace("@PREFIX@", str(prefix)))
    return unit


def test_only_the_prefix_is_templated():
    assert set(re.findall(r"@[A-Z_]+@", UNIT.read_text())) == {"@PREFIX@"}


@needs_analyze
def test_systemd_analyze_verify_is_clean(rendered: Path):
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(rendered)], capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert rendered.name not in result.stderr, result.stderr  # no warning about our file


def test_directives_the_appliance_relies_on():
    unit = directives(UNIT.read_text())
    service, section = unit["Service"], unit["Unit"]
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] == ["30"]
    assert service["Restart"] == ["on-failure"]
    assert "StartLimitIntervalSec" in section and "StartLimitBurst" in section
    assert section["Wants"] == ["network-online.target"] and "network-online.target" in section["After"][0].split()
    assert "Requires" not in section and "BindsTo" not in section  # the device works offline
    assert service["User"] == ["affectbox"] and service["SupplementaryGroups"] == ["video audio"]
    assert service["StateDirectory"] == ["affectbox"] and service["StateDirectoryMode"] == ["0700"]
    assert service["RuntimeDirectory"] == ["affectbox"]
    config = "--config /etc/affectbox/config.toml"
    assert service["ExecStartPre"] == [f"@PREFIX@/venv/bin/affectbox validate-config {config}"]
    assert service["ExecStart"] == [f"@PREFIX@/venv/bin/affectbox run {config}"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"),
                       ("ProtectControlGroups", "yes"), ("LockPersonality", "yes"), ("RestrictRealtime", "yes"),
                       ("RestrictNamespaces", "yes"), ("DevicePolicy", "closed"), ("CapabilityBoundingSet", ""),
                       ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK")):
        assert service.get(key) == [value], key
    assert "@system-service" in service["SystemCallFilter"]
    allowed = {value.split()[0] for value in service["DeviceAllow"]}
    assert {"char-video4linux", "char-media", "char-dma_heap", "char-alsa"} <= allowed
    assert "MemoryDenyWriteExecute" not in service and "PrivateDevices" not in service


def test_credentials_match_what_provision_writes():
    service = directives(UNIT.read_text())["Service"]
    loaded = dict(value.split(":", 1) for value in service["LoadCredential"])
    names = {WEB_PASSWORD_CREDENTIAL, HUB_PASSWORD_CREDENTIAL, HUB_KEY_CREDENTIAL}
    assert set(loaded) == names
    assert all(path == f"/etc/affectbox/credentials/{name}" for name, path in loaded.items())
    # a device not provisioned yet still starts: every loaded credential has a fallback
    assert {value.split(":", 1)[0] for value in service["SetCredential"]} == names
    assert WebConfig().password_file == WEB_PASSWORD_CREDENTIAL


def test_commands_are_real_subcommands():
    service = directives(UNIT.read_text())["Service"]
    parser = build_parser()
    for line in (service["ExecStartPre"][0], service["ExecStart"][0]):
        argv = shlex.split(line)[1:]
        args = parser.parse_args(argv)
        assert callable(args.func), argv


def exposure(rendered: Path) -> float:
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(rendered)],
                            capture_output=True, text=True, timeout=30, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout + result.stderr)
    assert match, result.stdout[-2000:] + result.stderr
    return float(match.group(1))


@needs_analyze
def test_exposure_is_low_and_recorded_in_the_readme(rendered: Path):
    score = exposure(rendered)
    assert score <= 2.0, score
    readme = (REPO / "hardware" / "README.md").read_text()
    assert f"exposure {score:.1f}" in readme, f"hardware/README.md should record the exposure {score:.1f}"
