"""device/identity.py: config id first, then the stored id, then the Pi serial, else a random id;
a derived or generated id is persisted once (0644, atomically) and never changes afterwards."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from device.config import DeviceConfig
from device.identity import (
    DEVICE_ID_RE,
    IdentityError,
    device_id_path,
    pi_serial,
    resolve_device_id,
    store_device_id,
)

pytestmark = pytest.mark.timeout(30)

CPUINFO_PI = """processor\t: 0
BogoMIPS\t: 108.00
Hardware\t: BCM2835
Revision\t: c03114
Serial\t\t: 10000000a1b2c3d4
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def _write(root: Path, path: str, data: bytes | str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        target.write_text(data)
    else:
        target.write_bytes(data)


def test_config_id_wins(tmp_path: Path) -> None:
    _write(tmp_path, "/var/lib/affectbox/device-id", "stored-id\n")
    assert resolve_device_id(DeviceConfig(id="clinic-7"), root=tmp_path) == "clinic-7"


def test_bad_config_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match=r"device\.id"):
        resolve_device_id(DeviceConfig(id="bad id/x"), root=tmp_path)


def test_stored_id_is_used(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/cpuinfo", CPUINFO_PI)
    _write(tmp_path, "/var/lib/affectbox/device-id", "stored-id\n")
    assert resolve_device_id(DeviceConfig(), root=tmp_path) == "stored-id"


def test_device_tree_serial_is_preferred_and_persisted(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/device-tree/serial-number", b"10000000deadbeef\0")
    _write(tmp_path, "/proc/cpuinfo", CPUINFO_PI)
    device = DeviceConfig()
    assert resolve_device_id(device, root=tmp_path) == "pi-deadbeef"
    path = device_id_path(device, tmp_path)
    assert path == tmp_path / "var/lib/affectbox/device-id"
    assert path.read_text() == "pi-deadbeef\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["device-id"]  # no temporary file left


def test_cpuinfo_serial(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/cpuinfo", CPUINFO_PI)
    assert pi_serial(tmp_path) == "10000000a1b2c3d4"
    assert resolve_device_id(DeviceConfig(state_dir="/state"), root=tmp_path) == "pi-a1b2c3d4"
    assert (tmp_path / "state/device-id").read_text() == "pi-a1b2c3d4\n"


def test_zero_serial_is_ignored_and_random_id_is_stable(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/cpuinfo", "Serial\t\t: 0000000000000000\n")
    assert pi_serial(tmp_path) is None
    first = resolve_device_id(DeviceConfig(), root=tmp_path)
    assert first.startswith("ab-") and len(first) == 15 and DEVICE_ID_RE.fullmatch(first)
    assert resolve_device_id(DeviceConfig(), root=tmp_path) == first


def test_not_persisted_when_asked(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/cpuinfo", CPUINFO_PI)
    assert resolve_device_id(DeviceConfig(), root=tmp_path, persist=False) == "pi-a1b2c3d4"
    assert not device_id_path(DeviceConfig(), tmp_path).exists()


def test_first_writer_wins(tmp_path: Path) -> None:
    path = tmp_path / "device-id"
    assert store_device_id(path, "first") == "first"
    assert store_device_id(path, "second") == "first"
    assert store_device_id(path, "second", replace=True) == "second"


def test_malformed_stored_id_is_an_error_not_overwritten(tmp_path: Path) -> None:
    _write(tmp_path, "/var/lib/affectbox/device-id", "not valid!\n")
    with pytest.raises(IdentityError, match="not a device id"):
        resolve_device_id(DeviceConfig(), root=tmp_path)
    assert (tmp_path / "var/lib/affectbox/device-id").read_text() == "not valid!\n"


def test_unwritable_state_dir_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the folder should be")
    with pytest.raises(IdentityError, match="cannot store the device id") as info:
        resolve_device_id(DeviceConfig(state_dir="/state"), root=tmp_path)
    assert "\n" not in str(info.value)
