"""The dashboard in a real headless Chromium, fed by a real replaying device through a real broker.

Parts: Mosquitto on 127.0.0.1, the hub's collector (`python -m hub run`), the replaying daemon
(`affectbox run --replay ... --loop`, hub link on), the dashboard (the app on waitress) on the
collector's SQLite file. A second patient's three years of weekly sessions are stored beforehand
through the hub's writer (tests/dash_support.py), so the course has history to show.

The flow: log in (wrong password first), see the device online with its models, start a session
at it from the Devices page (MQTT command, result shown), stop it, find the patient and the
session, open every view (patients, course by week/month/year, session, side by side, exports,
audit, report and its PDF), with no CSP violation or script error; keyboard-only navigation;
a tablet width without horizontal scrolling. Screenshots go to build/test-artifacts/dashboard/
and, for the README, docs/dashboard-*.png.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from device.web import WebServer
from hub.config import load_config
from hub.dashboard import accounts
from hub.dashboard.app import create_app
from hub.db import make_engine, upgrade
from tests.daemon_harness import ROOT, DaemonProcess
from tests.dash_support import History
from tests.hub_support import HubProcess
from tests.mqtt_support import Broker, needs_broker
from tests.support import wait_until
from tests.test_daemon_hub import hub_config as device_hub_config
from tests.test_web_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420), needs_broker]

ARTIFACTS = ROOT / "build" / "test-artifacts" / "dashboard"
DOCS = ROOT / "docs"
# docs/ screenshots only on request (script/screenshots): a test run must not change tracked files
UPDATE_DOCS = os.environ.get("AFFECTBOX_UPDATE_SCREENSHOTS") == "1"
ADMIN_PW = "admin password 12"


@pytest.fixture
def stack(tmp_path: Path, av_session) -> Iterator[dict[str, Any]]:
    things: list[Any] = []
    try:
        broker = Broker(tmp_path / "broker")
        broker.start()
        things.append(broker)
        db = tmp_path / "hub.db"
        hub_toml = tmp_path / "hub.toml"
        hub_toml.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}
tls = "off"
client_id = "hub-e2e"
reconnect_min_s = 0.5
reconnect_max_s = 1
[database]
url = "sqlite:///{db}"
[admission]
require_approval = false
[completeness]
enabled = false
[dashboard]
command_wait_s = 60
""")
        config = load_config(hub_toml)
        engine = make_engine(config.database)
        upgrade(engine)
        history = History(engine)
        start = datetime(2024, 1, 1, 9, tzinfo=UTC)
        for week in range(156):  # three years, one drop in the third
            low = 120 <= week < 130
            history.session("room-b" if week % 3 else "room-c", "P-LONG", start + timedelta(weeks=week),
                            -0.35 if low else 0.25 + 0.05 * ((week % 52) / 52), windows=6)
            if week == 80:
                history.info("room-c", start + timedelta(weeks=week, days=1), model_version="2.0")
        accounts.add_user(engine, "alice", "administrator", ADMIN_PW)
        hub = HubProcess(tmp_path, hub_toml)
        things.append(hub)
        hub.wait_ready()
        daemon = DaemonProcess(tmp_path, av_session["path"], config=device_hub_config(tmp_path, broker.port),
                               loop=True)
        things.append(daemon)
        daemon.wait_ready()
        server = WebServer(create_app(config, engine), "127.0.0.1", 0).start()
        things.append(server)
        yield {"url": server.url, "engine": engine, "daemon": daemon, "hub": hub}
    finally:
        for thing in reversed(things):
            (thing.kill if hasattr(thing, "kill") else thing.stop)()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements/dev.txt")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: setup.sh --dev installs Debian's chromium package")
    with api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, service_workers="block", accept_downloads=True)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(20_000)
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning")
                    and "Failed to load resource" not in m.text else None)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.problems = problems
            yield page
        finally:
            context.close()


def shot(page: Any, name: str, docs: bool = False) -> None:
    """A full-page screenshot in the artifacts; for the README, the first screen of it in docs/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    if docs and UPDATE_DOCS:
        page.screenshot(path=DOCS / f"dashboard-{name}.png", full_page=False)


def no_horizontal_scroll(page: Any) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_every_view_with_a_replaying_device(stack, browser):
    page, url = browser, stack["url"]
    page.goto(url + "/devices")
    page.wait_for_url(re.compile(r"/login\?next=/devices"))
    assert "does not diagnose" in page.inner_text("#notice")
    page.fill("#username", "alice")
    page.fill("#password", "wrong password 1")
    page.click("#login-button")
    assert "Wrong user name or password" in page.inner_text("#login-error")
    page.fill("#username", "alice")
    page.fill("#password", ADMIN_PW)
    page.click("#login-button")
    page.wait_for_url(url + "/devices")

    # the replaying device appears online with its models (retained info and status via the collector)
    def device_row_ok() -> bool:
        page.goto(url + "/devices")
        row = page.locator("tr[data-device='test-device']")
        return row.count() == 1 and row.get_attribute("data-health") in ("ok", "attention")
    assert wait_until(device_row_ok, 40), stack["hub"].log()[-3000:]
    assert "does not diagnose" in page.inner_text("#notice")

    # start a session at the device from the dashboard; the result comes back through MQTT
    page.click("a[href='/devices/test-device']")
    page.fill("#patient_id", "P-E2E")
    page.click("#start-button")
    page.wait_for_url(url + "/devices/test-device")
    assert wait_until(lambda: page.locator("#commands tr[data-outcome='ok']").count() == 1
                      or page.locator("#commands tr[data-outcome='refused']").count() > 0, 40), \
        stack["daemon"].log()[-3000:]
    assert page.locator("#commands tr[data-outcome='ok']").count() == 1, page.inner_text("#commands")
    assert "done: session" in page.inner_text("#commands")
    time.sleep(8)  # let a few windows pass
    page.click("#stop-button")
    assert wait_until(lambda: page.locator("#commands tr[data-outcome='ok']").count() == 2, 40), \
        page.inner_text("#commands")
    shot(page, "device")

    # the device's retained info (software and model versions) and its latest status
    def info_shown() -> bool:
        page.goto(url + "/devices")
        cells = page.locator("tr[data-device='test-device'] td")
        return cells.nth(4).inner_text() != "–" and cells.nth(7).inner_text() != "–"
    assert wait_until(info_shown, 40), page.inner_text("#devices")
    shot(page, "devices", docs=True)

    # the patient list: the new patient and the long one (with its review flag)
    assert wait_until(lambda: (page.goto(url + "/patients") or True)
                      and page.locator("tr[data-patient='P-E2E']").count() == 1, 60), stack["hub"].log()[-2000:]
    assert "review suggested" in page.inner_text("tr[data-patient='P-LONG']")
    shot(page, "patients", docs=True)

    # the course, by week, month and year; the session; two side by side
    for period in ("week", "year", "month"):
        page.goto(url + f"/patients/P-LONG?period={period}")
        assert page.locator("#chart-valence svg circle").count() == 156
        assert "does not diagnose" in page.inner_text("#notice")
    assert page.locator("#chart-valence .model-change").count() == 1
    shot(page, "course", docs=True)
    page.fill("#total", "14")
    page.fill("#taken_on", "2026-05-04")
    page.click("#questionnaire-form button")
    assert page.locator("#chart-valence rect.questionnaire").count() == 1
    page.click("#compare-form button")
    assert page.locator(".session-view").count() == 2
    shot(page, "compare")
    assert wait_until(lambda: (page.goto(url + "/patients/P-E2E") or True)
                      and page.locator("#patient-sessions tbody tr").count() == 1, 60)
    page.click("#patient-sessions tbody a")
    assert wait_until(lambda: (page.reload() or True) and page.locator(".timeline svg rect").count() >= 2, 60)
    shot(page, "session", docs=True)

    # exports, audit, report and its PDF
    page.goto(url + "/exports")
    with page.expect_download() as download:
        page.click("a[href='/exports/session.csv']")
    assert "P-E2E" in Path(download.value.path()).read_text()
    page.goto(url + "/audit")
    assert "export" in page.inner_text("#audit") and "P-LONG" in page.inner_text("#audit")
    page.goto(url + "/patients/P-LONG/report?period=year")
    assert page.locator(".report-page").count() == 3
    response = page.request.get(url + "/patients/P-LONG/report.pdf?period=year")
    pdf = response.body()
    assert response.ok and pdf.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert pages == 3, pages
    (ARTIFACTS / "report-year.pdf").write_bytes(pdf)
    monthly = page.request.get(url + "/patients/P-LONG/report.pdf?period=month").body()
    months = len(re.findall(rb"/Type\s*/Page[^s]", monthly))
    assert months == 36, months  # one page per month of the three years
    assert not page.problems, page.problems


def test_keyboard_navigation_and_tablet_width(stack, browser):
    page, url = browser, stack["url"]
    page.goto(url + "/login")
    assert page.evaluate("document.activeElement.id") == "username"  # autofocus: type at once
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type(ADMIN_PW)
    page.keyboard.press("Enter")
    page.wait_for_url(url + "/patients")
    # Tab through: skip link, then the nav's links in order; Enter follows the focused one
    names = []
    for _ in range(5):
        page.keyboard.press("Tab")
        names.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert names == ["Skip to content", "affectbox hub", "Patients", "Devices", "Exports"], names
    page.keyboard.press("Enter")
    page.wait_for_url(url + "/exports")
    page.goto(url + "/patients")
    page.focus("tr[data-patient='P-LONG'] a")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/patients/P-LONG$"))
    note = page.locator(".flag-box input[name='note']").first
    note.focus()
    page.keyboard.type("Seen; phone call booked.")
    page.keyboard.press("Enter")  # submits the acknowledgement form
    page.wait_for_selector(".ack")
    page.set_viewport_size({"width": 768, "height": 1024})
    for path in ("/patients", "/patients/P-LONG", "/patients/P-LONG?period=week", "/devices", "/devices/test-device",
                 "/exports", "/audit"):
        page.goto(url + path)
        assert no_horizontal_scroll(page), path
    page.goto(url + "/patients/P-LONG")
    shot(page, "tablet", docs=True)
    assert not page.problems, page.problems
