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
import queue
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.errors import AffectboxError
from device.safe_json import JSONLimitError, loads_bounded

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096
MAX_CONNECTIONS = 64  # connections held at once; the oldest waiting one is closed for a new one
BACKLOG = 256  # a burst of clients queues in the kernel instead of failing with EAGAIN
MAX_QUEUED_REQUESTS = 256  # complete requests waiting for their turn (each holds a descriptor and <= 4 KiB)
REQUEST_DEADLINE_S = 5.0  # a client must send its whole request within this long
SEND_TIMEOUT_S = 2.0
DRAIN_BYTES = 1 << 20  # read and dropped after the answer, for at most DRAIN_S
DRAIN_S = 0.3
CONNECT_RETRY_S = 0.05
COMMANDS = ("start", "stop", "status")


class ControlError(AffectboxError):
    """The control socket cannot be served or reached, or the daemon refused the request."""


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """Serves requests on the socket; `handler` runs each one.

    One thread reads every connection through a selector (non-blocking), so slow or idle local
    clients cost a file descriptor each, never a thread: at most MAX_CONNECTIONS are held (the
    oldest is closed for a new one), each must send its request within REQUEST_DEADLINE_S, and a
    second thread runs complete requests one at a time (the recorder answers them in order anyway).
    """

    def __init__(self, path: str | Path, handler: Handler) -> None:
        self.path = Path(path)
        self.handler = handler
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        # complete requests (bytes) or refusals to send after draining the rest (dict), for the request thread
        self._requests: queue.Queue[tuple[socket.socket, bytes | dict[str, Any]] | None] = \
            queue.Queue(maxsize=MAX_QUEUED_REQUESTS)

    def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            self._remove_stale()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_umask = os.umask(0o117)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old_umask)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            raise ControlError(f"{self.path}: cannot serve the control socket ({exc.strerror or exc})") from None
        self._sock = sock
        self._threads = [threading.Thread(target=self._serve, name="control", daemon=True),
                         threading.Thread(target=self._run_requests, name="control-request", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _remove_stale(self) -> None:
        """Remove a socket left by a crashed daemon; never anything that is not a socket, and never a
        socket a live daemon serves."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlError(f"{self.path}: exists and is not a socket; refusing to remove it "
                               "(control.socket must name a path of its own)")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.5)
            probe.connect(str(self.path))
        except OSError:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                self.path.unlink(missing_ok=True)
            return
        finally:
            probe.close()
        raise ControlError(f"{self.path}: another affectbox daemon is already running here")

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._requests.put_nowait(None)
        for thread in self._threads:
            thread.join(2.0)
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                self.path.unlink()

    def _serve(self) -> None:
        assert self._sock is not None
        selector = selectors.DefaultSelector()
        selector.register(self._sock, selectors.EVENT_READ)
        pending: dict[socket.socket, list[Any]] = {}  # connection -> [bytes read, deadline]
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.25):
                    if key.fileobj is self._sock:
                        self._accept(selector, pending)
                    else:
                        self._read(selector, pending, key.fileobj)  # type: ignore[arg-type]
                now = time.monotonic()
                for conn in [c for c, (_, deadline) in pending.items() if now >= deadline]:
                    self._finish(selector, pending, conn, {"ok": False, "error": "no complete request within "
                                                                                 f"{REQUEST_DEADLINE_S:g} s"})
        finally:
            for conn in list(pending):
                conn.close()
            selector.close()

    def _accept(self, selector: selectors.BaseSelector, pending: dict[socket.socket, list[Any]]) -> None:
        assert self._sock is not None
        for _ in range(BACKLOG):  # take the whole burst, not one per wake-up
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("control: accept failed: %s", exc)
                return
            if len(pending) >= MAX_CONNECTIONS:
                # first take the held clients whose request (or hang-up) is already waiting to be read:
                # in a burst they are most of them; only an idle holder is closed to make room
                for held in sorted(pending, key=lambda c: pending[c][1]):
                    self._read(selector, pending, held)
                    if len(pending) < MAX_CONNECTIONS:
                        break
            if len(pending) >= MAX_CONNECTIONS:  # the longest-waiting idle client makes room
                oldest = min(pending, key=lambda c: pending[c][1])
                self._finish(selector, pending, oldest, {"ok": False, "error": "too many connections; try again"})
            conn.setblocking(False)
            pending[conn] = [b"", time.monotonic() + REQUEST_DEADLINE_S]
            selector.register(conn, selectors.EVENT_READ)

    def _read(self, selector: selectors.BaseSelector, pending: dict[socket.socket, list[Any]],
              conn: socket.socket) -> None:
        entry = pending.get(conn)
        if entry is None:
            return
        try:
            chunk = conn.recv(MAX_REQUEST_BYTES + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        entry[0] += chunk
        data = entry[0]
        if len(data) > MAX_REQUEST_BYTES or b"\n" in data or not chunk:
            selector.unregister(conn)
            del pending[conn]
            item: bytes | dict[str, Any] = data
            if len(data) > MAX_REQUEST_BYTES:  # answered after draining (else the close is a reset)
                item = {"ok": False, "error": f"request over {MAX_REQUEST_BYTES} bytes"}
            try:
                self._requests.put_nowait((conn, item))
            except queue.Full:
                _send_and_close(conn, {"ok": False, "error": "the daemon is busy; try again"}, drain=False)

    def _finish(self, selector: selectors.BaseSelector, pending: dict[socket.socket, list[Any]],
                conn: socket.socket, reply: dict[str, Any]) -> None:
        selector.unregister(conn)
        del pending[conn]
        _send_and_close(conn, reply, drain=False)

    def _run_requests(self) -> None:
        while True:
            item = self._requests.get()
            if item is None or self._stop.is_set():
                if item is not None:
                    item[0].close()
                return
            conn, data = item
            if isinstance(data, dict):
                _send_and_close(conn, data, drain=True)
            else:
                _send_and_close(conn, self._reply(data), drain=False)

    def _reply(self, data: bytes) -> dict[str, Any]:
        try:
            request = loads_bounded(data, max_bytes=MAX_REQUEST_BYTES)
        except JSONLimitError as exc:
            return {"ok": False, "error": str(exc)}
        if not isinstance(request, dict) or request.get("command") not in COMMANDS:
            return {"ok": False, "error": f"request must be an object with command one of {', '.join(COMMANDS)}"}
        try:
            return {"ok": True, "result": self.handler(request)}
        except AffectboxError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception:
            log.exception("control: request %s failed", request.get("command"))
            return {"ok": False, "error": "the daemon failed to run the request (see its log)"}


def _send_and_close(conn: socket.socket, reply: dict[str, Any], *, drain: bool) -> None:
    """Send the one-line answer; with `drain`, then read and drop what the client still sends
    (briefly), so that closing with unread bytes does not turn the answer into a connection reset."""
    try:
        conn.settimeout(SEND_TIMEOUT_S)
        conn.sendall(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
        conn.shutdown(socket.SHUT_WR)
        drained, until = 0, time.monotonic() + (DRAIN_S if drain else 0.0)
        while drained < DRAIN_BYTES and (left := until - time.monotonic()) > 0:
            conn.settimeout(left)
            chunk = conn.recv(65536)
            if not chunk:
                break
            drained += len(chunk)
    except OSError as exc:
        log.debug("control: connection failed: %s", exc)
    finally:
        conn.close()


def send_request(path: str | Path, request: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
    """Send one request to a running daemon; its result, or ControlError with its one-line message."""
    path = Path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            _connect(sock, path, timeout_s)
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


def _connect(sock: socket.socket, path: Path, timeout_s: float) -> None:
    """Connect, waiting while the daemon's backlog is full (a timed Unix socket gets EAGAIN at once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            sock.connect(str(path))
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError from None
            time.sleep(CONNECT_RETRY_S)
