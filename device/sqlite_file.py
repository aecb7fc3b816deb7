"""Durable, private SQLite files: what the session store and the hub outbox share.

Both hold patient-linked data on an SD card that can lose power at any moment, so both open
their file the same way: folder 0700 (when we create it) and file 0600 before SQLite touches
it (SQLite gives the -wal and -shm files the same mode), WAL journal, `synchronous=FULL` (a
committed row survives a power cut), `secure_delete` (deleted rows are overwritten), incremental
auto-vacuum and a bounded -wal file. Failures become one line naming the file, the action and a
plain-language cause.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from device.errors import AffectboxError

BUSY_TIMEOUT_MS = 5000


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def explain_error(exc: BaseException, path: Path, action: str, kind: str) -> str:
    """One line: `<path>: cannot <action>: <why> (<SQLite error name>)`."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL"):
        why = "the disk is full (nothing was changed; free space and retry)"
    elif name.startswith("SQLITE_READONLY"):
        why = f"the {kind} file or its folder is read-only"
    elif name.startswith("SQLITE_CANTOPEN"):
        why = f"cannot open the {kind} file or its -wal/-shm files (missing, or the folder is not writable)"
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        why = f"the {kind} stayed locked by another connection for {BUSY_TIMEOUT_MS / 1000:g} s"
    elif name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        why = f"the file is damaged or is not an affectbox {kind}"
    elif name.startswith("SQLITE_IOERR"):
        why = "an I/O error (failing SD card or storage, or a full disk)"
    elif isinstance(exc, OSError):
        why = exc.strerror or str(exc)
    else:
        why = str(exc)
    code = f" ({name})" if name else ""
    return one_line(f"{path}: cannot {action}: {why}{code}")


def prepare_private_file(path: Path, kind: str, error: type[AffectboxError]) -> None:
    """Create the folder (0700) and the file (0600) before SQLite does, so the permissions are ours.

    An existing folder is left as it is: it may be shared (a misconfigured path in /tmp must not
    get /tmp chmod-ed); systemd's StateDirectory= makes the state folder 0700 on the Pi.
    """
    folder = path.parent
    if not folder.is_dir():
        try:
            folder.mkdir(mode=0o700, parents=True)
            os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass
        except OSError as exc:
            raise error(one_line(f"{folder}: cannot create the {kind}'s folder: {exc.strerror or exc}")) from None
    existed = path.exists()
    if existed and not path.is_file():  # a FIFO, a device or a folder must never become a database
        raise error(one_line(f"{path}: is not a regular file; refusing to use it as the {kind}"))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        hint = "the file is read-only for this user: check its owner and mode" if existed \
            else "is its folder writable?"
        raise error(one_line(f"{path}: cannot open the {kind} for writing: {exc.strerror or exc} ({hint})")) from None
    try:
        if os.fstat(fd).st_mode & 0o777 != 0o600:
            with contextlib.suppress(PermissionError):  # not our file: leave it, SQLite will still work
                os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def open_durable(path: Path, kind: str, error: type[AffectboxError], journal_size_limit: int) -> sqlite3.Connection:
    """A read-write connection with the durability settings above; transactions are the caller's.

    isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT), not the sqlite3
    module's implicit ones; check_same_thread=False: callers serialise use with their own lock.
    """
    prepare_private_file(path, kind, error)
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise error(explain_error(exc, path, f"open the {kind}", kind)) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect only on a new, empty file
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise error(f"{path}: cannot switch the {kind} to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute(f"PRAGMA journal_size_limit = {int(journal_size_limit)}")  # bounds the -wal file
    except sqlite3.Error as exc:
        conn.close()
        raise error(explain_error(exc, path, f"open the {kind}", kind)) from exc
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection, path: Path, action: str, kind: str,
                      error: type[AffectboxError]) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT; any failure rolls back and SQLite errors become one-line `error`s.

    IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so a transaction never
    fails half-way on a lock. The caller holds its own lock around this (one connection, threads).
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise error(explain_error(exc, path, action, kind)) from exc
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        # SQLite may already have rolled back (e.g. on SQLITE_FULL); then there is nothing to undo
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise error(explain_error(exc, path, action, kind)) from exc
        raise
