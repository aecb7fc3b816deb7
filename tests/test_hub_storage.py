"""Storage tools on real databases: migrate SQLite -> PostgreSQL (verified), backup and restore.

A hub record is built with the real writer (sessions, duplicates, rejections, a status, a
pending device), then moved and restored through the `affectbox-hub` command line; every table
is compared row by row (hub.migrate.digest) with the original.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from device.contract import payloads
from hub import schema
from hub.config import config_from_dict
from hub.db import make_engine, upgrade
from hub.migrate import digest
from hub.writer import Delivery, Writer
from tests.daemon_harness import ROOT
from tests.hub_support import Postgres, SimDevice, needs_postgres

pytestmark = pytest.mark.timeout(300)


def hub_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub", *args, "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def build_record(tmp_path: Path) -> tuple[Path, str]:
    """A SQLite hub with two devices' sessions, duplicates, rejections and a status; its config and URL."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config_path = tmp_path / "hub.toml"
    config_path.write_text(f'[database]\nurl = "{url}"\n[admission]\nrequire_approval = false\n')
    config = config_from_dict({"database": {"url": url}, "admission": {"require_approval": False}})
    engine = make_engine(config.database)
    upgrade(engine)
    writer = Writer(engine, config)
    for device_id in ("pi-1", "pi-2"):
        sim = SimDevice.__new__(SimDevice)
        sim.device_id, sim.seq, sim.topic = device_id, {}, f"affectbox/{device_id}"
        for windows in (30, 12):
            _, events = sim.session_events(windows)
            writer.store([Delivery(t, payloads.encode(p)) for t, p in events + events[:3]])
        status = payloads.status_payload(device_id, sim.next_seq(None), state="idle")
        writer.store([Delivery(f"{sim.topic}/status", payloads.encode(status)),
                      Delivery(f"{sim.topic}/mood", b"{broken"), Delivery(f"{sim.topic}/availability", b"online")])
    engine.dispose()
    return config_path, url


def digests(url: str) -> dict[str, tuple[int, str]]:
    engine = make_engine(url)
    try:
        return {t.name: digest(engine, t) for t in schema.metadata.sorted_tables}
    finally:
        engine.dispose()


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    yield server
    server.close()


def create_database(server: Postgres, name: str) -> str:
    admin = create_engine(server.url_for("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server.url_for(name)


def test_sqlite_backup_and_restore(tmp_path: Path):
    config, url = build_record(tmp_path)
    original = digests(url)
    assert original["windows"][0] == 84 and original["rejected"][0] == 2
    backup = tmp_path / "backups" / "hub-1.db"
    result = hub_cli(config, "backup", str(backup))
    assert result.returncode == 0, result.stderr
    again = hub_cli(config, "backup", str(backup))  # never overwrites
    assert again.returncode == 2 and "exists" in again.stderr and again.stderr.count("\n") == 1
    restored = tmp_path / "restored.db"
    result = hub_cli(config, "restore", str(backup), "--to", f"sqlite:///{restored}")
    assert result.returncode == 0, result.stderr
    assert digests(f"sqlite:///{restored}") == original
    refused = hub_cli(config, "restore", str(backup), "--to", url)  # the live database is never overwritten
    assert refused.returncode == 2 and "exists" in refused.stderr
    assert digests(url) == original
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    bad = hub_cli(config, "restore", str(junk), "--to", f"sqlite:///{tmp_path / 'x.db'}")
    assert bad.returncode == 2 and bad.stderr.startswith("affectbox-hub: error: ")
    assert not (tmp_path / "x.db").exists()


@needs_postgres
def test_migrate_to_postgresql_then_pg_backup_and_restore(tmp_path: Path, postgres):
    config, url = build_record(tmp_path)
    original = digests(url)
    result = hub_cli(config, "migrate", "--to", postgres.url)
    assert result.returncode == 0, result.stderr
    assert "migrated and verified" in result.stdout and "events_raw 98" in result.stdout, result.stdout
    assert digests(postgres.url) == original
    # a second migration into the now-full database is refused, nothing touched
    again = hub_cli(config, "migrate", "--to", postgres.url)
    assert again.returncode == 2 and "already holds events" in again.stderr
    # the migrated hub goes on: new ids in rejected do not collide with the copied ones
    pg_config = tmp_path / "pg.toml"
    pg_config.write_text(f'[database]\nurl = "{postgres.url}"\n[admission]\nrequire_approval = false\n')
    engine = make_engine(postgres.url)
    writer = Writer(engine, config_from_dict({"database": {"url": postgres.url},
                                              "admission": {"require_approval": False}}))
    assert writer.store([Delivery("affectbox/pi-1/mood", b"[]")]).counts["rejected:malformed"] == 1
    engine.dispose()

    dump = tmp_path / "hub.pgdump"
    result = hub_cli(pg_config, "backup", str(dump))
    assert result.returncode == 0, result.stderr
    target = create_database(postgres, "hub_restored")
    result = hub_cli(pg_config, "restore", str(dump), "--to", target)
    assert result.returncode == 0, result.stderr
    assert digests(target) == digests(postgres.url)
    refused = hub_cli(pg_config, "restore", str(dump), "--to", postgres.url)
    assert refused.returncode == 2 and "already holds a hub" in refused.stderr
