"""The optional GPIO recording LED and start/stop button: one job, session state to LED and presses to requests.

The LED is lit exactly while a session runs and blinks while it ends, so patients can see when
the device is listening; it is off otherwise and after `close()`. A press of the button stops a
running session; when idle it starts one for `gpio.kiosk_patient_id` (a daily-log kiosk for one
patient) or, without one, is only logged. Requests go through the same `start_session` /
`stop_session` as the CLI, the status page and the hub (with `source="button"`), so the recorder's
rules (consent, one session at a time, the daemon stopping) apply unchanged.

gpiozero drives the pins when it imports (Raspberry Pi OS: apt's `python3-gpiozero`). It is
optional: without it, or when the pins cannot be opened, one warning is logged, `status()` says
`degraded` and the daemon goes on; nothing here ever raises into the daemon.

Threads: a poll thread reads the session state every `POLL_S` and sets the LED (polling catches
every way a session ends: stop, maximum duration, auto-stop, shutdown); gpiozero calls `_pressed`
on its own thread, which only debounces and hands the request to a short-lived thread, because
a start or stop waits for the recorder (up to its command timeout).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from device.config import GpioConfig
from device.errors import AffectboxError

log = logging.getLogger(__name__)

POLL_S = 0.25  # the LED follows a start or stop within a quarter of a second
BOUNCE_S = 0.05  # gpiozero's edge debouncing of the contact itself
DEBOUNCE_S = 1.0  # presses this soon after a handled one are ignored (a double press must not start and stop)
BLINK_S = 0.25  # on and off time of the LED while a session ends
JOIN_S = 1.0


class SessionControl(Protocol):
    """What the button asks for: the daemon (or, in tests, the recorder) answers."""

    def start_session(self, patient_id: str, *, consent: bool = False, max_duration_s: float | None = None,
                      source: str = "cli") -> dict[str, Any]: ...

    def stop_session(self, *, source: str = "cli", reason: str | None = None) -> dict[str, Any]: ...


def led_mode(state: str) -> str:
    """The LED for a recorder state: on while running, blinking while ending, off otherwise."""
    return {"running": "on", "ending": "blinking"}.get(state, "off")


class Indicator:
    """Drives the LED from `state()` and turns button presses into `control` requests."""

    def __init__(self, gpio: GpioConfig, *, consent_required: bool, control: SessionControl,
                 state: Callable[[], str], poll_s: float = POLL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gpio = gpio
        self.consent_required = consent_required
        self.control = control
        self.state = state
        self.poll_s = poll_s
        self.clock = clock
        self.led: Any = None
        self.button: Any = None
        self.led_shown = "off"
        self.presses = 0
        self.ignored_presses = 0
        self._problem: str | None = None  # one line for status(); None while all is well
        self._lock = threading.Lock()  # guards the LED, the press bookkeeping and closing
        self._last_press: float | None = None
        self._press_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._poll_thread: threading.Thread | None = None
        self._closed = False

    # ---- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open the pins and start following the state; on any failure log one warning and carry on."""
        try:
            from gpiozero import LED, Button
        except ImportError:
            self._problem = "gpiozero not installed"
            log.warning("gpio: gpio.enabled = true but gpiozero is not installed (Raspberry Pi OS: apt install "
                        "python3-gpiozero); no recording LED and no button, the daemon goes on without them")
            return
        try:
            if self.gpio.led_pin:
                self.led = LED(self.gpio.led_pin, active_high=True, initial_value=False)
            if self.gpio.button_pin:
                # the button connects the pin to ground: the internal pull-up holds it high otherwise
                self.button = Button(self.gpio.button_pin, pull_up=True, bounce_time=BOUNCE_S)
                self.button.when_pressed = self._pressed
        except Exception as exc:  # no pin factory, pin in use, no permission: never a reason to stop the daemon
            self._close_devices()
            self._problem = f"GPIO not available: {_one_line(exc)}"
            log.warning("gpio: %s; no recording LED and no button, the daemon goes on without them", self._problem)
            return
        if self.gpio.kiosk_patient_id and self.consent_required and not self.gpio.consent_by_button:
            log.warning("gpio: session.consent_required = true and gpio.consent_by_button = false: the button "
                        "cannot start sessions for gpio.kiosk_patient_id, it only stops them")
        log.info("gpio: recording LED on GPIO %s, button on GPIO %s%s", self.gpio.led_pin or "-",
                 self.gpio.button_pin or "-",
                 " (starts and stops the kiosk's sessions)" if self.gpio.kiosk_patient_id else " (stops sessions)")
        self._refresh()
        self._poll_thread = threading.Thread(target=self._poll, name="indicator", daemon=True)
        self._poll_thread.start()

    def close(self) -> None:
        """Stop following the state, switch the LED off and release the pins (idempotent)."""
        self._stop.set()
        if self._poll_thread is not None:
            self._poll_thread.join(JOIN_S)
        with self._lock:
            self._closed = True  # from here on presses and refreshes leave the pins alone
            press = self._press_thread
        if press is not None:
            press.join(JOIN_S)  # a start or stop in flight goes on; the LED must not wait for it
        self._close_devices()

    def _close_devices(self) -> None:
        with self._lock:
            led, button, self.led, self.button = self.led, self.button, None, None
            self.led_shown = "off"
        # outside the lock: closing the button may wait for gpiozero's callback thread, which may be
        # waiting for the lock in _pressed
        for device in (button, led):
            if device is None:
                continue
            try:
                if device is led:
                    led.off()
                device.close()
            except Exception as exc:
                log.warning("gpio: could not release GPIO: %s", _one_line(exc))

    # ---- what the daemon reads ----------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True while a press's start or stop is in flight (further presses are ignored meanwhile)."""
        press = self._press_thread
        return press is not None and press.is_alive()

    def status(self) -> dict[str, Any]:
        """The `gpio` component of the daemon's status."""
        if self._problem is not None:
            return {"state": "degraded", "detail": self._problem, "led": None, "presses": self.presses}
        pins = []
        if self.gpio.led_pin:
            pins.append(f"LED on GPIO {self.gpio.led_pin}")
        if self.gpio.button_pin:
            pins.append(f"button on GPIO {self.gpio.button_pin}")
        return {"state": "ok", "detail": ", ".join(pins), "led": self.led_shown if self.gpio.led_pin else None,
                "presses": self.presses}

    # ---- the LED ------------------------------------------------------------------------------

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._refresh()

    def _refresh(self) -> None:
        """Show the current session state; a failure is logged once and reported, never raised."""
        try:
            mode = led_mode(self.state())
            with self._lock:
                if self._closed or self.led is None:
                    return
                if mode != self.led_shown:
                    if mode == "on":
                        self.led.on()
                    elif mode == "blinking":
                        self.led.blink(on_time=BLINK_S, off_time=BLINK_S, background=True)
                    else:
                        self.led.off()
                    self.led_shown = mode  # only once set: a failed write is retried at the next poll
        except Exception as exc:
            self._fail(f"recording LED: {_one_line(exc)}")
            return
        if self._problem is not None:
            log.info("gpio: the recording LED follows the session state again")
            self._problem = None

    def _fail(self, problem: str) -> None:
        if problem != self._problem:
            log.warning("gpio: %s", problem)
        self._problem = problem

    # ---- the button ---------------------------------------------------------------------------

    def _pressed(self) -> None:
        """gpiozero's callback, on its thread: debounce, then hand the request over (never blocks)."""
        now = self.clock()
        with self._lock:
            if self._closed:
                return
            busy = self.busy
            if busy or (self._last_press is not None and now - self._last_press < DEBOUNCE_S):
                self.ignored_presses += 1
                log.debug("gpio: button press ignored (%s)", "a request is in flight" if busy else "too soon")
                return
            self._last_press = now
            self.presses += 1
            self._press_thread = threading.Thread(target=self._handle_press, name="indicator-button", daemon=True)
            self._press_thread.start()

    def _handle_press(self) -> None:
        try:
            state = self.state()
            if state == "running":
                result = self.control.stop_session(source="button")
                log.info("gpio: button stopped session %s", result.get("session_id"))
            elif state == "idle":
                patient = self.gpio.kiosk_patient_id
                if not patient:
                    log.info("gpio: button pressed while no session runs: nothing to stop (set "
                             "gpio.kiosk_patient_id for the button to start sessions)")
                    return
                result = self.control.start_session(patient, consent=self.gpio.consent_by_button, source="button")
                log.info("gpio: button started session %s", result.get("session_id"))
            else:  # ending (or the daemon still starting): the press would race the state change
                log.info("gpio: button pressed while the session state is %r: ignored", state)
                return
        except AffectboxError as exc:  # refused (consent, already running, stopping): one line, as the CLI shows it
            log.warning("gpio: button press refused: %s", exc)
            return
        except Exception:  # a thread that dies silently would hide the bug
            log.exception("gpio: button press failed")
            return
        self._refresh()  # show the new state now rather than at the next poll


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
