"""The status page's JSON API and access rules (device/web), with Flask's test client and a real WebServer.

Session control runs against the real daemon (`device.daemon.service.Daemon`, replaying a generated
video with speech, in this process) with a real Store in tmp_path. Tests that need a controlled
clock, NaN in the daemon's answers, or sessions spread over months use `tests/web_double.py`
(the same Protocol over a real Store). Every refusal is checked for its status, a one-line JSON
error and for having changed nothing.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from device.config import Config, WebConfig, config_from_dict
from device.credentials import CredentialError, hash_password, write_secret
from device.store import PatientIdError, Store, validate_patient_id
from device.web import WebServer, create_app, load_password_hash, start_status_page
from device.web.auth import safe_next
from device.web.pages import HTML_PATIENT_PATTERN
from device.web.security import COOKIE_NAME, client_key
from tests.web_double import ApplianceDouble, peaked

PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD)
PROTECTED_GET = ["/api/status", "/api/live", "/api/sessions", "/api/sessions/x", "/api/patients/P1/trend"]
PROTECTED_POST = ["/api/session/start", "/api/session/stop", "/api/logout"]
PAGES = ["/", "/session", "/history", "/history/session/x", "/history/patient/P1"]
BAD_PATIENT_IDS = ["", "Jane Doe", "x" * 65, "../etc/passwd", "a/b", "naïve", "P1\n", 42, None, ["P1"], True]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def login(client: FlaskClient, password: str = PASSWORD) -> str:
    response = client.post("/api/login", json={"password": password})
    assert response.status_code == 200, response.json
    return str(response.json["csrf_token"])


def error_of(response: Any) -> str:
    assert response.mimetype == "application/json", response.data[:200]
    message = response.json["error"]
    assert isinstance(message, str) and message and "\n" not in message
    return message


OPENAPI = json.loads((Path(__file__).resolve().parent.parent / "docs" / "openapi.json").read_text())


def check_schema(name: str, value: Any) -> None:
    """Validate an API answer against docs/openapi.json's component schema `name`."""
    import jsonschema

    schema = {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}
    jsonschema.Draft202012Validator(schema).validate(value)


# ---- the real daemon -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from device.daemon.service import Daemon
    from device.health import SystemdNotifier
    from tests.media import write_av_session

    folder = tmp_path_factory.mktemp("daemon")
    video = folder / "session.mkv"
    write_av_session(video, duration=8.0, speech_at=(0.5, 4.5), face_spans=((0.0, 8.0),))
    config = config_from_dict({
        "aggregation": {"window_seconds": 2.0},
        "store": {"path": str(folder / "affectbox.db")},
        "device": {"id": "api-test", "state_dir": str(folder / "state")},
        "session": {"consent_required": True, "debug_recording_dir": str(folder / "debug")},
        "control": {"socket": str(folder / "control.sock")},
        "hub": {"enabled": False, "outbox_path": str(folder / "outbox.db")},
        "web": {"enabled": False},  # the tests build the app around the daemon themselves
    })
    appliance = Daemon(config, replay_video=video, replay_loop=True, notifier=SystemdNotifier(""))
    appliance.start()
    try:
        yield appliance
    finally:
        appliance.shutdown("tests done")


@pytest.fixture
def daemon_client(daemon: Any) -> Iterator[FlaskClient]:
    app = create_app(daemon, password_hash=HASH)
    yield app.test_client()
    if daemon.status()["session"] is not None:  # leave the module's daemon idle for the next test
        daemon.stop_session(source="test")


def session_count(daemon: Any) -> int:
    with Store.open(daemon.store_path, readonly=True) as store:
        return len(store.sessions(limit=None))


# ---- the double ------------------------------------------------------------------------------------

@pytest.fixture
def double(tmp_path: Path) -> Iterator[ApplianceDouble]:
    control = ApplianceDouble(Config(), tmp_path / "affectbox.db")
    yield control
    control.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(double: ApplianceDouble, clock: Clock) -> FlaskClient:
    return create_app(double, password_hash=HASH, clock=clock).test_client()


# ---- access --------------------------------------------------------------------------------------------

def test_health_is_open_and_carries_no_patient_data(client: FlaskClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json == {"ok": True, "version": "0.1.0"}
    assert response.headers["Cache-Control"] == "no-store"


def test_protected_endpoints_refuse_without_login(daemon_client: FlaskClient, daemon: Any) -> None:
    before = session_count(daemon)
    for path in PROTECTED_GET:
        response = daemon_client.get(path)
        assert response.status_code == 401, path
        assert error_of(response) == "login required"
    for path in PROTECTED_POST:
        response = daemon_client.post(path, json={"patient_id": "P1", "consent": True})
        assert response.status_code == 401, path
    for path in PAGES:
        response = daemon_client.get(path)
        assert response.status_code == 303, path
        assert response.headers["Location"].startswith("/login?next=")
    assert session_count(daemon) == before
    assert daemon.status()["session"] is None


def test_login_page_is_open_and_says_what_the_device_is(client: FlaskClient) -> None:
    response = client.get("/login?next=/history")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "does not diagnose" in page
    assert 'data-next="/history"' in page


def test_not_provisioned_nobody_can_log_in(double: ApplianceDouble) -> None:
    client = create_app(double, password_hash=None).test_client()
    page = client.get("/login").get_data(as_text=True)
    assert "not provisioned" in page and 'id="login-form"' not in page
    response = client.post("/api/login", json={"password": PASSWORD})
    assert response.status_code == 503
    assert "not provisioned" in error_of(response)
    assert client.get("/api/status").status_code == 401


def test_malformed_password_hash_is_refused_at_start(double: ApplianceDouble) -> None:
    with pytest.raises(CredentialError, match="malformed"):
        create_app(double, password_hash="scrypt$not-a-hash")


def test_login_cookie_is_httponly_and_strict(client: FlaskClient) -> None:
    response = client.post("/api/login", json={"password": "wrong password"})
    assert response.status_code == 401 and error_of(response) == "wrong password"
    assert "Set-Cookie" not in response.headers
    response = client.post("/api/login", json={"password": PASSWORD})
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Max-Age=3600" in cookie  # [web] session_minutes = 60
    assert re.fullmatch(r"[0-9a-f]{64}", response.json["csrf_token"])
    assert client.get("/api/status").status_code == 200
    page = client.get("/").get_data(as_text=True)
    assert f'<meta name="csrf-token" content="{response.json["csrf_token"]}">' in page


@pytest.mark.parametrize("body", [{}, {"password": ""}, {"password": 5}, {"password": "x" * 2000}])
def test_login_needs_a_password(client: FlaskClient, body: dict[str, Any]) -> None:
    response = client.post("/api/login", json=body)
    assert response.status_code == 400
    assert "password" in error_of(response)


def test_control_without_csrf_token_is_refused_and_changes_nothing(daemon_client: FlaskClient, daemon: Any) -> None:
    before = session_count(daemon)
    token = login(daemon_client)
    other = create_app(daemon, password_hash=HASH).test_client()
    foreign = login(other)  # a token of another login is no good either
    body = {"patient_id": "P1", "consent": True}
    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": "0" * 64}, {"X-CSRF-Token": foreign},
                    {"X-CSRF-Token": token[:-1]}):
        response = daemon_client.post("/api/session/start", json=body, headers=headers)
        assert response.status_code == 403, headers
        assert "CSRF" in error_of(response)
    # a form post from elsewhere carries no token either
    response = daemon_client.post("/api/session/start", data={"patient_id": "P1", "consent": "on"})
    assert response.status_code == 403
    assert daemon.status()["session"] is None
    assert session_count(daemon) == before
    for path in ("/api/session/stop", "/api/logout"):
        assert daemon_client.post(path).status_code == 403
    assert daemon_client.get("/api/status").status_code == 200  # the failed logout did not log out


def test_csrf_token_in_a_form_field(daemon_client: FlaskClient, daemon: Any) -> None:
    token = login(daemon_client)
    response = daemon_client.post("/api/session/start", data={"patient_id": "P-form", "consent": "on",
                                                              "csrf_token": token})
    assert response.status_code == 201, response.json
    assert response.json["patient_id"] == "P-form"
    response = daemon_client.post("/api/session/stop", data={"csrf_token": token})
    assert response.status_code == 200, response.json


def test_logout_ends_the_login(client: FlaskClient) -> None:
    token = login(client)
    response = client.post("/api/logout", headers={"X-CSRF-Token": token})
    assert response.status_code == 200
    assert f"{COOKIE_NAME}=;" in response.headers["Set-Cookie"]
    assert client.get("/api/status").status_code == 401


def test_logout_invalidates_the_token_on_the_server(double: ApplianceDouble) -> None:
    app = create_app(double, password_hash=HASH)
    client = app.test_client()
    token = login(client)
    stolen = client.get_cookie(COOKIE_NAME)
    assert stolen is not None
    client.post("/api/logout", headers={"X-CSRF-Token": token})
    thief = app.test_client()
    thief.set_cookie(COOKIE_NAME, stolen.value)
    assert thief.get("/api/status").status_code == 401


def test_login_expires(client: FlaskClient, clock: Clock) -> None:
    token = login(client)
    clock.now += 59 * 60
    assert client.get("/api/status").status_code == 200
    clock.now += 60 + 1
    response = client.get("/api/status")
    assert response.status_code == 401
    assert error_of(response) == "login expired; log in again"
    assert client.post("/api/session/start", json={"patient_id": "P1"}, headers={"X-CSRF-Token": token}
                       ).status_code == 401
    assert client.get("/session").status_code == 303
    assert client.get("/login").status_code == 200  # the login page again, not a redirect loop


def test_session_minutes_come_from_the_config(tmp_path: Path, clock: Clock) -> None:
    control = ApplianceDouble(config_from_dict({"web": {"session_minutes": 5}}), tmp_path / "a.db")
    try:
        client = create_app(control, password_hash=HASH, clock=clock).test_client()
        response = client.post("/api/login", json={"password": PASSWORD})
        assert response.json["expires_in_s"] == 300 and "Max-Age=300" in response.headers["Set-Cookie"]
        clock.now += 301
        assert client.get("/api/live").status_code == 401
    finally:
        control.close()


def test_failed_logins_are_rate_limited_per_client(client: FlaskClient, clock: Clock) -> None:
    for _ in range(5):
        assert client.post("/api/login", json={"password": "guess guess"}).status_code == 401
    response = client.post("/api/login", json={"password": PASSWORD})
    assert response.status_code == 429  # even the right password, while the client is blocked
    assert "too many failed logins" in error_of(response)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # another address is not blocked
    other = client.post("/api/login", json={"password": PASSWORD}, environ_base={"REMOTE_ADDR": "10.0.0.7"})
    assert other.status_code == 200
    clock.now += 61
    assert client.post("/api/login", json={"password": PASSWORD}).status_code == 200


def test_failed_logins_from_many_addresses_are_bounded(double: ApplianceDouble, clock: Clock) -> None:
    client = create_app(double, password_hash=HASH, clock=clock, login_failures_overall_per_minute=8).test_client()
    for i in range(8):
        response = client.post("/api/login", json={"password": "guess guess"},
                               environ_base={"REMOTE_ADDR": f"192.0.2.{i}"})
        assert response.status_code == 401
    response = client.post("/api/login", json={"password": "guess guess"}, environ_base={"REMOTE_ADDR": "192.0.2.99"})
    assert response.status_code == 429


def test_client_key_groups_an_ipv6_host_by_its_64() -> None:
    assert client_key("192.0.2.1") == "192.0.2.1"
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key(None) == "unknown"


@pytest.mark.parametrize("target, expected", [
    ("/history", "/history"), ("/history/patient/P1?period=week", "/history/patient/P1?period=week"),
    ("//evil.example/", "/"), ("https://evil.example/", "/"), ("/\\evil.example", "/"), ("", "/"), (None, "/"),
    ("javascript:alert(1)", "/"), ("/ok\r\nSet-Cookie: x", "/"),
])
def test_next_after_login_stays_on_the_device(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


# ---- bad input ---------------------------------------------------------------------------------------

def test_oversized_bodies_are_refused(daemon_client: FlaskClient, daemon: Any) -> None:
    token = login(daemon_client)
    before = session_count(daemon)
    big = {"patient_id": "P1", "consent": True, "note": "x" * 20_000}
    response = daemon_client.post("/api/session/start", json=big, headers={"X-CSRF-Token": token})
    assert response.status_code == 413
    assert error_of(response) == "request body too large (limit 16384 bytes)"
    response = daemon_client.post("/api/login", data="{" + " " * 17_000 + "}", content_type="application/json")
    assert response.status_code == 413
    assert session_count(daemon) == before and daemon.status()["session"] is None


@pytest.mark.parametrize("data, content_type, status, fragment", [
    ("{not json", "application/json", 400, "not valid JSON"),
    ('["P1"]', "application/json", 400, "must be a JSON object"),
    ("\xff\xfe", "application/json", 400, "not valid JSON"),
    ("patient_id=P1", "text/plain", 415, "Content-Type: application/json"),
    ('{"patient_id": "P1", "consent": true, "extra": 1}', "application/json", 400, "unknown field 'extra'"),
    ('{"consent": true}', "application/json", 400, "patient_id is required"),
    ('{"patient_id": "P1", "consent": "maybe"}', "application/json", 400, "consent must be true or false"),
    ('{"patient_id": "P1", "consent": false}', "application/json", 400, "consent is required"),
    ('{"patient_id": "P1", "consent": true, "max_duration_minutes": 0}', "application/json", 400,
     "max_duration_minutes must be"),
    ('{"patient_id": "P1", "consent": true, "max_duration_minutes": 100000}', "application/json", 400,
     "max_duration_minutes must be"),
    ('{"patient_id": "P1", "consent": true, "max_duration_minutes": "soon"}', "application/json", 400,
     "max_duration_minutes must be"),
])
def test_bad_start_requests_get_a_clear_4xx_and_change_nothing(daemon_client: FlaskClient, daemon: Any, data: str,
                                                              content_type: str, status: int, fragment: str) -> None:
    token = login(daemon_client)
    before = session_count(daemon)
    response = daemon_client.post("/api/session/start", data=data.encode("latin-1"), content_type=content_type,
                                  headers={"X-CSRF-Token": token})
    assert response.status_code == status
    assert fragment in error_of(response)
    assert session_count(daemon) == before and daemon.status()["session"] is None


def test_bad_patient_ids_are_refused_and_change_nothing(daemon_client: FlaskClient, daemon: Any) -> None:
    token = login(daemon_client)
    before = session_count(daemon)
    for patient_id in BAD_PATIENT_IDS:
        response = daemon_client.post("/api/session/start", json={"patient_id": patient_id, "consent": True},
                                      headers={"X-CSRF-Token": token})
        assert response.status_code == 400, patient_id
        assert "patient id" in error_of(response), patient_id
    assert session_count(daemon) == before and daemon.status()["session"] is None
    for path in ("/api/sessions?patient=Jane%20Doe", "/api/patients/Jane%20Doe/trend", "/api/patients/a.b%2Fc/trend"):
        response = daemon_client.get(path)
        assert response.status_code in (400, 404), path
        error_of(response)
    assert daemon_client.get("/history/patient/Jane%20Doe").status_code == 400


def test_unknown_things_are_404_and_bad_queries_400(client: FlaskClient) -> None:
    login(client)
    response = client.get("/api/sessions/3f1e0a4c-0000-4000-8000-000000000000")
    assert response.status_code == 404
    assert error_of(response) == "no session '3f1e0a4c-0000-4000-8000-000000000000'"
    assert client.get("/history/session/nope").status_code == 404
    response = client.get("/api/patients/P-unknown/trend")
    assert response.status_code == 404 and "no sessions for patient" in error_of(response)
    for path, fragment in (("/api/patients/P1/trend?period=decade", "period must be one of"),
                           ("/api/sessions?limit=0", "limit must be"), ("/api/sessions?limit=ten", "limit must be"),
                           ("/api/sessions?limit=501", "limit must be")):
        response = client.get(path)
        assert response.status_code == 400, path
        assert fragment in error_of(response)
    response = client.get("/api/nothing-here")
    assert response.status_code == 404 and error_of(response) == "not found"
    response = client.delete("/api/status")
    assert response.status_code == 405 and "not allowed" in error_of(response)


# ---- session control and reading, against the real daemon ----------------------------------------------

def test_session_control_end_to_end(daemon_client: FlaskClient, daemon: Any) -> None:
    token = login(daemon_client)
    csrf = {"X-CSRF-Token": token}
    assert daemon_client.get("/api/status").json["state"] == "idle"
    response = daemon_client.post("/api/session/start", json={"patient_id": "P-007", "consent": True}, headers=csrf)
    assert response.status_code == 201, response.json
    session_id = response.json["session_id"]
    assert response.headers["Location"] == f"/api/sessions/{session_id}"
    again = daemon_client.post("/api/session/start", json={"patient_id": "P-008", "consent": True}, headers=csrf)
    assert again.status_code == 409 and "already running" in error_of(again)
    status = daemon_client.get("/api/status").json
    check_schema("Status", status)
    assert status["state"] == "running" and status["session"]["session_id"] == session_id
    assert {"camera", "microphone", "face", "speech", "store", "hub"} <= set(status["components"])
    assert all(len(m["sha256"]) == 64 for m in status["models"])
    deadline = time.monotonic() + 30
    live = daemon_client.get("/api/live").json
    while not any(w.get("dominant") for w in live["windows"]):
        assert time.monotonic() < deadline, "no window with a mood within 30 s"
        time.sleep(0.5)
        live = daemon_client.get("/api/live").json
    check_schema("Live", live)
    assert live["session"]["patient_id"] == "P-007"
    assert set(live["now"]) >= {"face_present", "speech_active"}
    stopped = daemon_client.post("/api/session/stop", json={}, headers=csrf)
    assert stopped.status_code == 200 and stopped.json["state"] == "ended"
    again = daemon_client.post("/api/session/stop", headers=csrf)
    assert again.status_code == 409 and error_of(again) == "no session is running"

    listed = daemon_client.get("/api/sessions?patient=P-007").json["sessions"]
    assert [s["id"] for s in listed] == [session_id]
    assert "config" not in listed[0]
    assert listed[0]["summary"]["dominant"] is not None
    detail = daemon_client.get(f"/api/sessions/{session_id}")
    assert detail.headers["Cache-Control"] == "no-store"
    body = detail.json
    assert body["session"]["state"] == "ended" and body["windows"] and body["summary"]["windows"] >= 1
    check_schema("SessionRecord", body["session"])
    for window in body["windows"]:
        check_schema("Window", window)
    assert "does not diagnose" in body["notice"]
    trend = daemon_client.get("/api/patients/P-007/trend?period=week").json
    assert [p["session_id"] for p in trend["sessions"]] == [session_id]
    for period in trend["periods"]:
        check_schema("Period", period)
    assert trend["periods"][0]["sessions"] == 1
    page = daemon_client.get(f"/history/session/{session_id}")
    assert page.status_code == 200 and "does not diagnose" in page.get_data(as_text=True)


def test_every_page_states_it_does_not_diagnose(client: FlaskClient, double: ApplianceDouble) -> None:
    for path in ["/login"]:
        assert "does not diagnose" in client.get(path).get_data(as_text=True)
    login(client)
    double.start_session("P1")
    double.feed(2)
    session_id = double.stop_session()["session_id"]
    for path in ["/", "/session", "/history", f"/history/session/{session_id}", "/history/patient/P1"]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert "supports clinical judgment; it does not diagnose" in response.get_data(as_text=True), path


def test_security_headers(client: FlaskClient) -> None:
    login(client)
    for path in ("/", "/api/status", "/login", "/api/health"):
        headers = client.get(path).headers
        assert "default-src 'self'" in headers["Content-Security-Policy"], path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store"
        assert headers["Referrer-Policy"] == "no-referrer"
    static = client.get("/static/app.js")
    assert static.status_code == 200 and static.headers["Cache-Control"] == "no-cache"
    static.close()


def test_pages_load_nothing_from_elsewhere(client: FlaskClient) -> None:
    login(client)
    for path in ("/", "/session", "/history", "/login"):
        html = client.get(path).get_data(as_text=True)
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert url.startswith("/"), (path, url)
        assert "<script>" not in html  # no inline scripts (the CSP would block them)
    for name in ("app.js", "style.css"):
        response = client.get(f"/static/{name}")
        text = response.get_data(as_text=True)
        response.close()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name


def test_nan_from_the_daemon_becomes_null(double: ApplianceDouble, client: FlaskClient,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    login(client)
    original = double.status
    monkeypatch.setattr(double, "status", lambda: {**original(), "pi": {"temperature_c": float("nan")}})
    response = client.get("/api/status")
    assert json.loads(response.get_data(as_text=True))["pi"]["temperature_c"] is None


def test_errors_inside_the_daemon_are_500_json_one_line(double: ApplianceDouble, client: FlaskClient,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    login(client)

    def broken() -> dict[str, Any]:
        raise RuntimeError("boom\nwith a second line")

    monkeypatch.setattr(double, "live", broken)
    response = client.get("/api/live")
    assert response.status_code == 500
    assert error_of(response) == "internal error (RuntimeError); see the device log"


def test_html_pattern_matches_the_store_rule() -> None:
    pattern = re.compile(HTML_PATIENT_PATTERN)
    for candidate in ["P1", "a.b_c-d", "x" * 64, "-", "x" * 65, "a b", "a/b", "ü", "", "a\\b", "a]b"]:
        try:
            validate_patient_id(candidate)
            valid = True
        except PatientIdError:
            valid = False
        assert bool(pattern.fullmatch(candidate)) == valid, candidate


# ---- trend over weeks, months and years ----------------------------------------------------------------------

def test_trend_groups_sessions_by_week_month_and_year(tmp_path: Path) -> None:
    from device.aggregate import WindowAggregator
    from device.observation import Observation

    moments = [datetime(2025, 11, 3, 9, tzinfo=UTC), datetime(2025, 11, 5, 9, tzinfo=UTC),
               datetime(2025, 12, 1, 9, tzinfo=UTC), datetime(2026, 1, 14, 9, tzinfo=UTC)]
    labels = ["sad", "sad", "neutral", "happy"]
    now = [moments[0]]
    path = tmp_path / "affectbox.db"
    config = Config()
    with Store.open(path, clock=lambda: now[0]) as store:
        for moment, label in zip(moments, labels, strict=True):
            now[0] = moment
            session_id = store.start_session("P-trend", "dev", False, {})
            aggregator = WindowAggregator(config.aggregation, config.fusion)
            for i in range(300):
                aggregator.add(Observation(i / 10, "face", peaked(label), 0.9))
            for window in aggregator.flush():
                store.add_window(session_id, window.to_json())
            now[0] = moment + timedelta(minutes=20)
            store.end_session(session_id, summary={**_summary(store, session_id),
                                                   "prosody": {"f0_mean_hz": 120.0 + len(label), "speech_s": 9.0}})
    control = ApplianceDouble(config, path)
    try:
        client = create_app(control, password_hash=HASH).test_client()
        login(client)
        month = client.get("/api/patients/P-trend/trend?period=month").json
        assert [p["period"] for p in month["periods"]] == ["2025-11", "2025-12", "2026-01"]
        assert [p["sessions"] for p in month["periods"]] == [2, 1, 1]
        assert [p["dominant"] for p in month["periods"]] == ["sad", "neutral", "happy"]
        november = month["periods"][0]
        assert november["valence"] < 0 < month["periods"][2]["valence"]
        assert november["valence_between_sd"] == pytest.approx(0.0, abs=1e-6)
        assert november["prosody"]["f0_mean_hz"] == pytest.approx(123.0)
        assert [s["dominant"] for s in month["sessions"]] == labels  # oldest first
        assert month["sessions"][0]["started_utc"].startswith("2025-11-03")
        assert month["baseline"]["n"] == 4
        week = client.get("/api/patients/P-trend/trend?period=week").json
        assert [p["period"] for p in week["periods"]] == ["2025-W45", "2025-W49", "2026-W03"]
        assert week["periods"][0]["start"] == "2025-11-03"
        year = client.get("/api/patients/P-trend/trend?period=year").json
        assert [(p["period"], p["sessions"]) for p in year["periods"]] == [("2025", 3), ("2026", 1)]
        assert year["periods"][0]["dominant"] == "sad"
    finally:
        control.close()


def _summary(store: Store, session_id: str) -> dict[str, Any]:
    from device.store import summary_from_windows

    return summary_from_windows(store.windows(session_id))


# ---- serving -------------------------------------------------------------------------------------------------

def _get(url: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, **kwargs)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def test_web_server_on_a_free_port_starts_and_stops(double: ApplianceDouble) -> None:
    server = WebServer(create_app(double, password_hash=HASH), "127.0.0.1", 0).start()
    try:
        port = server.port
        assert port > 0 and server.running
        status, headers, body = _get(server.url + "/api/health")
        assert status == 200 and json.loads(body) == {"ok": True, "version": "0.1.0"}
        assert headers["Server"] == "affectbox"
        status, _, body = _get(server.url + "/api/status")
        assert status == 401
        big = b'{"password": "' + b"x" * 40_000 + b'"}'
        status, _, body = _get(server.url + "/api/login", data=big, method="POST",
                               headers={"Content-Type": "application/json"})
        assert status == 413 and "too large" in json.loads(body)["error"]
    finally:
        server.stop()
    assert not server.running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_web_server_reports_a_port_in_use(double: ApplianceDouble) -> None:
    from device.web.server import WebServerError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(WebServerError, match=f"cannot listen on 127.0.0.1:{port}"):
            WebServer(create_app(double, password_hash=HASH), "127.0.0.1", port).start()


def test_start_status_page_follows_the_config(tmp_path: Path) -> None:
    off = ApplianceDouble(config_from_dict({"web": {"enabled": False}}), tmp_path / "a.db")
    try:
        assert start_status_page(off, password_hash=HASH) is None
    finally:
        off.close()


def test_load_password_hash(tmp_path: Path) -> None:
    web = WebConfig()
    assert load_password_hash(web, tmp_path / "missing") is None
    assert load_password_hash(web, tmp_path) is None  # no file: not provisioned
    assert load_password_hash(WebConfig(password_file=""), tmp_path) is None
    write_secret(tmp_path / "web-password", "\n")  # the unit's placeholder before provisioning
    assert load_password_hash(web, tmp_path) is None
    write_secret(tmp_path / "web-password", HASH)
    assert load_password_hash(web, tmp_path) == HASH
    os.chmod(tmp_path / "web-password", 0o644)
    with pytest.raises(CredentialError, match="readable or writable by other users"):
        load_password_hash(web, tmp_path)
    write_secret(tmp_path / "web-password", "plain text password")
    with pytest.raises(CredentialError, match="malformed"):
        load_password_hash(web, tmp_path)


# ---- the OpenAPI description ------------------------------------------------------------------------------------

def test_openapi_documents_every_api_route(double: ApplianceDouble) -> None:
    app = create_app(double, password_hash=HASH)
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
            served |= {(path, m.lower()) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    documented = {(path, method) for path, item in OPENAPI["paths"].items() for method in item}
    assert served == documented
    assert OPENAPI["openapi"].startswith("3.1")
    assert "does not diagnose" in OPENAPI["info"]["description"]


def test_open_endpoints_name_served_views(double: ApplianceDouble) -> None:
    """The login guard's open list names real endpoints (blueprint-prefixed), so a renamed view cannot
    silently fall behind the login or out of it."""
    from device.web.auth import OPEN_ENDPOINTS

    app = create_app(double, password_hash=HASH)
    assert OPEN_ENDPOINTS.issubset(app.view_functions)
    opened = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint in OPEN_ENDPOINTS}
    assert opened == {"/api/health", "/login", "/api/login", "/static/<path:filename>"}


def test_every_answered_time_is_in_the_one_utc_format(client: FlaskClient, double: ApplianceDouble) -> None:
    """/api/session/start, /api/status, /api/live, /api/sessions, /api/sessions/<id> and the trend answer
    UTC times as device.contract.timestamps writes them, although the store keeps its own `+00:00` form."""
    from device.contract.timestamps import UTC_TIMESTAMP_PATTERN, UTC_TIMESTAMP_RE, parse_utc_timestamp, utc_timestamp

    assert OPENAPI["components"]["schemas"]["UtcTimestamp"]["pattern"] == UTC_TIMESTAMP_PATTERN
    csrf = {"X-CSRF-Token": login(client)}
    started = client.post("/api/session/start", json={"patient_id": "P-TS", "consent": True}, headers=csrf)
    assert started.status_code == 201, started.json
    session_id = started.json["session_id"]
    double.feed(2)
    live = client.get("/api/live").json
    status = client.get("/api/status").json
    check_schema("Live", live)
    check_schema("Status", status)
    assert client.post("/api/session/stop", json={}, headers=csrf).status_code == 200
    listed = client.get("/api/sessions?patient=P-TS").json["sessions"]
    detail = client.get(f"/api/sessions/{session_id}").json["session"]
    trend = client.get("/api/patients/P-TS/trend?period=week").json["sessions"]
    for row in (*listed, detail):
        check_schema("SessionRecord", row)
    stored = double.store.session(session_id)
    assert stored.started_utc.endswith("+00:00")  # storage is unchanged: rewritten on the way out
    starts = [started.json["started_utc"], live["session"]["started_utc"], status["session"]["started_utc"],
              *(r["started_utc"] for r in listed), detail["started_utc"], *(p["started_utc"] for p in trend)]
    ends = [listed[0]["ended_utc"], detail["ended_utc"]]
    assert len(starts) == 6 and len(ends) == 2
    for text in starts + ends:
        assert UTC_TIMESTAMP_RE.fullmatch(text), text
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text), text
        assert utc_timestamp(parse_utc_timestamp(text)) == text
    assert {parse_utc_timestamp(t) for t in starts} == {parse_utc_timestamp(stored.started_utc)}
    assert {parse_utc_timestamp(t) for t in ends} == {parse_utc_timestamp(stored.ended_utc or "")}


def test_templates_and_static_files_ship_as_package_data() -> None:
    import fnmatch
    import tomllib

    device = Path(__file__).resolve().parent.parent / "device"
    pyproject = tomllib.loads((device.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["device"]
    files = [p for folder in ("templates", "static") for p in (device / "web" / folder).rglob("*") if p.is_file()]
    assert len(files) >= 9
    for path in files:
        relative = path.relative_to(device).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_compact_live_view_keeps_what_the_page_draws(client: FlaskClient, double: ApplianceDouble) -> None:
    login(client)
    double.start_session("P1")
    double.feed(3)
    full = client.get("/api/live").json
    compact = client.get("/api/live?compact=1").json
    assert len(compact["windows"]) == len(full["windows"]) == 3
    for small, big in zip(compact["windows"], full["windows"], strict=True):
        assert set(small) == {"index", "start", "end", "has_mood", "dominant", "valence", "arousal"}
        assert all(small[k] == big[k] for k in small)
        check_schema("Window", small)
    assert compact["session"] == full["session"] or compact["session"]["session_id"] == full["session"]["session_id"]
    assert len(json.dumps(compact)) < len(json.dumps(full)) / 2
