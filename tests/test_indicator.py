"""The GPIO recording LED and start/stop button (device/indicator.py) on gpiozero's mock pins.

Only the pins are simulated: `Device.pin_factory = MockFactory()` makes the real gpiozero `LED`
and `Button` drive and read mock pins, the test "presses" by pulling the button's pin low, and
reads the LED from its pin. Sessions run on a real `Recorder` with a real `Store` in tmp_path (as
tests/test_recorder.py does), and the last tests run the real `Daemon` in-process on a replayed
video with its real models. No Raspberry Pi is involved: wiring, pin factories (lgpio, RPi.GPIO)
and permissions on a real board are untested here.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero import LED, Button, Device
from gpiozero.pins.mock import MockFactory

import device.indicator as indicator_module
from device.config import Config, GpioConfig, config_from_dict, describe_defaults
from device.daemon.recorder import Recorder
from device.daemon.service import Daemon
from device.errors import ConfigError
from device.health import Heartbeats, SystemdNotifier
from device.indicator import BOUNCE_S, Indicator
from device.store import Store
from tests.support import wait_until

pytestmark = pytest.mark.timeout(90)

LED_PIN, BUTTON_PIN = 27, 17


class Clock:
    """The indicator's clock for debouncing, moved by hand so that no test sleeps a second."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    """gpiozero's own mock pins in place of a Pi's header, for this test only."""
    previous = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()  # closes whatever a failing test left open
        Device.pin_factory = previous


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "record.db")
    yield store
    store.close()


@pytest.fixture
def recorders(store: Store) -> Iterator[Callable[..., Recorder]]:
    started: list[Recorder] = []

    def make(config: Config | None = None) -> Recorder:
        recorder = Recorder(config or Config(), store, "dev-test", Heartbeats(), capture_origin=time.monotonic(),
                            modalities=("face",), speech_lateness_s=0.0)
        recorder.start()
        started.append(recorder)
        return recorder

    yield make
    for recorder in started:
        recorder.shutdown("test over")


@pytest.fixture
def indicators() -> Iterator[Callable[..., Indicator]]:
    made: list[Indicator] = []

    def make(control: Any, gpio: GpioConfig | None = None, *, state: Callable[[], str] | None = None,
             consent_required: bool = False, clock: Clock | None = None) -> Indicator:
        indicator = Indicator(gpio or GpioConfig(enabled=True), consent_required=consent_required, control=control,
                              state=state or (lambda: control.snapshot()["state"]), poll_s=0.05,
                              clock=clock or Clock())
        made.append(indicator)
        indicator.start()
        return indicator

    yield make
    for indicator in made:
        indicator.close()


def led(pins: MockFactory) -> bool:
    return bool(pins.pin(LED_PIN).state)


def press(pins: MockFactory, indicator: Indicator | None = None) -> None:
    """Push and release the button (it pulls its pin to ground); then wait for the request to finish."""
    pin = pins.pin(BUTTON_PIN)
    pin.drive_low()
    pin.drive_high()
    if indicator is not None:
        assert wait_until(lambda: not indicator.busy)


# ---- the LED ------------------------------------------------------------------------------------------------------

def test_the_led_is_lit_exactly_while_a_session_runs(pins: MockFactory, recorders, indicators, store: Store):
    recorder = recorders()
    indicator = indicators(recorder)
    assert not led(pins) and indicator.status() == {"state": "ok", "detail": "LED on GPIO 27, button on GPIO 17",
                                                   "led": "off", "presses": 0}
    session_id = recorder.start_session("p-led")["session_id"]  # from the CLI: the LED follows all sources
    assert wait_until(lambda: led(pins))
    assert indicator.status()["led"] == "on"
    recorder.stop_session()
    assert wait_until(lambda: not led(pins))
    assert store.session(session_id).state == "ended"

    recorder.start_session("p-led")
    assert wait_until(lambda: led(pins))
    indicator.close()  # the daemon stops: the LED goes off even with a session still running
    assert not led(pins) and recorder.state == "running"
    LED(LED_PIN).close()  # and the pins are released
    Button(BUTTON_PIN).close()


def test_the_led_blinks_while_a_session_ends_and_follows_the_maximum_duration(pins: MockFactory, recorders,
                                                                               indicators):
    state = ["ending"]
    indicators(None, state=lambda: state[0])
    pin = pins.pin(LED_PIN)
    assert wait_until(lambda: sum(1 for s in pin.states if s.state) >= 2)  # on, off, on again: blinking
    state[0] = "idle"
    assert wait_until(lambda: not led(pins))
    changes = len(pin.states)
    time.sleep(0.4)
    assert len(pin.states) == changes and not led(pins)  # off stays off

    recorder = recorders()  # a session that ends by itself: the poll sees it too
    indicators(recorder, GpioConfig(enabled=True, led_pin=22, button_pin=23))
    recorder.start_session("p-short", max_duration_s=1.0)
    assert wait_until(lambda: pins.pin(22).state)
    assert wait_until(lambda: not pins.pin(22).state and recorder.state == "idle", 5.0)


# ---- the button ---------------------------------------------------------------------------------------------------

def test_a_kiosk_press_starts_a_session_and_the_next_stops_it(pins: MockFactory, recorders, indicators,
                                                              store: Store):
    recorder = recorders()
    clock = Clock()
    indicator = indicators(recorder, GpioConfig(enabled=True, kiosk_patient_id="p-kiosk"), clock=clock)
    assert pins.pin(BUTTON_PIN).bounce == BOUNCE_S  # gpiozero debounces the contact itself
    press(pins, indicator)
    session = recorder.snapshot()["session"]
    assert session["patient_id"] == "p-kiosk" and session["source"] == "button" and session["consent"] is False
    assert wait_until(lambda: led(pins))
    clock.now += 1.5
    press(pins, indicator)
    assert recorder.state == "idle" and wait_until(lambda: not led(pins))
    record = store.session(session["session_id"])
    assert record.state == "ended" and record.end_reason == "stopped (button)"
    assert indicator.status()["presses"] == 2


def test_without_a_kiosk_id_a_press_only_stops(pins: MockFactory, recorders, indicators, store: Store,
                                               caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, "device.indicator")
    recorder = recorders()
    clock = Clock()
    indicator = indicators(recorder, clock=clock)
    press(pins, indicator)
    assert recorder.state == "idle" and store.running_session() is None and not led(pins)
    assert [r.getMessage() for r in caplog.records if "nothing to stop" in r.getMessage()] == [
        "gpio: button pressed while no session runs: nothing to stop (set gpio.kiosk_patient_id for the button "
        "to start sessions)"]
    session_id = recorder.start_session("p-cli")["session_id"]
    clock.now += 1.5
    press(pins, indicator)
    assert recorder.state == "idle" and store.session(session_id).end_reason == "stopped (button)"


def test_consent_required_refuses_a_button_start_unless_the_press_is_consent(pins: MockFactory, recorders,
                                                                             indicators, store: Store,
                                                                             caplog: pytest.LogCaptureFixture):
    recorder = recorders(config_from_dict({"session": {"consent_required": True}}))
    kiosk = GpioConfig(enabled=True, kiosk_patient_id="p-kiosk")
    indicator = indicators(recorder, kiosk, consent_required=True)
    assert "the button cannot start sessions for gpio.kiosk_patient_id" in caplog.text  # said once, at start
    press(pins, indicator)
    assert recorder.state == "idle" and store.running_session() is None
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.WARNING
    assert "session.consent_required = true" in refused[0].getMessage()
    indicator.close()

    consenting = indicators(recorder, GpioConfig(enabled=True, kiosk_patient_id="p-kiosk", consent_by_button=True),
                            consent_required=True)
    press(pins, consenting)
    session = recorder.snapshot()["session"]
    assert session is not None and session["consent"] is True and session["source"] == "button"


class SlowControl:
    """A control whose start waits until released: a press arrives while a request is in flight."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.starts = 0
        self.state = "idle"

    def start_session(self, patient_id: str, **_: Any) -> dict[str, Any]:
        self.starts += 1
        self.release.wait(5)
        self.state = "running"
        return {"session_id": "s-1"}

    def stop_session(self, **_: Any) -> dict[str, Any]:
        raise AssertionError("not expected")


def test_repeated_presses_are_debounced(pins: MockFactory, recorders, indicators, store: Store):
    recorder = recorders()
    clock = Clock()
    indicator = indicators(recorder, GpioConfig(enabled=True, kiosk_patient_id="p-kiosk"), clock=clock)
    press(pins, indicator)
    clock.now += 0.3  # a double press (or a bouncing contact past gpiozero's bounce time)
    press(pins, indicator)
    clock.now += 0.6
    press(pins, indicator)
    assert recorder.state == "running" and indicator.presses == 1 and indicator.ignored_presses == 2
    clock.now += 0.2  # 1.1 s after the handled press
    press(pins, indicator)
    assert recorder.state == "idle" and indicator.presses == 2

    slow = SlowControl()
    busy = indicators(slow, GpioConfig(enabled=True, led_pin=22, button_pin=23, kiosk_patient_id="p-kiosk"),
                      state=lambda: slow.state, clock=clock)
    pin = pins.pin(23)
    pin.drive_low()
    pin.drive_high()
    assert wait_until(lambda: slow.starts == 1) and busy.busy
    clock.now += 5.0  # long past the debounce time, but the start has not answered yet
    pin.drive_low()
    pin.drive_high()
    slow.release.set()
    assert wait_until(lambda: not busy.busy)
    assert slow.starts == 1 and busy.ignored_presses == 1


# ---- gpiozero or the pins missing -----------------------------------------------------------------------------------

def test_without_gpiozero_one_warning_and_degraded(monkeypatch: pytest.MonkeyPatch, recorders, indicators,
                                                   caplog: pytest.LogCaptureFixture):
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # `import gpiozero` raises ImportError
    recorder = recorders()
    indicator = indicators(recorder)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "device.indicator"]
    assert len(warnings) == 1 and "gpiozero is not installed" in warnings[0].getMessage()
    assert indicator.status()["state"] == "degraded" and indicator.status()["detail"] == "gpiozero not installed"
    recorder.start_session("p-no-gpio")  # sessions go on without the LED
    recorder.stop_session()
    indicator.close()


def test_pins_that_cannot_be_opened_degrade_and_release_the_others(pins: MockFactory, recorders, indicators,
                                                                   caplog: pytest.LogCaptureFixture):
    taken = LED(BUTTON_PIN)  # another program holds the button's pin
    indicator = indicators(recorders())
    status = indicator.status()
    assert status["state"] == "degraded" and status["detail"].startswith("GPIO not available: ")
    assert "\n" not in status["detail"] and "GPIO not available" in caplog.text
    taken.close()
    LED(LED_PIN).close()  # the LED opened before the failure was released again


# ---- the daemon -----------------------------------------------------------------------------------------------------

def daemon_config(folder: Path, gpio: dict[str, Any]) -> Config:
    state = folder / "state"
    return config_from_dict({
        "device": {"id": "test-device", "state_dir": str(state)},
        "store": {"path": str(state / "affectbox.db")},
        "control": {"socket": str(folder / "c.sock")},
        "session": {"debug_recording_dir": str(state / "debug")},
        "capture": {"microphone": "none"},
        "web": {"enabled": False},
        "gpio": gpio,
    })


@pytest.fixture
def short_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gpio")  # short: the control socket's path has at most 100 bytes


def test_daemon_button_and_led(pins: MockFactory, short_tmp: Path, face_video, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(indicator_module, "DEBOUNCE_S", 0.05)  # the daemon's indicator uses the real clock
    daemon = Daemon(daemon_config(short_tmp, {"enabled": True, "kiosk_patient_id": "p-kiosk"}),
                    replay_video=face_video.path, replay_loop=True, notifier=SystemdNotifier(""))
    try:
        daemon.start()
        assert daemon.indicator is not None
        assert daemon.status()["components"]["gpio"]["state"] == "ok" and not led(pins)
        press(pins, daemon.indicator)
        status = daemon.status()
        assert status["state"] == "running" and status["session"]["source"] == "button"
        assert wait_until(lambda: led(pins))
        time.sleep(0.1)
        press(pins, daemon.indicator)
        assert daemon.status()["state"] == "idle" and wait_until(lambda: not led(pins))
        time.sleep(0.1)
        press(pins, daemon.indicator)
        session_id = daemon.status()["session"]["session_id"]
        assert wait_until(lambda: led(pins))
    finally:
        daemon.shutdown("test over")
    assert not led(pins)  # off at shutdown
    with Store(short_tmp / "state" / "affectbox.db", readonly=True) as store:
        assert store.session(session_id).state == "interrupted"
    LED(LED_PIN).close()  # released
    Button(BUTTON_PIN).close()


def test_daemon_runs_without_gpiozero(short_tmp: Path, face_video, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture):
    monkeypatch.setitem(sys.modules, "gpiozero", None)
    daemon = Daemon(daemon_config(short_tmp, {"enabled": True}), replay_video=face_video.path, replay_loop=True,
                    notifier=SystemdNotifier(""))
    try:
        daemon.start()
        status = daemon.status()
        assert status["components"]["gpio"] == {"state": "degraded", "detail": "gpiozero not installed",
                                                "led": None, "presses": 0}
        assert status["health"] == "degraded"
        assert sum("gpiozero is not installed" in r.getMessage() for r in caplog.records) == 1
        started = daemon.start_session("p-cli", source="cli")
        assert daemon.stop_session()["session_id"] == started["session_id"]
    finally:
        daemon.shutdown("test over")


def test_gpio_is_off_by_default():
    assert Daemon(Config(), notifier=SystemdNotifier("")).status()["components"]["gpio"] == {
        "state": "off", "detail": "gpio.enabled = false"}


# ---- configuration -------------------------------------------------------------------------------------------------

def test_gpio_defaults_match_the_documented_wiring():
    gpio = Config().gpio
    assert (gpio.enabled, gpio.led_pin, gpio.button_pin, gpio.kiosk_patient_id, gpio.consent_by_button) == (
        False, 27, 17, "", False)
    assert "[gpio]" in describe_defaults()
    assert config_from_dict({"gpio": {"enabled": True, "kiosk_patient_id": "p-0042", "led_pin": 0}}).gpio.led_pin == 0


@pytest.mark.parametrize(
    ("gpio", "fragment"),
    [
        ({"led_pin": 28}, "gpio.led_pin: must be between 0 and 27 (got 28)"),
        ({"button_pin": -1}, "gpio.button_pin: must be between 0 and 27 (got -1)"),
        ({"enabled": "yes"}, "gpio.enabled: must be true or false"),
        ({"led_pin": 17}, "gpio.button_pin: must differ from gpio.led_pin (both 17)"),
        ({"enabled": True, "led_pin": 0, "button_pin": 0}, "gpio.enabled: needs gpio.led_pin or gpio.button_pin"),
        ({"kiosk_patient_id": "Jane Doe"}, "gpio.kiosk_patient_id: patient id 'Jane Doe' contains ' '"),
        ({"kiosk_patient_id": "p-1", "button_pin": 0}, "gpio.kiosk_patient_id: needs gpio.button_pin"),
        ({"kiosk_patient_id": 42}, "gpio.kiosk_patient_id: must be a string"),
        ({"pin": 4}, "gpio.pin: unknown key"),
    ],
)
def test_gpio_config_errors_name_the_key(gpio: dict[str, Any], fragment: str):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"gpio": gpio}, "test.toml")
    assert fragment in str(err.value) and "\n" not in str(err.value)
