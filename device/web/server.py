"""Serving the status page: waitress in a background thread of the daemon, started and stopped cleanly.

`WebServer(app, bind, port)` binds at `start()` (port 0 picks a free port, see `.port`) and runs
waitress's event loop in a daemon thread with a small, fixed pool of worker threads; `stop()`
finishes the requests in progress (up to a few seconds) and closes every connection.
`load_password_hash(web_config)` reads the password hash from systemd's credentials directory;
`start_status_page(control, ...)` does both for the daemon.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from device.config import WebConfig
from device.credentials import CredentialError, credentials_dir, parse_password_hash, read_secret
from device.errors import AffectboxError
from device.web.control import ApplianceControl

log = logging.getLogger(__name__)

THREADS = 4  # handlers for concurrent requests; the page polls, so a kiosk plus a laptop need two
CONNECTION_LIMIT = 100  # open connections; past it the longest-waiting half-open one is closed for a new one
CHANNEL_TIMEOUT_S = 30  # idle keep-alive connections are closed after this long
REQUEST_TIMEOUT_S = 10.0  # a whole request (head and body, <= 16 KiB) must arrive within this long (slowloris)
CLEANUP_INTERVAL_S = 1  # how often connections are checked against the two timeouts
MAX_REQUEST_BODY = 1 << 20  # waitress's own bound; the app refuses far smaller bodies itself
LOOP_TIMEOUT_S = 0.5  # how often the loop looks at the stop flag
SHUTDOWN_TIMEOUT_S = 5.0


class WebServerError(AffectboxError):
    """The status page cannot listen (address in use, not an address of this machine, no permission)."""


class GuardedChannel(HTTPChannel):
    """waitress's connection, remembering since when it waits for a request's head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_started = self.creation_time  # when the head being read began (or the connection opened)
        self.served = 0

    def received(self, data: bytes) -> bool:
        if data and self.request is None and not self.requests:
            self.head_started = time.time()
        before = len(self.requests)
        result = super().received(data)
        self.served += max(0, len(self.requests) - before)
        return bool(result)

    def half_open(self) -> bool:
        """Not being served and without a complete request: what a slow client (or an idle
        keep-alive connection) holds."""
        return not self.requests and (self.request is None or not self.request.completed)


class GuardedServer(TcpWSGIServer):
    """waitress's server with the two remedies of a well-kept server against slow clients
    (slowloris, slow bodies): a request must arrive whole within REQUEST_TIMEOUT_S of its first
    byte (and a new connection must start one within that time), and when the connection limit is reached the
    half-open connection waiting longest is closed to make room, so slow clients can never keep
    the page from accepting (waitress alone stops accepting at the limit)."""

    channel_class = GuardedChannel

    def readable(self) -> bool:
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return bool(self.accepting)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle keep-alive connections past channel_timeout
        for channel in list(self.active_channels.values()):
            if not isinstance(channel, GuardedChannel) or not channel.half_open():
                continue
            waiting = channel.request is not None or channel.served == 0  # not an idle keep-alive
            if waiting and now - channel.head_started > REQUEST_TIMEOUT_S:
                channel.will_close = True
                channel.handle_close()

    def handle_accept(self) -> None:
        super().handle_accept()
        if len(self.active_channels) <= self.adj.connection_limit:
            return
        newest = max(self.active_channels.values(), key=lambda c: c.creation_time)
        candidates = [c for c in self.active_channels.values()
                      if c is not newest and isinstance(c, GuardedChannel) and c.half_open()]
        victim = min(candidates, key=lambda c: c.head_started) if candidates else newest
        victim.will_close = True
        victim.handle_close()


class WebServer:
    """A waitress server for `app` on `bind`:`port`, in a background thread."""

    def __init__(self, app: Any, bind: str, port: int, *, threads: int = THREADS) -> None:
        self.app = app
        self.bind = bind
        self.requested_port = port
        self.threads = threads
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        """The port actually bound (the free one picked for port 0); only after start()."""
        if self._server is None:
            raise WebServerError("the status page server has not been started")
        return int(self._server.effective_port)

    @property
    def url(self) -> str:
        host = self.bind
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> WebServer:
        if self._thread is not None:
            raise WebServerError("the status page server is already started")
        # Bind here, before waitress starts its worker threads: a refused address then leaves
        # nothing behind (waitress would leak its threads and sockets when its own bind fails).
        sock = self._listening_socket()
        try:
            adj = Adjustments(
                sockets=[sock], threads=self.threads,
                connection_limit=CONNECTION_LIMIT, channel_timeout=CHANNEL_TIMEOUT_S,
                cleanup_interval=CLEANUP_INTERVAL_S,
                max_request_body_size=MAX_REQUEST_BODY, ident="affectbox", expose_tracebacks=False,
                asyncore_use_poll=True, clear_untrusted_proxy_headers=True,
            )
            dispatcher = ThreadedTaskDispatcher()
            dispatcher.set_thread_count(self.threads)
            server: BaseWSGIServer = GuardedServer(
                self.app, {}, True, sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
                sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))
        except BaseException:
            sock.close()
            raise
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="web", daemon=True)
        self._thread.start()
        log.info("status page on %s", self.url)
        return self

    def _listening_socket(self) -> socket.socket:
        try:
            address = ipaddress.ip_address(self.bind)
        except ValueError:
            raise WebServerError(f"status page: {self.bind!r} is not an IP address (web.bind)") from None
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((self.bind, self.requested_port))
        except OSError as exc:
            sock.close()
            raise WebServerError(f"status page: cannot listen on {self.bind}:{self.requested_port} "
                                 f"({exc.strerror or exc})") from None
        return sock

    def _serve(self) -> None:
        server = self._server
        assert server is not None
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=LOOP_TIMEOUT_S, use_poll=True, map=server._map, count=1)
        except Exception:
            log.exception("status page: the server loop failed")
        finally:
            server.task_dispatcher.shutdown(timeout=SHUTDOWN_TIMEOUT_S)
            wasyncore.close_all(server._map, ignore_all=True)

    def stop(self, timeout_s: float = SHUTDOWN_TIMEOUT_S + 2.0) -> None:
        """Stop serving: requests in progress may finish (a few seconds at most), then all sockets close."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            server.pull_trigger()  # wake the loop now rather than at its next timeout
        thread.join(timeout_s)
        if thread.is_alive():
            log.warning("status page: the server thread did not stop within %.0f s", timeout_s)
        self._thread = None

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load_password_hash(web: WebConfig, directory: str | os.PathLike[str] | None = None) -> str | None:
    """The status page's password hash from the credential file, or None when there is none.

    The file is `web.password_file` in `directory` (default: systemd's $CREDENTIALS_DIRECTORY).
    None (the page then says the device is not provisioned) when there is no file name, no
    credentials directory or no such file; a file with loose permissions or that is not a
    valid hash raises CredentialError.
    """
    if not web.password_file:
        return None
    folder = Path(directory) if directory is not None else credentials_dir()
    if folder is None:
        return None
    path = folder / web.password_file
    # an unprovisioned device gets a credential holding only a newline (the unit's LoadCredential=
    # needs a file): that is "no password yet", not an error
    if not path.exists() or (path.is_file() and not path.read_bytes().strip()):
        return None
    line = read_secret(path, "status page password")
    try:
        parse_password_hash(line)
    except CredentialError as exc:
        raise CredentialError(f"{path}: {exc}") from None
    return line


def start_status_page(control: ApplianceControl, *, password_hash: str | None,
                      secret_key: bytes | None = None) -> WebServer | None:
    """Build the app for `control` and serve it on `[web] bind`:`port`; None when `[web] enabled` is false."""
    from device.web.app import create_app

    web = control.config.web
    if not web.enabled:
        return None
    if password_hash is None:
        log.warning("status page: no password is set (%s in the credentials directory); nobody can log in "
                    "until `affectbox provision` sets one", web.password_file or "web.password_file")
    app = create_app(control, password_hash=password_hash, secret_key=secret_key)
    return WebServer(app, web.bind, web.port).start()
