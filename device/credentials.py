"""Secret files: where they are, refusing loose permissions, and the status page's password hash.

Secrets never go in the config. At provisioning they are written to files readable only by the
service user; systemd hands them to the daemon with `LoadCredential=` in `$CREDENTIALS_DIRECTORY`.
The status-page password is stored as an scrypt hash (stdlib `hashlib.scrypt`), one line:
`scrypt$<n>$<r>$<p>$<salt, base64>$<hash, base64>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from device.atomic import check_output_path
from device.errors import AffectboxError

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSWORD_LENGTH = 8


class CredentialError(AffectboxError):
    """A secret file is missing, unreadable, malformed or has loose permissions."""


def credentials_folder(config_path: str | os.PathLike[str]) -> Path:
    """The folder of the secret files that belong to a config file: `<config dir>/credentials`."""
    return Path(config_path).resolve().parent / "credentials"


def credentials_dir() -> Path | None:
    """systemd's credentials directory ($CREDENTIALS_DIRECTORY), or None outside systemd."""
    value = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(value) if value else None


def check_secret_permissions(path: str | os.PathLike[str], what: str = "secret") -> None:
    """Refuse a secret file that other users may read or write (group or world bits set).

    systemd's credentials directory is already private to the service, so files there pass.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CredentialError(f"{path}: the {what} file does not exist") from None
    except OSError as exc:
        raise CredentialError(f"{path}: cannot inspect the {what} file ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise CredentialError(f"{path}: the {what} file is not a regular file")
    if mode & 0o077:
        raise CredentialError(f"{path}: the {what} file is readable or writable by other users "
                              f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}")


def read_secret(path: str | os.PathLike[str], what: str = "secret") -> str:
    """The secret in a one-line file: the one rule every reader of a secret file uses.

    After the permission check, one trailing line break (`\n` or `\r\n`) is dropped and nothing
    else: a password may begin or end with spaces, and the device, the installer and the hub must
    all read it the same way (they once read it three ways). An empty file or one with several
    lines is refused, because either is a mistake that would otherwise show up as a failed login.
    """
    check_secret_permissions(path, what)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CredentialError(f"{path}: cannot read the {what} file ({why})") from None
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text:
        raise CredentialError(f"{path}: the {what} file is empty")
    if "\n" in text or "\r" in text:
        raise CredentialError(f"{path}: the {what} file must hold one line")
    return text


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The one-line scrypt hash stored in the status page's password file."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CredentialError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    encode = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"


def parse_password_hash(line: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, digest) of a stored hash; CredentialError when it is not one."""
    parts = line.strip().split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError("not an scrypt hash")
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or n > 2**20:
            raise ValueError("parameters out of range")
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except ValueError as exc:
        raise CredentialError(f"the stored password hash is malformed ({exc}); run `affectbox provision` "
                              "to set the status page password again") from None
    return n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches the stored hash (constant-time comparison)."""
    n, r, p, salt, digest = parse_password_hash(stored)
    candidate = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(digest),
                               maxmem=256 * 1024 * 1024)
    return hmac.compare_digest(candidate, digest)


def write_secret(path: str | os.PathLike[str], text: str) -> Path:
    """Write a secret file created 0600 from the start (never briefly world-readable), atomically."""
    path = Path(path)
    check_output_path(path, overwrite=True)  # a symlink, FIFO or device there is refused, not replaced
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
