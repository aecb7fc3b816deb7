"""The status page in a real headless browser (Debian's chromium driven by Playwright): log in, start a
session, watch the live indicator change, stop it, find it in the history; a screenshot of each page.

Two appliances behind the page:
- the real daemon, `affectbox run --replay` on a generated session video with speech (the issue's test),
  skipped with its reason while device.daemon.service does not exist;
- `tests/web_double.py` (real Store and aggregator, synthetic windows), so the pages' scripts, the CSP
  and the flows are checked in a browser today too.

Chromium is /usr/bin/chromium (setup.sh --dev installs Debian's `chromium`); Playwright never downloads
a browser. Screenshots go to build/test-artifacts/web/<test>/; the daemon test copies the live session
page to docs/status-page.png for the README (the double's test does so only while there is no daemon).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from device.config import Config, config_from_dict
from device.credentials import hash_password, write_secret
from device.web import WebServer, create_app
from tests.support import wait_until

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "build" / "test-artifacts" / "web"
DOCS_SCREENSHOT = REPO / "docs" / "status-page.png"
# A test run must not change tracked files: docs/ screenshots are refreshed only on request
# (script/screenshots sets this), otherwise every run would leave the checkout modified.
UPDATE_DOCS = os.environ.get("AFFECTBOX_UPDATE_SCREENSHOTS") == "1"
PASSWORD = "kiosk-password-1"
LOGIN_REDIRECT = re.compile(r"/login\?next=")
PATIENT = "P-0042"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def daemon_available() -> bool:
    try:
        return importlib.util.find_spec("device.daemon.service") is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements/dev.txt")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: setup.sh --dev installs Debian's chromium package")
    profile = tmp_path / "chromium-profile"  # a fresh profile every time
    with playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860}, device_scale_factor=1, service_workers="block",
            accept_downloads=False)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(15_000)
            problems: list[str] = []
            failed: list[tuple[int, str]] = []

            def on_console(msg: Any) -> None:
                # failed requests are checked below, by status and path, instead of by their console line
                if msg.type in ("error", "warning") and not msg.text.startswith("Failed to load resource"):
                    problems.append(f"console {msg.type}: {msg.text}")

            def on_response(response: Any) -> None:
                if response.status >= 400:
                    failed.append((response.status, urllib.parse.urlsplit(response.url).path))

            page.on("console", on_console)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("response", on_response)
            page.problems = problems
            page.failed = failed
            yield page
        finally:
            context.close()


def artifacts_for(name: str) -> Path:
    folder = ARTIFACTS / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def run_flow(page: Any, base_url: str, shots: Path, *, indicator_timeout_ms: int, copy_to_docs: bool) -> str:
    """The clinician's path through every page; returns the session id it created."""
    # not logged in: every page sends the browser to the login page
    page.goto(base_url + "/history")
    page.wait_for_url(LOGIN_REDIRECT)
    assert "does not diagnose" in page.inner_text("#notice")
    page.screenshot(path=shots / "1-login.png", full_page=True)
    page.fill("#password", "not the password")
    page.click("#login-button")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "wrong password" in page.inner_text("#login-error")
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.wait_for_url(base_url + "/history")

    # status page: refreshes by itself from /api/status
    page.goto(base_url + "/")
    page.wait_for_selector("#state[data-state='idle']")
    page.wait_for_selector("#components tbody tr[data-component='camera']")
    page.wait_for_selector("#models tbody tr")
    first_update = page.inner_text("#updated")
    wait_until(lambda: page.inner_text("#updated") != first_update, 10,
               message="the status page did not refresh itself")
    assert "does not diagnose" in page.inner_text("#notice")
    page.screenshot(path=shots / "2-status.png", full_page=True)

    # session page: start, watch the live indicator change, stop
    page.goto(base_url + "/session")
    page.wait_for_selector("#start-panel:not([hidden])")
    page.fill("#patient-id", "not valid!")
    if page.locator("#consent").count():
        page.check("#consent")
    page.click("#start-button")  # the browser's own pattern check keeps this from being sent
    assert page.locator("#live-panel").is_hidden()
    page.fill("#patient-id", PATIENT)
    page.click("#start-button")
    page.wait_for_selector("#live-panel:not([hidden])")
    assert page.inner_text("#live-patient") == PATIENT
    before = page.get_attribute("#live-mood", "data-label")
    assert before == ""  # nothing estimated yet
    # (selectors, not wait_for_function: the page's CSP forbids the eval that one needs)
    page.wait_for_selector("#live-mood:not([data-label=''])", timeout=indicator_timeout_ms)
    first_label = page.get_attribute("#live-mood", "data-label")
    assert first_label in {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert page.text_content("#live-dominant") == first_label
    # a few windows on the timeline (and a picture worth putting in the README)
    page.locator("#live-chart svg rect[data-label]").nth(3).wait_for(timeout=indicator_timeout_ms)
    assert page.get_attribute("#sense-face", "data-on") in ("yes", "no")
    assert page.get_attribute("#sense-speech", "data-on") in ("yes", "no")
    assert page.locator("video, audio, canvas").count() == 0  # never video or audio
    page.screenshot(path=shots / "3-session-live.png", full_page=True)
    page.click("#stop-button")
    page.wait_for_selector("#start-panel:not([hidden])")
    page.wait_for_selector("#last-session:not([hidden])")
    href = page.get_attribute("#last-session-link", "href")
    assert href and href.startswith("/history/session/")
    session_id = href.rsplit("/", 1)[1]
    page.screenshot(path=shots / "4-session-stopped.png", full_page=True)

    # history: the session is listed, with its timeline and summary; the patient's trend
    page.goto(base_url + "/history")
    row = page.locator(f"#sessions tbody tr[data-session-id='{session_id}']")
    row.wait_for()
    assert PATIENT in row.inner_text()
    assert "ended" in row.inner_text()
    page.screenshot(path=shots / "5-history.png", full_page=True)
    row.locator("a").first.click()
    page.wait_for_url(f"**/history/session/{session_id}")
    page.wait_for_selector("#detail-chart svg")
    assert page.locator("#detail-chart svg rect[data-label]").count() >= 1
    assert page.inner_text("#summary-facts")
    page.screenshot(path=shots / "6-session-detail.png", full_page=True)
    page.click(f"a[href='/history/patient/{PATIENT}']")
    page.wait_for_selector(f"#patient-sessions tbody tr[data-session-id='{session_id}']")
    page.wait_for_selector("#periods tbody tr")
    page.click("button.period[data-period='week']")
    page.wait_for_url(re.compile(r"\?period=week$"))
    page.wait_for_selector("#periods tbody tr[data-period*='-W']")
    page.screenshot(path=shots / "7-patient-trend.png", full_page=True)

    # log out: the pages are closed again
    page.click("#logout")
    page.wait_for_url("**/login")
    page.goto(base_url + "/session")
    page.wait_for_url(LOGIN_REDIRECT)

    assert not page.problems, page.problems  # CSP violations and script errors show up here
    assert page.failed == [(401, "/api/login")], page.failed  # only the wrong password
    if copy_to_docs and UPDATE_DOCS:
        shutil.copyfile(shots / "3-session-live.png", DOCS_SCREENSHOT)
    return session_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout_s: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise AssertionError("the daemon exited before its status page answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s")


@pytest.mark.timeout(240)
@pytest.mark.skipif(not daemon_available(),
                    reason="device.daemon.service does not exist yet (issue 4); the pages are covered against "
                           "tests/web_double.py until then")
def test_pages_against_the_daemon_in_replay_mode(tmp_path: Path, browser_page: Any) -> None:
    from tests.media import write_av_session

    video = tmp_path / "session.mkv"
    write_av_session(video, duration=60.0, speech_at=(1.0, 9.0, 17.0, 25.0, 33.0, 41.0, 49.0),
                     face_spans=((0.0, 60.0),))
    port = free_port()
    credentials = tmp_path / "credentials"
    write_secret(credentials / "web-password", hash_password(PASSWORD))
    config = tmp_path / "config.toml"
    config.write_text(f"""
[aggregation]
window_seconds = 3.0
[store]
path = "{tmp_path / 'affectbox.db'}"
[device]
id = "browser-test"
state_dir = "{tmp_path / 'state'}"
[session]
consent_required = true
debug_recording_dir = "{tmp_path / 'debug'}"
[control]
socket = "{tmp_path / 'control.sock'}"
[hub]
enabled = false
outbox_path = "{tmp_path / 'outbox.db'}"
[web]
bind = "127.0.0.1"
port = {port}
""", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["CREDENTIALS_DIRECTORY"] = str(credentials)
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([sys.executable, "-m", "device", "run", "--config", str(config), "--replay", str(video)],
                              cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(base_url + "/api/health", 60, lambda: daemon.poll() is None)
        run_flow(browser_page, base_url, artifacts_for("daemon"), indicator_timeout_ms=60_000, copy_to_docs=True)
    finally:
        daemon.terminate()
        try:
            daemon.wait(15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(5)
        log.close()
    assert daemon.returncode == 0, (tmp_path / "daemon.log").read_text()[-3000:]


@pytest.mark.timeout(120)
def test_pages_against_the_protocol_double(tmp_path: Path, browser_page: Any) -> None:
    from tests.web_double import ApplianceDouble

    config: Config = config_from_dict({"session": {"consent_required": True}})
    control = ApplianceDouble(config, tmp_path / "affectbox.db", auto_feed_s=0.7)
    app = create_app(control, password_hash=hash_password(PASSWORD))
    try:
        with WebServer(app, "127.0.0.1", 0) as server:
            session_id = run_flow(browser_page, server.url, artifacts_for("double"), indicator_timeout_ms=15_000,
                                  copy_to_docs=not daemon_available())
        assert control.store.session(session_id).state == "ended"
        assert [name for name, _ in control.calls] == ["start", "stop"]
        assert control.calls[0][1] == {"patient_id": PATIENT, "consent": True, "max_duration_s": None, "source": "web"}
    finally:
        control.close()
