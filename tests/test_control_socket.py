"""The daemon's control socket in-process: requests, refusals and malformed input."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from device.daemon.control import MAX_REQUEST_BYTES, ControlError, ControlServer, send_request
from device.store import SessionStateError


def raw(path: Path, data: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return json.loads(reply)


@pytest.fixture
def server(tmp_path: Path):
    calls: list[dict[str, Any]] = []

    def handler(request: dict[str, Any]) -> dict[str, Any]:
        calls.append(request)
        if request["command"] == "stop":
            raise SessionStateError("no session is running")
        if request["command"] == "start" and request.get("patient_id") == "boom":
            raise RuntimeError("unexpected")
        return {"echo": request["command"]}

    path = tmp_path / "run" / "control.sock"
    control = ControlServer(path, handler)
    control.start()
    yield path, calls
    control.stop()


def test_requests_are_answered_and_refusals_are_one_line(server):
    path, _ = server
    assert send_request(path, {"command": "status"}) == {"echo": "status"}
    with pytest.raises(ControlError, match=r"^no session is running$"):
        send_request(path, {"command": "stop"})
    with pytest.raises(ControlError, match="failed to run the request"):
        send_request(path, {"command": "start", "patient_id": "boom"})
    assert oct(path.stat().st_mode & 0o777) == "0o660"


@pytest.mark.parametrize("data, message", [
    (b"not json\n", "not JSON"),
    (b"\xff\xfe\n", "not JSON"),
    (b"[1, 2]\n", "command one of"),
    (b'{"command": "reboot"}\n', "command one of"),
    (b"{" + b" " * (MAX_REQUEST_BYTES + 10) + b"}\n", "over"),
])
def test_malformed_requests_are_refused_without_reaching_the_handler(server, data: bytes, message: str):
    path, calls = server
    reply = raw(path, data)
    assert reply["ok"] is False and message in reply["error"]
    assert calls == []


def test_no_daemon_and_a_second_daemon(tmp_path: Path, server):
    with pytest.raises(ControlError, match="no control socket"):
        send_request(tmp_path / "absent.sock", {"command": "status"})
    path, _ = server
    with pytest.raises(ControlError, match="already running"):
        ControlServer(path, lambda r: {}).start()
    # a socket file left by a crashed daemon is replaced
    stale = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()
    control = ControlServer(stale, lambda r: {"fresh": True})
    control.start()
    try:
        assert send_request(stale, {"command": "status"}) == {"fresh": True}
    finally:
        control.stop()
