"""The contract between the status page and the daemon: what the web app may ask of it.

`device.daemon.service.Daemon` implements it; the web app never touches capture, models or the
writable store, only these calls and its own read-only `Store` per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from device.config import Config


@runtime_checkable
class ApplianceControl(Protocol):
    """What the status page needs from the running appliance.

    `status()` and `live()` return JSON-ready dicts (see docs/openapi.yaml for their fields);
    `start_session`/`stop_session` raise `device.store.PatientIdError` (bad patient id),
    `device.store.SessionStateError` (already running / nothing running) or another
    `device.errors.AffectboxError` with a one-line message for other refusals.
    """

    config: Config
    store_path: Path

    def status(self) -> dict[str, Any]: ...

    def live(self) -> dict[str, Any]: ...

    def start_session(self, patient_id: str, *, consent: bool = False, max_duration_s: float | None = None,
                      source: str = "web") -> dict[str, Any]: ...

    def stop_session(self, *, source: str = "web") -> dict[str, Any]: ...
