"""The daemon's local control socket and its client (`affectbox session start/stop/status`).

A Unix stream socket (default /run/affectbox/control.sock, mode 0660, so the service user and
its group may use it). One request per connection: a JSON object on one line, at most 4 KiB:
`{"command": "start", "patient_id": "p-0042", "consent": true, "max_duration_s": 1800}`,
`{"command": "stop"}` or `{"command": "status"}`. The answer is one JSON line:
`{"ok": true, "result": {...}}` or `{"ok": false, "error": "one line"}`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.errors import AffectboxError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096
COMMANDS = ("start", "stop", "status")


class ControlError(AffectboxError):
    """The control socket cannot be served or reached, or the daemon refused the request."""


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """Serves requests on the socket in a background thread; `handler` runs each one."""

    def __init__(self, path: str | Path, handler: Handler) -> None:
        self.path = Path(path)
        self.handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if self.path.is_socket() or self.path.exists():
                self._remove_stale()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_umask = os.umask(0o117)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old_umask)
            sock.listen(8)
            sock.settimeout(0.5)
        except OSError as exc:
            raise ControlError(f"{self.path}: cannot serve the control socket ({exc.strerror or exc})") from None
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _remove_stale(self) -> None:
        """Remove a socket left by a crashed daemon, but never steal one a live daemon serves."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.5)
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)
            return
        finally:
            probe.close()
        raise ControlError(f"{self.path}: another affectbox daemon is already running here")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            threading.Thread(target=self._answer, args=(conn,), name="control-request", daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5.0)
            try:
                data = b""
                while b"\n" not in data and len(data) <= MAX_REQUEST_BYTES:
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                reply = self._reply(data)
                conn.sendall(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            except OSError as exc:
                log.debug("control: connection failed: %s", exc)

    def _reply(self, data: bytes) -> dict[str, Any]:
        if len(data) > MAX_REQUEST_BYTES:
            return {"ok": False, "error": f"request over {MAX_REQUEST_BYTES} bytes"}
        try:
            request = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return {"ok": False, "error": f"request is not JSON ({exc})"}
        if not isinstance(request, dict) or request.get("command") not in COMMANDS:
            return {"ok": False, "error": f"request must be an object with command one of {', '.join(COMMANDS)}"}
        try:
            return {"ok": True, "result": self.handler(request)}
        except AffectboxError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception:
            log.exception("control: request %s failed", request.get("command"))
            return {"ok": False, "error": "the daemon failed to run the request (see its log)"}


def send_request(path: str | Path, request: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
    """Send one request to a running daemon; its result, or ControlError with its one-line message."""
    path = Path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(f"{path}: no control socket; is the daemon running (systemctl status affectbox)?") \
                from None
        except PermissionError:
            raise ControlError(f"{path}: permission denied; run as the affectbox user or a member of its group") \
                from None
        except OSError as exc:
            raise ControlError(f"{path}: cannot reach the daemon ({exc.strerror or exc})") from None
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise ControlError(f"{path}: the daemon did not answer within {timeout_s:.0f} s") from None
    finally:
        sock.close()
    try:
        reply = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError(f"{path}: the daemon's answer is not JSON") from None
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "refused")))
    result = reply.get("result")
    return result if isinstance(result, dict) else {}
