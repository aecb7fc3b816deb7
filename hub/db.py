"""One SQL layer for SQLite and PostgreSQL: engines, pragmas, Alembic migrations, dialect helpers.

SQLite (the default) runs in WAL mode with `synchronous=FULL` (a committed and acked event
survives a power cut), a busy timeout and foreign keys on. PostgreSQL goes through psycopg 3;
its password comes from a credential file, never from the URL in the config. The schema is
brought to Alembic's head at start; on PostgreSQL an advisory lock serialises collectors that
start together.
"""

from __future__ import annotations

import contextlib
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError

from device.errors import AffectboxError
from hub.config import DatabaseConfig

log = logging.getLogger("affectbox.hub.db")


class DatabaseError(AffectboxError):
    """The database cannot be opened, migrated or used; the message says which and why."""


def database_url(config: DatabaseConfig) -> URL:
    """The configured URL with the psycopg driver and the password from its file."""
    try:
        url = make_url(config.url)
    except ArgumentError as exc:
        raise DatabaseError(f"database.url: not a database URL ({exc})") from None
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
        if config.password_file:
            try:
                password = Path(config.password_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise DatabaseError(f"database.password_file: cannot read {config.password_file} "
                                    f"({exc.strerror or exc})") from None
            url = url.set(password=password)
    return url


def make_engine(config: DatabaseConfig | str) -> Engine:
    """An engine for a config (or a plain URL string, for tools), SQLite pragmas applied per connection."""
    if isinstance(config, str):
        config = DatabaseConfig(url=config)
    url = database_url(config)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": config.busy_timeout_ms / 1000})
        busy = config.busy_timeout_ms

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy)}")
            cursor.close()

        return engine
    if url.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2,
                             connect_args={"connect_timeout": 10})
    raise DatabaseError(f"database.url: unsupported database {url.get_backend_name()!r} (sqlite or postgresql)")


def give_back_sqlite_files(engine: Engine) -> None:
    """Run as root (an administrator's `affectbox-hub device approve`), hand the SQLite files back
    to the owner of their folder (the service's user), so a file root created stays writable by it."""
    if os.geteuid() != 0 or engine.url.get_backend_name() != "sqlite" or not engine.url.database:
        return
    database = Path(engine.url.database)
    try:
        owner = database.parent.stat()
    except OSError:
        return
    if owner.st_uid == 0:
        return
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_uid != owner.st_uid:
                os.chown(path, owner.st_uid, owner.st_gid)


def _alembic_config(connection: Connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("hub").joinpath("migrations")))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("hub").joinpath("migrations")))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there)."""
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # collectors starting together: one migrates, the others wait and find it done
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(717171)")
            current = MigrationContext.configure(connection).get_current_revision()
            if current != head_revision():
                log.info("database: migrating from %s to %s", current, head_revision())
                command.upgrade(_alembic_config(connection), "head")
    except AffectboxError:
        raise
    except Exception as exc:
        raise DatabaseError(f"database {safe_url(engine)}: cannot open or migrate ({one_line(exc)})") from None


def safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    return text[:300] or type(exc).__name__


def insert_ignoring_conflicts(connection: Connection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING (any unique constraint) in the connection's dialect."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()
