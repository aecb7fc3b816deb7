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
    (b"not json\n", "not valid JSON"),
    (b"\xff\xfe\n", "not valid JSON"),
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


# ---- issue 12: attacks on the socket ------------------------------------------------------------

@pytest.mark.parametrize("kind", ["database", "fifo", "symlink", "folder"])
def test_a_path_that_is_not_a_socket_is_never_removed(tmp_path: Path, kind: str):
    """`control.socket` naming the store (or any file) must not delete it to bind the socket."""
    import os

    target = tmp_path / "affectbox.db"
    if kind == "database":
        target.write_bytes(b"SQLite format 3\0" + b"x" * 100)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        (tmp_path / "real").write_text("keep")
        target.symlink_to(tmp_path / "real")
    else:
        target.mkdir()
    before = os.lstat(target)
    with pytest.raises(ControlError, match=r"is not a socket; refusing to remove it") as caught:
        ControlServer(target, lambda r: {}).start()
    assert "\n" not in str(caught.value)
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    if kind == "database":
        assert target.read_bytes().startswith(b"SQLite format 3")


def test_over_4_kib_gets_the_error_line_not_a_reset(server):
    path, calls = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b'{"command": "status", "pad": "' + b"x" * (3 * MAX_REQUEST_BYTES) + b'"}\n')
        reply = b""
        while chunk := sock.recv(4096):  # a reset would raise ConnectionResetError here
            reply += chunk
    assert json.loads(reply) == {"ok": False, "error": f"request over {MAX_REQUEST_BYTES} bytes"}
    assert calls == []


def test_deeply_nested_json_gets_one_line(server):
    path, calls = server
    for depth in (2000, 100_000 // 2):
        reply = raw(path, b"[" * depth + b"]" * depth + b"\n") if depth * 2 < MAX_REQUEST_BYTES \
            else raw(path, b"[" * 2000 + b"\n")
        assert reply["ok"] is False and "\n" not in reply["error"]
        assert "nested" in reply["error"] or "over" in reply["error"]
    assert calls == []


def test_slow_clients_hold_no_threads_and_a_burst_is_served(server):
    """200 clients that connect and send nothing cost no thread each and do not stop a real
    request; a burst of 200 clients at once all get their answer (no EAGAIN)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    path, _ = server
    threads_before = threading.active_count()
    idle = []
    try:
        for _ in range(200):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(path))
            idle.append(sock)
        threads_held = threading.active_count()
        assert threads_held <= threads_before
        began = time.monotonic()
        assert send_request(path, {"command": "status"}, timeout_s=5.0) == {"echo": "status"}
        answered_in = time.monotonic() - began
    finally:
        for sock in idle:
            sock.close()
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=200) as pool:
        answers = list(pool.map(lambda _: send_request(path, {"command": "status"}, timeout_s=20.0), range(200)))
    burst_s = time.monotonic() - began
    print(f"RELIABILITY control socket: 200 idle clients held, threads {threads_before} -> {threads_held}, "
          f"a request answered in {answered_in:.3f} s; burst of 200 clients: {answers.count({'echo': 'status'})} "
          f"answered in {burst_s:.2f} s")
    assert answers == [{"echo": "status"}] * 200
