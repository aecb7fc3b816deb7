"""The one rule for reading a secret file, shared by the status page, the installer, the uplink and the hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from device.credentials import CredentialError, read_secret
from device.errors import HubError
from device.provision import ProvisionError, read_secret_input
from hub.collector import CollectorError
from hub.collector import _read_secret as hub_read_secret


def _secret(tmp_path: Path, data: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize(("data", "expected"), [
    (b"hunter22", "hunter22"),
    (b"hunter22\n", "hunter22"),
    (b"hunter22\r\n", "hunter22"),
    (b"  edge spaces  \n", "  edge spaces  "),   # kept: a password may begin or end with spaces
    (b"\ttab\t", "\ttab\t"),
])
def test_one_trailing_line_break_is_dropped_and_nothing_else(tmp_path: Path, data: bytes, expected: str):
    path = _secret(tmp_path, data)
    assert read_secret(path, "password") == expected


@pytest.mark.parametrize(("data", "problem"), [
    (b"", "is empty"),
    (b"\n", "is empty"),
    (b"one\ntwo\n", "must hold one line"),
    (b"one\n\n", "must hold one line"),
    (b"\xff\xfe", "not UTF-8 text"),
])
def test_bad_secret_files_are_refused_in_one_line(tmp_path: Path, data: bytes, problem: str):
    path = _secret(tmp_path, data)
    with pytest.raises(CredentialError, match=problem) as caught:
        read_secret(path, "password")
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_a_secret_others_may_read_is_refused(tmp_path: Path):
    with pytest.raises(CredentialError, match="chmod 600"):
        read_secret(_secret(tmp_path, b"hunter22", 0o644), "password")


def test_installer_uplink_and_hub_read_a_secret_identically(tmp_path: Path):
    """The same file gives the same secret everywhere (the web once stripped all whitespace, the hub one newline)."""
    from device.config import HubConfig
    from device.uplink.client import HubClient
    from device.uplink.outbox import Outbox

    path = _secret(tmp_path, b" pass word \n")
    assert read_secret_input(path, "hub password") == " pass word "
    assert hub_read_secret(str(path), "mqtt.password_file") == " pass word "
    client = HubClient(HubConfig(enabled=True, host="localhost", tls="off", username="u", password_file=path.name),
                       "dev-1", tmp_path, Outbox(tmp_path / "outbox.db", max_bytes=1 << 20), lambda *a: None)
    assert client._password == " pass word "

    os.chmod(path, 0o644)
    with pytest.raises(ProvisionError, match="chmod 600"):
        read_secret_input(path, "hub password")
    with pytest.raises(CollectorError, match="chmod 600"):
        hub_read_secret(str(path), "mqtt.password_file")
    with pytest.raises(HubError, match="chmod 600"):
        HubClient(HubConfig(enabled=True, host="localhost", tls="off", username="u", password_file=path.name),
                  "dev-1", tmp_path, Outbox(tmp_path / "outbox.db", max_bytes=1 << 20), lambda *a: None)
