"""People who may use the dashboard: per-person accounts with a role, passwords hashed as on the device.

Roles: `clinician` (views, review acknowledgements, questionnaire scores, exports with pseudonymous
ids, session start/stop) and `administrator` (all of that, plus the audit log, the clinic-reference
mapping and exports with that mapping). Passwords are stored as the device's scrypt line
(`device.credentials.hash_password`); a disabled account can no longer log in and its live logins
end at their next request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from device.contract.timestamps import utc_timestamp
from device.credentials import CredentialError, hash_password, verify_password
from device.errors import AffectboxError
from hub import schema

ROLES = ("clinician", "administrator")
USERNAME_RE = re.compile(r"[a-z][a-z0-9._-]{1,31}")
MAX_PASSWORD_CHARS = 1024
# a hash to verify against when the user is unknown, so that the answer takes as long either way
_DUMMY_HASH = hash_password("not-a-real-password-0000", salt=b"\0" * 16)


class AccountError(AffectboxError):
    """A refused account change (bad name, unknown user, weak password); the message says which."""


@dataclass(frozen=True)
class User:
    username: str
    role: str
    active: bool

    @property
    def is_admin(self) -> bool:
        return self.role == "administrator"


def validate_username(name: str) -> str:
    if not isinstance(name, str) or not USERNAME_RE.fullmatch(name):
        raise AccountError(f"user name must be 2-32 characters of a-z 0-9 . _ -, starting with a letter "
                           f"(got {str(name)[:40]!r})")
    return name


def _hash(password: str) -> str:
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccountError(f"the password must be at most {MAX_PASSWORD_CHARS} characters long")
    try:
        return hash_password(password)
    except CredentialError as exc:
        raise AccountError(str(exc)) from None


def add_user(engine: Engine, username: str, role: str, password: str) -> User:
    validate_username(username)
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    line = _hash(password)
    now = utc_timestamp()
    with engine.begin() as conn:
        if conn.execute(select(schema.users.c.username).where(schema.users.c.username == username)).first():
            raise AccountError(f"user {username!r} already exists (use `passwd` to change the password)")
        conn.execute(schema.users.insert().values(username=username, role=role, password_hash=line, active=True,
                                                  created_at=now, password_changed_at=now))
    return User(username, role, True)


def set_password(engine: Engine, username: str, password: str) -> None:
    line = _hash(password)
    with engine.begin() as conn:
        done = conn.execute(update(schema.users).where(schema.users.c.username == username)
                            .values(password_hash=line, password_changed_at=utc_timestamp())).rowcount
    if not done:
        raise AccountError(f"no user {username!r}")


def set_active(engine: Engine, username: str, active: bool) -> None:
    with engine.begin() as conn:
        done = conn.execute(update(schema.users).where(schema.users.c.username == username)
                            .values(active=active, disabled_at=None if active else utc_timestamp())).rowcount
    if not done:
        raise AccountError(f"no user {username!r}")


def list_users(engine: Engine) -> list[dict[str, object]]:
    u = schema.users.c
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(u.username, u.role, u.active, u.created_at,
                                                     u.password_changed_at, u.disabled_at)
                                              .order_by(u.username)).mappings()]


def get_user(engine: Engine, username: str) -> User | None:
    u = schema.users.c
    with engine.connect() as conn:
        row = conn.execute(select(u.username, u.role, u.active).where(u.username == username)).first()
    return None if row is None else User(row.username, row.role, bool(row.active))


def authenticate(engine: Engine, username: str, password: str,
                 verify: Callable[[str, str], bool] = verify_password) -> User | None:
    """The user when the name and password match an active account; None otherwise (same cost).

    `verify` checks a password against a stored hash; the dashboard passes the device page's
    `PasswordVerifier.verify`, which runs the checks one at a time on one thread.
    """
    u = schema.users.c
    row = None
    if USERNAME_RE.fullmatch(username or "") and len(password) <= MAX_PASSWORD_CHARS:
        with engine.connect() as conn:
            row = conn.execute(select(u.username, u.role, u.active, u.password_hash)
                               .where(u.username == username)).first()
    ok = verify(password[:MAX_PASSWORD_CHARS], row.password_hash if row else _DUMMY_HASH)
    if row is None or not ok or not row.active:
        return None
    return User(row.username, row.role, True)
