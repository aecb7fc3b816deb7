"""The dashboard app against a real SQLite record filled through the hub's writer: access control,
audit log, the views' content, review acknowledgements, questionnaires, exports (FHIR, research)."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import select

from device.contract.timestamps import UTC_TIMESTAMP_RE
from device.notice import NOT_A_DIAGNOSIS
from device.web.security import COOKIE_NAME
from hub import schema
from hub.config import config_from_dict
from hub.dashboard import accounts, fhir, research
from hub.dashboard.app import create_app
from hub.db import make_engine, upgrade
from tests.daemon_harness import ROOT
from tests.dash_support import History
from tests.hub_support import PG_BIN, Postgres

T0 = datetime(2025, 11, 3, 10, tzinfo=UTC)
NOW = T0 + timedelta(weeks=30)
ADMIN_PW = "correct horse battery"
CLIN_PW = "clinician password 1"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("dash")
    config = config_from_dict({"database": {"url": f"sqlite:///{folder / 'hub.db'}"}})
    engine = make_engine(config.database)
    upgrade(engine)
    h = History(engine)
    for i in range(24):  # P-1: a stable course on two devices, then a sustained drop
        h.session("room-a" if i % 2 else "room-b", "P-1", T0 + timedelta(weeks=i), 0.3 if i < 18 else -0.4)
        if i == 12:
            h.info("room-a", T0 + timedelta(weeks=i, days=1), model_version="2.0")
    for i in range(3):  # P-2: too short for a baseline
        h.session("room-a", "P-2", T0 + timedelta(days=3 + i), 0.1)
    h.status("room-a", NOW - timedelta(minutes=1), camera_ok=False, temperature=81.0, throttled=True, depth=7)
    h.status("room-b", NOW - timedelta(hours=5))  # online, but silent for hours
    accounts.add_user(engine, "alice", "administrator", ADMIN_PW)
    accounts.add_user(engine, "bob", "clinician", CLIN_PW)
    return config, engine


@pytest.fixture
def app(record):
    config, engine = record
    clock = Clock()
    flask_app = create_app(config, engine, clock=clock, now=lambda: NOW)
    flask_app.clock = clock
    return flask_app


def login(client, name: str, password: str):
    form = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    return client.post("/login", data={"username": name, "password": password, "next": "/patients",
                                       "csrf_token": token})


def csrf(client, path: str = "/patients") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def text(response) -> str:
    body = re.sub(r"<svg.*?</svg>", " ", response.get_data(as_text=True), flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", body).split()).replace("&#39;", "'").replace("&amp;", "&")


def audit_rows(engine, **where):
    a = schema.audit_log.c
    query = select(schema.audit_log).order_by(a.id)
    for k, v in where.items():
        query = query.where(getattr(a, k) == v)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


# ---- access ---------------------------------------------------------------------------------------

def test_pages_need_a_login_and_answer_with_security_headers(app):
    c = app.test_client()
    r = c.get("/patients/P-1")
    assert r.status_code == 303 and r.headers["Location"] == "/login?next=/patients/P-1"
    r = c.get("/login")
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Cache-Control"] == "no-store"
    assert NOT_A_DIAGNOSIS in r.get_data(as_text=True)
    assert "<script" not in r.get_data(as_text=True)  # server-rendered: no script at all
    assert c.get("/healthz").status_code == 200


def test_login_form_needs_its_own_token(app):
    c = app.test_client()
    r = c.post("/login", data={"username": "alice", "password": ADMIN_PW})  # a forged cross-site login
    assert r.status_code == 403 and "expired" in text(r) and COOKIE_NAME not in r.headers.get("Set-Cookie", "")
    other = app.test_client()  # another browser's form token does not work with this browser's cookie
    token = re.search(r'name="csrf_token" value="([^"]+)"', other.get("/login").get_data(as_text=True)).group(1)
    c.get("/login")
    assert c.post("/login", data={"username": "alice", "password": ADMIN_PW, "csrf_token": token}).status_code == 403
    assert login(c, "alice", ADMIN_PW).status_code == 303


def test_login_failures_are_audited_and_rate_limited(app, record):
    _, engine = record
    c = app.test_client()
    before = len(audit_rows(engine, action="login_failed"))
    for _ in range(5):
        assert login(c, "alice", "wrong password!").status_code == 401
    assert login(c, "nobody-here", "whatever12345").status_code == 429  # per client, whatever the name
    r = login(c, "alice", ADMIN_PW)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert len(audit_rows(engine, action="login_failed")) == before + 5
    app.clock.t += 61
    assert login(c, "alice", ADMIN_PW).status_code == 303


def test_logins_expire_and_disabled_accounts_are_logged_out(app, record):
    config, engine = record
    c = app.test_client()
    assert login(c, "bob", CLIN_PW).status_code == 303
    assert c.get("/patients").status_code == 200
    app.clock.t += config.dashboard.session_minutes * 60 + 1
    assert c.get("/patients").status_code == 303
    assert login(c, "bob", CLIN_PW).status_code == 303
    accounts.set_active(engine, "bob", False)
    try:
        assert c.get("/patients").status_code == 303
        assert login(c, "bob", CLIN_PW).status_code == 401
    finally:
        accounts.set_active(engine, "bob", True)


def test_posts_need_the_csrf_token_and_roles_are_enforced(app):
    c = app.test_client()
    login(c, "bob", CLIN_PW)
    r = c.post("/patients/P-1/questionnaire", data={"instrument": "PHQ-9", "total": "5", "taken_on": "2026-01-01"})
    assert r.status_code == 403 and "CSRF" in text(r)
    assert c.get("/audit").status_code == 403
    assert c.get("/exports/session.csv?mapping=1").status_code == 403
    r = c.post("/patients/P-1/reference", data={"clinic_ref": "MRN-1", "csrf_token": csrf(c)})
    assert r.status_code == 403


# ---- views ------------------------------------------------------------------------------------------

def test_devices_show_failing_and_silent_devices_first(app):
    c = app.test_client()
    login(c, "bob", CLIN_PW)
    html = c.get("/devices").get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="30">' in html  # a device falling silent shows without a reload
    page = text(c.get("/devices"))
    assert "2 devices need attention: room-b (silent), room-a (attention)" in page
    assert "camera: no frames for 30 s" in page and "throttled" in page and "81 °C" in page
    assert "silent for 5 h while marked online" in page
    detail = text(c.get("/devices/room-a"))
    assert "model face 2.0" in detail and "outbox 7 waiting" in detail
    assert c.get("/devices/nope").status_code == 404


def test_patient_list_and_course(app, record):
    _, engine = record
    c = app.test_client()
    login(c, "bob", CLIN_PW)
    listing = text(c.get("/patients"))
    assert re.search(r"P-1 – 24 \S+ \S+ review suggested \(coverage 100 %\)", listing), listing
    assert re.search(r"P-2 – 3 .* baseline pending", listing)
    page = text(c.get("/patients/P-1?period=week"))
    assert NOT_A_DIAGNOSIS in page
    assert "review suggested since 2026-03-" in page
    assert "sessions 24 from room-a, room-b" in page
    assert "model changes 2026-02-02 room-a: 0.9.0 (face 2.0, speech 1.0)" in page
    assert re.search(r"baseline valence \+0\.\d\d ± 0\.\d\d \(first 8 sessions\)", page)
    assert "2025-W45" in page and "2026-W01" in page
    assert text(c.get("/patients/P-1?period=year")).count("2026") >= 1
    assert c.get("/patients/P-1?period=day").status_code == 400
    assert c.get("/patients/bad%2Fid").status_code in (400, 404)
    assert c.get("/patients/P-404").status_code == 404
    views = audit_rows(engine, action="view", patient_id="P-1", username="bob")
    assert views and views[-1]["target"].startswith("/patients/P-1")


def test_acknowledging_a_flag_needs_a_note_and_closes_it(app, record):
    _, engine = record
    c = app.test_client()
    login(c, "bob", CLIN_PW)
    page = c.get("/patients/P-1").get_data(as_text=True)
    key = re.search(r'name="flag_key" value="([^"]+)"', page).group(1)
    token = csrf(c)
    r = c.post("/patients/P-1/acknowledge", data={"flag_key": key, "note": "  ", "csrf_token": token})
    assert r.status_code == 400
    r = c.post("/patients/P-1/acknowledge", data={"flag_key": "x/y", "note": "seen", "csrf_token": token})
    assert r.status_code == 404
    r = c.post("/patients/P-1/acknowledge", data={"flag_key": key, "note": "Reviewed with the patient.",
                                                  "csrf_token": token})
    assert r.status_code == 303
    page = text(c.get("/patients/P-1"))
    assert "No open review flag" in page and "by bob: Reviewed with the patient." in page
    assert "review suggested" not in text(c.get("/patients"))
    r = c.post("/patients/P-1/acknowledge", data={"flag_key": key, "note": "again", "csrf_token": token})
    assert r.status_code == 409
    assert audit_rows(engine, action="acknowledge", patient_id="P-1")


def test_questionnaires_are_validated_and_overlaid(app):
    c = app.test_client()
    login(c, "bob", CLIN_PW)
    token = csrf(c)
    for bad in ({"instrument": "PHQ-9", "total": "28", "taken_on": "2026-01-01"},
                {"instrument": "GAD-7", "total": "22", "taken_on": "2026-01-01"},
                {"instrument": "BDI", "total": "3", "taken_on": "2026-01-01"},
                {"instrument": "PHQ-9", "total": "3", "taken_on": "01/02/2026"},
                {"instrument": "PHQ-9", "total": "3", "taken_on": "2099-01-01"}):
        r = c.post("/patients/P-1/questionnaire", data={**bad, "csrf_token": token})
        assert r.status_code == 400, bad
    for total, day in (("8", "2026-01-10"), ("16", "2026-04-01")):
        assert c.post("/patients/P-1/questionnaire", data={"instrument": "PHQ-9", "total": total, "taken_on": day,
                                                           "csrf_token": token}).status_code == 303
    page = c.get("/patients/P-1").get_data(as_text=True)
    assert page.count('class="questionnaire"') == 2 and "PHQ-9 16 on 2026-04-01" in page


def test_session_timeline_and_side_by_side(app, record):
    _, engine = record
    with engine.connect() as conn:
        keys = [f"{d}/{s}" for d, s in conn.execute(select(schema.sessions.c.device_id, schema.sessions.c.session_id)
                                                    .where(schema.sessions.c.patient_id == "P-1")).all()]
    c = app.test_client()
    login(c, "bob", CLIN_PW)
    r = c.get(f"/sessions/{keys[0]}")
    assert r.status_code == 200 and r.get_data(as_text=True).count("<rect") >= 12  # one strip cell per window
    both = c.get(f"/compare?a={keys[0]}&b={keys[1]}").get_data(as_text=True)
    assert both.count('class="card session-view"') == 2
    assert c.get("/compare?a=x%20y/z&b=y").status_code == 400
    assert c.get("/sessions/room-a/nope").status_code == 404


def test_clinic_reference_is_admin_only_shown_and_audited(app):
    c = app.test_client()
    login(c, "alice", ADMIN_PW)
    r = c.post("/patients/P-2/reference", data={"clinic_ref": "MRN 0042", "csrf_token": csrf(c)})
    assert r.status_code == 303
    assert "MRN 0042" in text(c.get("/patients")) and "MRN 0042" in text(c.get("/patients/P-2"))
    audit_page = text(c.get("/audit?patient=P-2"))
    assert "alice admin P-2 clinic reference set" in audit_page
    assert "bob view P-1" in text(c.get("/audit"))


# ---- exports ------------------------------------------------------------------------------------------

def test_fhir_bundle_validates_and_maps_each_session(app, record):
    _, engine = record
    c = app.test_client()
    login(c, "alice", ADMIN_PW)
    r = c.get("/patients/P-1/fhir")
    document = json.loads(r.data)
    parsed = fhir.validate(document)  # R4B models: raises on any invalid element
    assert parsed.type == "transaction"
    observations = [e for e in document["entry"] if e["resource"]["resourceType"] == "Observation"]
    affect = [e["resource"] for e in observations if e["resource"]["code"]["coding"][0]["system"] == fhir.LOCAL_SYSTEM]
    with engine.connect() as conn:
        event_ids = set(conn.execute(select(schema.summaries.c.event_id)
                                     .where(schema.summaries.c.patient_id == "P-1")).scalars())
    assert {o["identifier"][0]["value"].removeprefix("urn:uuid:") for o in affect} == event_ids
    obs = affect[0]
    assert obs["status"] == "final" and obs["valueQuantity"]["code"] == "1"
    codes = {comp["code"]["coding"][0]["code"] for comp in obs["component"]}
    assert {"arousal", "valence-sd", "coverage-mood", "coverage-face", "coverage-speech"} <= codes
    assert {f"prob-{label}" for label in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")} <= codes
    assert obs["effectivePeriod"]["end"] > obs["effectivePeriod"]["start"]
    assert all(UTC_TIMESTAMP_RE.fullmatch(t) for t in obs["effectivePeriod"].values()), obs["effectivePeriod"]
    assert obs["note"][0]["text"] == NOT_A_DIAGNOSIS
    devices = [e for e in document["entry"] if e["resource"]["resourceType"] == "Device"]
    assert len(devices) == 3  # room-b, room-a with face 1.0, room-a with face 2.0
    assert all(e["request"]["ifNoneExist"].startswith("identifier=") for e in document["entry"])
    urls = {e["fullUrl"] for e in devices}
    assert all(o["device"]["reference"] in urls for o in affect)
    surveys = [e["resource"] for e in observations if e["resource"]["category"][0]["coding"][0]["code"] == "survey"]
    assert {s["code"]["coding"][0]["code"] for s in surveys} <= {"44261-6", "70274-6"}
    assert audit_rows(engine, action="export", patient_id="P-1")
    bad = json.loads(r.data)
    del bad["entry"][1]["resource"]["status"]  # the models check structure and types, not value sets
    with pytest.raises(Exception, match="status"):
        fhir.validate(bad)


class _Fhir(BaseHTTPRequestHandler):
    """A FHIR server in miniature: transaction Bundles with conditional create (ifNoneExist)."""

    store: ClassVar[dict[str, dict]] = {}

    def do_POST(self) -> None:
        bundle = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answers = []
        for entry in bundle["entry"]:
            condition = entry["request"]["ifNoneExist"]
            status = "200 OK" if condition in self.store else "201 Created"
            self.store.setdefault(condition, entry["resource"])
            answers.append({"response": {"status": status}})
        body = json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": answers}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_fhir_delivery_is_idempotent(app):
    c = app.test_client()
    login(c, "alice", ADMIN_PW)
    document = json.loads(c.get("/patients/P-1/fhir").data)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fhir)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/fhir"
        first = fhir.deliver(document, url)
        second = fhir.deliver(document, url)  # a retry
        assert [e["response"]["status"] for e in first["entry"]].count("201 Created") == len(document["entry"])
        assert all(e["response"]["status"] == "200 OK" for e in second["entry"])
        assert len(_Fhir.store) == len(document["entry"])
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(fhir.FhirError, match="cannot reach the FHIR server"):
        fhir.deliver(document, url)


def test_fhir_command_delivers_idempotently(record, tmp_path: Path):
    base, _ = record
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fhir)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Fhir.store.clear()
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f'[database]\nurl = "{base.database.url}"\n'
                   f'[dashboard]\nfhir_url = "http://127.0.0.1:{server.server_port}/fhir"\n')
    try:
        command = [sys.executable, "-m", "hub", "fhir", "P-1", "--deliver", "--out", str(tmp_path / "b.json"),
                   "--config", str(cfg)]
        runs = [subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120) for _ in range(2)]
    finally:
        server.shutdown()
        server.server_close()
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    entries = len(json.loads((tmp_path / "b.json").read_text())["entry"])
    assert f"delivered {entries} entries" in runs[1].stdout and len(_Fhir.store) == entries
    done = subprocess.run([sys.executable, "-m", "hub", "fhir", "P-1", "--deliver", "--config", str(cfg)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("affectbox-hub: error: cannot reach the FHIR server")


def test_research_exports_are_tidy_pseudonymous_and_audited(app, record):
    import pyarrow.parquet as pq

    _, engine = record
    c = app.test_client()
    login(c, "bob", CLIN_PW)
    rows = list(csv.DictReader(io.StringIO(c.get("/exports/session.csv").get_data(as_text=True))))
    assert len(rows) == 27 and list(rows[0]) == research.columns_of("session", False)
    assert "clinic_ref" not in rows[0] and {r["patient_id"] for r in rows} == {"P-1", "P-2"}
    windows = pq.read_table(io.BytesIO(c.get("/exports/window.parquet").data))
    assert windows.num_rows == 27 * 12 and str(windows.schema.field("valence").type) == "double"
    months = list(csv.DictReader(io.StringIO(c.get("/exports/patient-month.csv").get_data(as_text=True))))
    assert {(r["patient_id"], r["month"]) for r in months} >= {("P-1", "2025-11"), ("P-1", "2026-04")}
    book = json.loads(c.get("/exports/window.json").data)
    assert [col["name"] for col in book["columns"]] == research.columns_of("window", True)
    assert audit_rows(engine, action="export", username="bob")
    admin = app.test_client()
    login(admin, "alice", ADMIN_PW)
    mapped = list(csv.DictReader(io.StringIO(admin.get("/exports/session.csv?mapping=1").get_data(as_text=True))))
    assert "clinic_ref" in mapped[0]
    assert any((r["target"] or "").endswith("with clinic mapping") for r in audit_rows(engine, username="alice"))


# ---- the command line -----------------------------------------------------------------------------------

def test_user_commands(tmp_path: Path):
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n')

    def hub(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hub", *args], input=stdin, capture_output=True, text=True,
                              cwd=ROOT, timeout=120)

    done = hub("user", "add", "carol", "--role", "clinician", "--password-stdin", "--config", str(cfg),
               stdin="a good long password\n")
    assert done.returncode == 0, done.stderr
    again = hub("user", "add", "carol", "--role", "clinician", "--password-stdin", "--config", str(cfg), stdin="x" * 12)
    assert again.returncode == 2 and again.stderr.strip() == \
        "affectbox-hub: error: user 'carol' already exists (use `passwd` to change the password)"
    short = hub("user", "add", "dave", "--role", "administrator", "--password-stdin", "--config", str(cfg), stdin="x\n")
    assert short.returncode == 2 and "at least" in short.stderr and len(short.stderr.strip().splitlines()) == 1
    assert hub("user", "disable", "carol", "--config", str(cfg)).returncode == 0
    listing = json.loads(hub("user", "list", "--json", "--config", str(cfg)).stdout)
    assert [(u["username"], u["role"], u["active"]) for u in listing] == [("carol", "clinician", False)]
    assert hub("user", "passwd", "nobody", "--password-stdin", "--config", str(cfg), stdin="long enough pw\n"
               ).stderr.strip() == "affectbox-hub: error: no user 'nobody'"
    out = tmp_path / "s.parquet"
    done = hub("export", "session", "--format", "parquet", "--out", str(out), "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert out.exists() and out.with_suffix(".codebook.md").read_text().startswith("# affectbox research export")


def test_migration_carries_the_dashboards_tables(tmp_path: Path):
    from hub.dashboard import audit
    from hub.migrate import migrate

    # its own small record: one info per device (hub/derive.py applies a device's `info` events in
    # replay order, so a device with several would make the rebuilt devices row differ, see the report)
    engine = make_engine(f"sqlite:///{tmp_path / 'source.db'}")
    upgrade(engine)
    History(engine).session("room-z", "P-M", T0, 0.1, windows=3)
    accounts.add_user(engine, "alice", "administrator", ADMIN_PW)
    audit.record(engine, "alice", "view", patient_id="P-M", target="/patients/P-M")
    target = make_engine(f"sqlite:///{tmp_path / 'copy.db'}")
    counts = migrate(engine, target)
    assert {"users", "audit_log", "questionnaires", "review_acks", "patient_refs", "commands_sent"} <= set(counts)
    assert counts["users"] == 1 and counts["audit_log"] == 1
    assert accounts.authenticate(target, "alice", ADMIN_PW) is not None
    if PG_BIN is None:
        return
    pg = Postgres()  # and into PostgreSQL: the copied ids move its sequences on
    try:
        target = make_engine(pg.url)
        migrate(engine, target)
        audit.record(target, "alice", "login")
        assert [r["id"] for r in audit.read(target)] == [2, 1]
        target.dispose()
    finally:
        pg.close()


def test_start_and_stop_commands_go_out_over_mqtt_and_show_their_result(record, tmp_path: Path):
    from hub.writer import Delivery, Writer
    from tests.mqtt_support import Broker, Observer, needs_broker

    if needs_broker.args[0]:
        pytest.skip(needs_broker.kwargs["reason"])
    base, engine = record
    broker = Broker(tmp_path / "broker")
    broker.start()
    observer = Observer(broker.port, ["affectbox/+/cmd/#"])
    try:
        config = config_from_dict({"database": {"url": base.database.url},
                                   "mqtt": {"port": broker.port, "tls": "off"}})
        c = create_app(config, engine, now=lambda: datetime.now(UTC)).test_client()
        login(c, "bob", CLIN_PW)
        token = csrf(c, "/devices/room-a")
        assert c.post("/devices/room-a/start", data={"patient_id": "bad id!", "csrf_token": token}).status_code == 400
        assert c.post("/devices/room-a/start", data={"patient_id": "P-9", "max_duration_minutes": "0",
                                                     "csrf_token": token}).status_code == 400
        r = c.post("/devices/room-a/start", data={"patient_id": "P-9", "max_duration_minutes": "20",
                                                  "csrf_token": token})
        assert r.status_code == 303
        assert observer.wait_for(lambda ms: len(ms) == 1, 10)
        message = observer.messages[0]
        body = json.loads(message.payload)
        assert message.topic == "affectbox/room-a/cmd/start_session" and not message.retain
        assert body["patient_id"] == "P-9" and body["max_duration_s"] == 1200
        page = c.get("/devices/room-a").get_data(as_text=True)
        assert 'data-outcome="waiting"' in page and '<meta http-equiv="refresh" content="2">' in page
        # the device's answer, as the collector stores it
        result = {"schema": 1, "kind": "command_result", "event_id": "0b3e2a5c-0000-4000-8000-000000000001",
                  "device_id": "room-a", "session_id": None, "seq": 900, "ts": "2026-06-01T10:00:00.000Z",
                  "command": "start_session", "request_id": body["request_id"], "ok": True,
                  "result": {"session_id": "s-new", "state": "running"}}
        Writer(engine, base).store([Delivery("affectbox/room-a/cmd/start_session/result", json.dumps(result).encode())])
        page = text(c.get("/devices/room-a"))
        assert "start_session P-9 done: session s-new" in page
        assert c.post("/devices/room-a/stop", data={"csrf_token": token}).status_code == 303
        assert observer.wait_for(lambda ms: len(ms) == 2, 10)
        assert observer.messages[1].topic == "affectbox/room-a/cmd/stop_session"
        assert c.post("/devices/unknown/stop", data={"csrf_token": token}).status_code == 404
    finally:
        observer.close()
        broker.stop()
    # the broker is gone: one clear line, nothing shown as awaited
    r = c.post("/devices/room-a/stop", data={"csrf_token": token})
    assert r.status_code == 409 and "cannot reach the broker at 127.0.0.1" in text(r)
    assert text(c.get("/devices/room-a")).count("stop_session") == 1  # only the one that was sent


def test_dashboard_command_serves_and_stops_on_sigterm(tmp_path: Path):
    import signal
    import time
    import urllib.request

    from tests.mqtt_support import free_port

    port = free_port()
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n[dashboard]\nport = {port}\n')
    log = tmp_path / "dashboard.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hub", "dashboard", "--config", str(cfg)], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert json.loads(r.read())["ok"] is True
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as r:
            assert "Content-Security-Policy" in r.headers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_report_has_one_page_per_period_and_every_chart_stays_in_its_frame(app):
    from hub.dashboard import charts

    c = app.test_client()
    login(c, "bob", CLIN_PW)
    for period, count in (("month", 6), ("year", 2)):  # P-1: 2025-11 .. 2026-04
        html = c.get(f"/patients/P-1/report?period={period}").get_data(as_text=True)
        assert html.count('class="report-page"') == count and html.count(NOT_A_DIAGNOSIS) == count
        xs = [float(x) for pts in re.findall(r'<polyline points="([^"]+)"', html)
              for x in re.findall(r"(-?[\d.]+),", pts)]
        xs += [float(x) for x in re.findall(r'<circle cx="(-?[\d.]+)"', html)]
        assert xs and all(charts.LEFT - 0.5 <= x <= charts.W - charts.RIGHT + 0.5 for x in xs), period
    assert c.get("/patients/P-1/report?period=week").status_code == 400


def test_a_device_announcing_every_command_has_its_info_accepted():
    """The Devices page shows software and model versions from `info`; a device that enables every
    command (device.config.HUB_COMMANDS, resend included) must not have its info rejected."""
    from device.config import HUB_COMMANDS
    from device.contract import payloads
    from hub.intake import Accepted, classify

    info = payloads.info_payload("dev-1", 0, software_version="0.1.0", commands=HUB_COMMANDS,
                                 models=[{"name": "face", "version": "1", "sha256": "ab" * 32}])
    verdict = classify("affectbox", "affectbox/dev-1/info", payloads.encode(info), 65536)
    assert isinstance(verdict, Accepted), verdict
