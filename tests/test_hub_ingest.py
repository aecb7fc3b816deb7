"""The hub's intake and writer without a network: config errors, bad input, duplicates, admission.

Payloads come from the contract's builders (tests.hub_support.SimDevice), the database is a real
SQLite file migrated by Alembic; every verdict is checked by what the tables hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from device.contract import payloads
from device.errors import ConfigError
from hub import schema
from hub.admission import approve, revoke
from hub.config import config_from_dict, load_config
from hub.db import make_engine, upgrade
from hub.derive import rebuild
from hub.intake import Accepted, Rejected, accepted_versions, classify
from hub.migrate import digest
from hub.writer import Delivery, Writer
from tests.daemon_harness import ROOT
from tests.hub_support import SimDevice

ROOT_TOPIC = "affectbox"


def events_of(windows: int = 3, device_id: str = "sim-1") -> tuple[str, list[tuple[str, dict]]]:
    sim = SimDevice.__new__(SimDevice)  # only the builders: no connection
    sim.device_id, sim.seq, sim.topic = device_id, {}, f"affectbox/{device_id}"
    return sim.session_events(windows)


def setup_hub(tmp_path: Path, **admission: object):
    raw = {"database": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}, "admission": {"require_approval": False}}
    raw["admission"].update(admission)
    config = config_from_dict(raw)
    engine = make_engine(config.database)
    upgrade(engine)
    return config, engine, Writer(engine, config)


def deliveries(events: list[tuple[str, dict]]) -> list[Delivery]:
    return [Delivery(topic, payloads.encode(p)) for topic, p in events]


# ---- config ---------------------------------------------------------------------------------------

def test_config_errors_name_every_bad_key(tmp_path: Path):
    path = tmp_path / "hub.toml"
    path.write_text('[mqtt]\nport = 70000\nbogus = 1\nshare_group = "a/b"\n[database]\n'
                    'url = "postgresql://hub:secret@db/x"\n[nope]\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message
    for key in ("mqtt.port", "mqtt.bogus", "mqtt.share_group", "database.url", "nope"):
        assert key in message, message
    assert "secret" not in message
    result = subprocess.run([sys.executable, "-m", "hub", "validate-config", "--config", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("affectbox-hub: error: ") and "mqtt.port" in result.stderr


# ---- intake ---------------------------------------------------------------------------------------

def test_every_builder_payload_is_accepted():
    _, events = events_of(2)
    for topic, payload in events:
        verdict = classify(ROOT_TOPIC, topic, payloads.encode(payload), 65536)
        assert isinstance(verdict, Accepted), verdict
    assert payloads.SCHEMA_VERSION in accepted_versions("mood")


@pytest.mark.parametrize(("mutate", "code"), [
    (lambda p: p.update(seq="7"), "invalid"),                       # wrong type
    (lambda p: p.update(valence=True), "invalid"),
    (lambda p: p.update(window_index=-1), "invalid"),
    (lambda p: p.update(probs={"happy": 1.0}), "invalid"),
    (lambda p: p.update(schema=99), "schema_version"),              # unknown version
    (lambda p: p.update(schema=True), "schema_version"),
    (lambda p: p.pop("event_id"), "invalid"),
    (lambda p: p.update(event_id="not-a-uuid"), "invalid"),
    (lambda p: p.update(kind="summary"), "wrong_kind"),
    (lambda p: p.update(device_id="pi-room-9"), "wrong_device"),    # publishing under another id
    (lambda p: p.update(extra="x"), "invalid"),
])
def test_bad_payloads_are_rejected_with_a_reason(mutate, code):
    _, events = events_of(1)
    topic, payload = events[1]
    assert topic.endswith("/mood")
    mutate(payload)
    verdict = classify(ROOT_TOPIC, topic, json.dumps(payload).encode(), 65536)
    assert isinstance(verdict, Rejected) and verdict.code == code, verdict
    assert verdict.reason and "\n" not in verdict.reason


@pytest.mark.parametrize(("topic", "data", "code"), [
    ("affectbox/sim-1/mood", b"\xff\xfe", "malformed"),
    ("affectbox/sim-1/mood", b"[1, 2]", "malformed"),
    ("affectbox/sim-1/mood", b'{"schema": NaN}', "malformed"),
    ("affectbox/sim-1/mood", b"{" * 5000, "malformed"),
    ("affectbox/sim-1/mood", b'{"a":' * 20 + b"1" + b"}" * 20, "malformed"),
    ("affectbox/sim-1/mood", b"x" * 70000, "too_large"),
    ("affectbox/sim-1/availability", b"maybe", "malformed"),
    ("affectbox/bad id!/mood", b"{}", "topic"),
    ("affectbox/sim-1/weather", b"{}", "topic"),
])
def test_malformed_messages_are_rejected(topic, data, code):
    verdict = classify(ROOT_TOPIC, topic, data, 65536)
    assert isinstance(verdict, Rejected) and verdict.code == code, verdict


# ---- the writer -----------------------------------------------------------------------------------

def test_duplicates_reordering_and_seq_conflicts(tmp_path: Path):
    _config, engine, writer = setup_hub(tmp_path)
    sid, events = events_of(20)
    shuffled = list(reversed(events)) + events[5:9]  # reordered, then duplicates
    totals = writer.store(deliveries(shuffled))
    assert totals.counts["stored"] == len(events) and totals.counts["duplicate"] == 4
    # the same seq under another event id is a device bug: rejected, the held event kept
    topic, mood = events[3]
    bad = dict(mood, event_id="00000000-0000-4000-8000-000000000001")
    assert writer.store(deliveries([(topic, bad)])).counts["rejected:seq_conflict"] == 1
    with engine.connect() as conn:
        rows = conn.execute(select(schema.windows.c.window_index, schema.windows.c.event_id)
                            .where(schema.windows.c.session_id == sid)
                            .order_by(schema.windows.c.window_index)).all()
        session = conn.execute(select(schema.sessions)).mappings().one()
        summary = conn.execute(select(schema.summaries)).mappings().one()
    assert [r[0] for r in rows] == list(range(20))
    assert [r[1] for r in rows] == [p["event_id"] for _, p in events if p["kind"] == "mood"]
    assert session["end_event"] == "ended" and session["windows_reported"] == 20 and session["patient_id"] == "P-1"
    assert session["started_received_at"] and session["started_ts"]
    assert summary["windows"] == 20
    # the typed tables are exactly what the raw events re-derive to
    before = {t.name: digest(engine, t) for t in schema.DERIVED}
    with engine.begin() as conn:
        assert rebuild(conn) == len(events)
    assert {t.name: digest(engine, t) for t in schema.DERIVED} == before


def test_unapproved_device_is_held_until_approved_then_revoked(tmp_path: Path):
    acl = tmp_path / "acl"
    config, engine, writer = setup_hub(tmp_path, require_approval=True, acl_file=str(acl))
    _sid, events = events_of(5, device_id="pi-room-3")
    totals = writer.store(deliveries(events))
    assert totals.counts["rejected:unapproved"] == len(events)
    with engine.connect() as conn:
        assert conn.execute(select(schema.devices.c.admission)).scalar() == "pending"
        assert conn.execute(select(schema.windows)).first() is None
    replayed = approve(engine, config, "pi-room-3")
    assert replayed.counts["stored"] == len(events)
    assert "user pi-room-3\ntopic readwrite affectbox/pi-room-3/#" in acl.read_text()
    assert approve(engine, config, "pi-room-3").counts["stored"] == 0  # nothing replayed twice
    revoke(engine, config, "pi-room-3")
    assert "pi-room-3" not in acl.read_text()
    _, later = events_of(2, device_id="pi-room-3")
    assert writer.store(deliveries(later[:1])).counts["rejected:revoked"] == 1
    with engine.connect() as conn:
        assert len(conn.execute(select(schema.windows)).all()) == 5


# ---- the device's side of cmd/resend ------------------------------------------------------------------

def test_resend_requests_are_validated_on_the_device():
    from device.uplink.client import HUB_COMMANDS, parse_command

    ok = parse_command("resend", b'{"request_id":"r-1","session_id":"s-1","from_window":3,"to_window":9}',
                       HUB_COMMANDS)
    assert ok.ok and ok.args == {"session_id": "s-1", "from_window": 3, "to_window": 9, "session_events": False}
    for body in (b'{"request_id":"r","session_id":"a/b","from_window":0,"to_window":1}',
                 b'{"request_id":"r","session_id":"s","from_window":-1,"to_window":1}',
                 b'{"request_id":"r","session_id":"s","from_window":5,"to_window":4}',
                 b'{"request_id":"r","session_id":"s","from_window":0,"to_window":100000}',
                 b'{"request_id":"r","session_id":"s","from_window":true,"to_window":1}',
                 b'{"request_id":"r","session_id":"s","from_window":0,"to_window":1,"session_events":"yes"}',
                 b'{"request_id":"r","session_id":"s","from_window":0}'):
        parsed = parse_command("resend", body, HUB_COMMANDS)
        assert not parsed.ok and parsed.error_code == "invalid", body


# ---- completeness ------------------------------------------------------------------------------------

def test_completeness_asks_for_missing_windows_and_gives_up_when_gone(tmp_path: Path):
    from datetime import UTC, datetime, timedelta

    from hub.completeness import Checker, report

    config, engine, writer = setup_hub(tmp_path)
    sid, events = events_of(10)
    lost = {3, 4, 7}
    kept = [(t, p) for t, p in events if not (p["kind"] == "mood" and p["window_index"] in lost)]
    writer.store(deliveries(kept))
    (state,) = report(engine)
    assert state["missing_windows"] == [3, 4, 7] and not state["complete"]
    assert state["seq_gaps"] == [[4, 5], [8, 8]]
    sent: list[tuple[str, dict]] = []
    checker = Checker(config, engine, lambda topic, data: sent.append((topic, json.loads(data))) or True)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert checker.run_once(later) == 1
    topic, body = sent[0]
    assert topic == "affectbox/sim-1/cmd/resend"
    assert (body["session_id"], body["from_window"], body["to_window"], body["session_events"]) == (sid, 3, 7, False)
    assert checker.run_once(later) == 0  # the request is still taking effect
    # the device answers that it no longer holds the session: the hub stops asking
    answer = payloads.command_result_payload("sim-1", 99, "resend", body["request_id"],
                                             result={"session_id": sid, "held": False, "queued": 0})
    writer.store(deliveries([("affectbox/sim-1/cmd/resend/result", answer)]))
    assert checker.run_once(later + timedelta(hours=1)) == 0
    (state,) = report(engine)
    assert state["given_up"] and "no longer holds" in state["given_up"]
    # a resent window completes a session: it is marked complete
    sid2, events2 = events_of(4, device_id="sim-2")
    writer.store(deliveries([e for e in events2 if e[1].get("window_index") != 2]))
    writer.store(deliveries([e for e in events2 if e[1].get("window_index") == 2]))
    checker.run_once(later + timedelta(hours=2))
    states = {s["session_id"]: s for s in report(engine)}
    assert states[sid2]["complete"] and states[sid2]["missing_windows"] == []


def test_a_message_the_hub_fails_on_is_rejected_not_a_crash_loop(tmp_path: Path, monkeypatch):
    """A bug meeting one payload: the rest of the batch is stored, that one is rejected (`internal`)."""
    import hub.writer

    _config, engine, writer = setup_hub(tmp_path)
    _, events = events_of(6)
    poisoned = events[3][1]["event_id"]
    real = hub.writer.derive

    def derive(conn, row):
        if row["event_id"] == poisoned:
            raise KeyError("an unforeseen field")
        real(conn, row)

    monkeypatch.setattr(hub.writer, "derive", derive)
    totals = writer.store(deliveries(events))
    assert totals.counts["stored"] == len(events) - 1 and totals.counts["rejected:internal"] == 1
    with engine.connect() as conn:
        held = set(conn.execute(select(schema.events_raw.c.event_id)).scalars())
        (reason,) = conn.execute(select(schema.rejected.c.reason)).scalars()
    assert poisoned not in held and len(held) == len(events) - 1  # its raw row went with its savepoint
    assert "KeyError" in reason


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the administrator's case)")
def test_root_cli_leaves_the_database_to_the_service_user(tmp_path: Path):
    """`affectbox-hub device approve` as root creates the SQLite file in the service's folder: it is
    handed back to that folder's owner, so the service can still write it."""
    folder = tmp_path / "state"
    folder.mkdir()
    os.chown(folder, 65534, 65534)
    config = tmp_path / "hub.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{folder / "hub.db"}"\n')
    result = subprocess.run([sys.executable, "-m", "hub", "device", "approve", "pi-1", "--config", str(config)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert {p.stat().st_uid for p in folder.iterdir()} == {65534}


def test_accepted_versions_follow_the_contract_schemas(monkeypatch):
    """When the contract's schema accepts a new version (`enum`), the hub accepts it without a change."""
    import hub.intake

    real = payloads.load_schema

    def bumped(name: str) -> dict:
        schema_doc = real(name)
        schema_doc["properties"]["schema"] = {"enum": [1, 2]}
        return schema_doc

    monkeypatch.setattr(hub.intake.payloads, "load_schema", bumped)
    hub.intake.accepted_versions.cache_clear()
    hub.intake._validator.cache_clear()
    try:
        assert accepted_versions("mood") == {1, 2}
        _, events = events_of(1)
        topic, mood = events[1]
        assert isinstance(classify(ROOT_TOPIC, topic, json.dumps({**mood, "schema": 2}).encode(), 65536), Accepted)
        assert classify(ROOT_TOPIC, topic, json.dumps({**mood, "schema": 3}).encode(), 65536).code == "schema_version"
    finally:
        hub.intake.accepted_versions.cache_clear()
        hub.intake._validator.cache_clear()


def test_the_newest_info_wins_whatever_order_a_rebuild_replays(tmp_path: Path):
    _config, engine, writer = setup_hub(tmp_path)
    infos = [payloads.info_payload("sim-1", seq, software_version=f"0.{seq}.0") for seq in range(1, 6)]
    writer.store(deliveries([("affectbox/sim-1/info", p) for p in infos]))

    def held() -> tuple[str, str]:
        with engine.connect() as conn:
            row = conn.execute(select(schema.devices.c.info_event_id, schema.devices.c.software_version)
                               .where(schema.devices.c.device_id == "sim-1")).one()
        return row[0], row[1]

    assert held() == (infos[-1]["event_id"], "0.5.0")
    with engine.begin() as conn:  # rebuild replays by event_id (random v4): any order of the five
        rebuild(conn)
    assert held() == (infos[-1]["event_id"], "0.5.0")


def test_a_deeply_nested_config_is_one_line(tmp_path: Path):
    """The hub reads its config through the device's guarded reader (issue 12's deep-TOML attack)."""
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 5000 + "1" + "]" * 5000 + "\n")
    result = subprocess.run([sys.executable, "-m", "hub", "validate-config", "--config", str(path)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"affectbox-hub: error: {path}: not a config file: arrays or "
                                                  "tables nested too deeply"]
