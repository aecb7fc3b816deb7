"""`affectbox-hub backup` and `restore`: a consistent copy while the collector runs, and back.

SQLite: the online backup API (a consistent snapshot even while the writer commits; WAL readers
do not block it). PostgreSQL: `pg_dump --format=custom`, restored with `pg_restore` into an empty
database. A restore never overwrites: the target must not exist (SQLite) or must hold no hub
tables (PostgreSQL); the restored database is checked (SQLite integrity check) and migrated.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import Engine, inspect

from device.errors import AffectboxError
from hub.db import make_engine, upgrade


class BackupError(AffectboxError):
    """A backup or restore cannot be done; the message says why."""


def _pg_env(engine: Engine) -> tuple[list[str], dict[str, str]]:
    url = engine.url
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    args = ["--host", url.host or "localhost", "--port", str(url.port or 5432), "--dbname", url.database or ""]
    if url.username:
        args += ["--username", url.username]
    return args, env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (folder / name).exists():
                return str(folder / name)
        raise BackupError(f"{name} is not installed (Debian package postgresql-client)")
    return found


def backup(engine: Engine, out: Path) -> Path:
    """Write a backup of the hub's database to `out` (which must not exist)."""
    if out.exists():
        raise BackupError(f"{out}: exists; a backup never overwrites a file")
    out.parent.mkdir(parents=True, exist_ok=True)
    if engine.url.get_backend_name() == "sqlite":
        source = sqlite3.connect(f"file:{engine.url.database}?mode=ro", uri=True)
        target = sqlite3.connect(out)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        return out
    args, env = _pg_env(engine)
    result = subprocess.run([_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(out), *args],
                            env=env, capture_output=True, text=True, timeout=3600, check=False)
    if result.returncode != 0:
        out.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed: {' '.join(result.stderr.split())[:300]}")
    return out


def restore(backup_file: Path, url: str) -> Engine:
    """Restore `backup_file` into the database at `url` (a new SQLite file, or an empty PostgreSQL database)."""
    if not backup_file.is_file():
        raise BackupError(f"{backup_file}: not found")
    engine = make_engine(url)
    if engine.url.get_backend_name() == "sqlite":
        target_path = Path(engine.url.database or "")
        if target_path.exists():
            raise BackupError(f"{target_path}: exists; restore into a new file (a restore never overwrites)")
        source = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
        try:
            if source.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise BackupError(f"{backup_file}: fails SQLite's integrity check")
            target = sqlite3.connect(target_path)
            try:
                source.backup(target)
            finally:
                target.close()
        except sqlite3.DatabaseError as exc:
            target_path.unlink(missing_ok=True)
            raise BackupError(f"{backup_file}: not an SQLite backup ({exc})") from None
        finally:
            source.close()
    else:
        if "events_raw" in inspect(engine).get_table_names():
            raise BackupError(f"{engine.url.render_as_string(hide_password=True)}: already holds a hub; restore "
                              "into an empty database")
        args, env = _pg_env(engine)
        result = subprocess.run([_tool("pg_restore"), "--no-owner", "--exit-on-error", *args, str(backup_file)],
                                env=env, capture_output=True, text=True, timeout=3600, check=False)
        if result.returncode != 0:
            raise BackupError(f"pg_restore failed: {' '.join(result.stderr.split())[:300]}")
    upgrade(engine)
    return engine
