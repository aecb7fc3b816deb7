"""The device id: from the config, else the one kept in state_dir/device-id, else made once and kept.

`resolve_device_id(device)` is the only way the daemon, the hub link, provisioning and the self-test
learn who this device is. Order:

1. `[device] id` from the config, when set;
2. the id stored in `<state_dir>/device-id` (written by an earlier call or by `affectbox provision`);
3. derived from the Raspberry Pi's serial number (`/proc/device-tree/serial-number`, else the
   `Serial` line of `/proc/cpuinfo`): `pi-<last 8 hex digits>`, stable across reinstalls;
4. generated at random, `ab-<12 hex digits>`.

An id from 3 or 4 is written to `<state_dir>/device-id` (mode 0644) atomically and only if no
other process wrote one first, so it never changes afterwards. Every id matches the hub's rule
`[A-Za-z0-9._-]{1,64}`. `root` relocates the absolute paths (tests use a temporary folder).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

from device.config import DeviceConfig
from device.contract.ids import OPAQUE_ID_RE
from device.errors import AffectboxError

DEVICE_ID_FILE = "device-id"
DEVICE_ID_RE = OPAQUE_ID_RE  # the one id rule (device.contract.ids)
_HEX_RE = re.compile(r"[0-9a-f]{8,}")


class IdentityError(AffectboxError):
    """The stored device id is malformed or cannot be read or written."""


def _under(root: str | os.PathLike[str], path: str) -> Path:
    """`path` (absolute) relocated below `root`."""
    return Path(root) / path.lstrip("/")


def device_id_path(device: DeviceConfig, root: str | os.PathLike[str] = "/") -> Path:
    """Where the generated or derived device id is kept."""
    return _under(root, device.state_dir) / DEVICE_ID_FILE


def pi_serial(root: str | os.PathLike[str] = "/") -> str | None:
    """The board's serial number in lower-case hex, or None (not a Pi, or an all-zero serial)."""
    candidates: list[str] = []
    try:
        raw = _under(root, "/proc/device-tree/serial-number").read_bytes()
        candidates.append(raw.split(b"\0", 1)[0].decode("ascii", "replace"))
    except OSError:
        pass
    try:
        for line in _under(root, "/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "serial":
                candidates.append(value)
    except OSError:
        pass
    for candidate in candidates:
        serial = candidate.strip().lower()
        if _HEX_RE.fullmatch(serial) and serial.strip("0"):
            return serial
    return None


def derive_device_id(root: str | os.PathLike[str] = "/") -> str:
    """`pi-<last 8 hex of the serial>` on a Pi, otherwise a fresh random `ab-<12 hex>`."""
    serial = pi_serial(root)
    if serial is not None:
        return f"pi-{serial[-8:]}"
    return f"ab-{secrets.token_hex(6)}"


def read_stored_device_id(path: Path) -> str | None:
    """The id kept in `path`, None when there is none; IdentityError when the file is malformed."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"{path}: cannot read the device id ({exc})") from None
    if not DEVICE_ID_RE.fullmatch(text):
        raise IdentityError(f"{path}: not a device id (1-64 characters of A-Z a-z 0-9 . _ -); "
                            "fix or delete the file, or set [device] id in the config")
    return text


def store_device_id(path: Path, device_id: str, *, replace: bool = False) -> str:
    """Write `device_id` to `path` (0644, atomically); keep an existing id unless `replace`.

    Returns the id now in the file (another process's, if it won the race to write first).
    """
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise IdentityError(f"device id {device_id!r}: must be 1-64 characters of A-Z a-z 0-9 . _ -")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(device_id + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # the umask may have removed bits
        if replace:
            os.replace(temporary, path)
        else:
            with contextlib.suppress(FileExistsError):  # the first writer wins
                os.link(temporary, path)  # atomic "create if absent"
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise IdentityError(f"{path}: cannot store the device id ({exc.strerror or exc}); "
                            "run as the service user or root, or set [device] id in the config") from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    stored = read_stored_device_id(path)
    if stored is None:  # pragma: no cover - the link or replace above created it
        raise IdentityError(f"{path}: the device id vanished after writing it")
    return stored


def resolve_device_id(device: DeviceConfig, root: str | os.PathLike[str] = "/", *, persist: bool = True) -> str:
    """This device's id (see the module docstring for the order).

    With `persist=False` a derived id is returned without writing it (for read-only callers such
    as a self-test run by an unprivileged user); a generated one is then not stable.
    """
    if device.id:
        if not DEVICE_ID_RE.fullmatch(device.id):
            raise IdentityError(f"device.id: must be 1-64 characters of A-Z a-z 0-9 . _ - (got {device.id!r})")
        return device.id
    path = device_id_path(device, root)
    stored = read_stored_device_id(path)
    if stored is not None:
        return stored
    derived = derive_device_id(root)
    if not persist:
        return derived
    return store_device_id(path, derived)
