"""Access control for the status page: login sessions with expiry and CSRF tokens, and login rate limiting.

Login sessions live in memory only (a restart of the daemon logs everybody out). The browser holds
a random 256-bit token in an HttpOnly, SameSite=Strict cookie; the table keeps only its SHA-256,
so the table alone cannot be replayed as a cookie. A login expires a fixed time after it was made
(`[web] session_minutes`), whatever the activity in between. The CSRF token of a login is an HMAC
of its cookie token under the app's secret key: tied to that login, useless for another one, and
never stored.

Failed logins are counted per client (an IPv4 address, or the /64 network of an IPv6 address,
since one machine can hold a whole /64) in a sliding minute, plus a bound on failures from all
clients together so that many addresses cannot brute-force the password in parallel.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import hmac
import ipaddress
import math
import queue
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from device.credentials import verify_password

COOKIE_NAME = "affectbox_login"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
MAX_LOGINS = 32  # live login sessions kept; the oldest is dropped beyond this
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@dataclass(frozen=True)
class Login:
    """One live login session."""

    created: float
    expires: float
    csrf_token: str

    def remaining_s(self, now: float) -> float:
        return max(0.0, self.expires - now)


class LoginSessions:
    """Server-side login sessions keyed by the SHA-256 of their cookie token."""

    def __init__(self, secret_key: bytes, lifetime_s: float, clock: Callable[[], float] = time.monotonic,
                 max_logins: int = MAX_LOGINS) -> None:
        self._secret = secret_key
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._max = max_logins
        self._lock = threading.Lock()
        self._logins: OrderedDict[str, Login] = OrderedDict()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

    def csrf_for(self, token: str) -> str:
        return hmac.new(self._secret, b"csrf:" + token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def create(self) -> tuple[str, Login]:
        """A new login: (cookie token, login)."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        login = Login(created=now, expires=now + self.lifetime_s, csrf_token=self.csrf_for(token))
        with self._lock:
            self._prune(now)
            self._logins[self._key(token)] = login
            while len(self._logins) > self._max:
                self._logins.popitem(last=False)
        return token, login

    def get(self, token: str | None) -> Login | None:
        """The live login for a cookie token; None when unknown or expired.

        Expired logins stay in the table (at most `max_logins`, pruned at the next login) so that
        `expired()` can tell the user why they must log in again.
        """
        if not token or len(token) > 128:
            return None
        with self._lock:
            login = self._logins.get(self._key(token))
        if login is None or self._clock() >= login.expires:
            return None
        return login

    def expired(self, token: str | None) -> bool:
        """True for a token that was a login here but has expired (for a clearer message than 'log in')."""
        if not token or len(token) > 128:
            return False
        with self._lock:
            login = self._logins.get(self._key(token))
        return login is not None and self._clock() >= login.expires

    def check_csrf(self, token: str, presented: str | None) -> bool:
        if not presented or len(presented) > 128:
            return False
        return hmac.compare_digest(self.csrf_for(token).encode(), presented.encode("utf-8", "surrogatepass"))

    def end(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._logins.pop(self._key(token), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._logins)

    def _prune(self, now: float) -> None:
        for key in [k for k, v in self._logins.items() if now >= v.expires]:
            del self._logins[key]


def client_key(address: str | None) -> str:
    """The rate-limiting key of a client address: the IPv4 address, or the /64 of an IPv6 address."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class LoginRateLimiter:
    """Failed logins in a sliding window: `per_client` per client key and `overall` from all clients."""

    def __init__(self, per_client: int = 5, overall: int = 60, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 4096) -> None:
        self.per_client = per_client
        self.overall = overall
        self.window_s = window_s
        self._clock = clock
        self._max_clients = max_clients
        self._lock = threading.RLock()
        self._clients: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()

    def _trim(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window_s:
            times.popleft()

    def retry_after(self, key: str) -> int | None:
        """Seconds until this client may try again, or None when it may try now."""
        now = self._clock()
        with self._lock:
            waits = []
            times = self._clients.get(key)
            if times is not None:
                self._trim(times, now)
                if not times:
                    del self._clients[key]
                elif len(times) >= self.per_client:
                    waits.append(times[-self.per_client] + self.window_s - now)
            self._trim(self._all, now)
            if len(self._all) >= self.overall:
                waits.append(self._all[-self.overall] + self.window_s - now)
        if not waits:
            return None
        return max(1, math.ceil(max(waits)))

    def reserve(self, key: str) -> int | None:
        """Check and count one attempt in one step (so that concurrent attempts cannot all pass the
        check before any is counted): None when it may go ahead (it counts as failed until
        `forgive`), else the seconds to wait."""
        with self._lock:  # re-entered below; RLock
            wait = self.retry_after(key)
            if wait is None:
                self.failed(key)
            return wait

    def forgive(self, key: str) -> None:
        """Take back the attempt `reserve` counted, for a login that succeeded."""
        with self._lock:
            times = self._clients.get(key)
            if times:
                stamp = times.pop()
                with contextlib.suppress(ValueError):
                    self._all.remove(stamp)
                if not times:
                    del self._clients[key]

    def failed(self, key: str) -> None:
        """Count one failed attempt of this client."""
        now = self._clock()
        with self._lock:
            times = self._clients.pop(key, None) or deque()
            times.append(now)
            while len(times) > self.per_client:
                times.popleft()
            self._clients[key] = times  # most recently active last
            while len(self._clients) > self._max_clients:
                self._clients.popitem(last=False)
            self._all.append(now)
            while len(self._all) > self.overall:
                self._all.popleft()


class VerifierBusy(Exception):
    """Too many password checks are waiting; the login is refused for now (503)."""


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 8 << 20


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):  # not glibc (musl, macOS): its allocator has no such knobs
        return None
    return libc


_LIBC = _glibc()
_threshold_pinned = False


def _pin_mmap_threshold() -> None:
    """Make allocations of 8 MiB and more (the scrypt buffer) always mmapped, so that freeing one
    returns it to the system. glibc's default raises the threshold after the first such free, so
    every later buffer lands in a malloc arena and stays resident."""
    global _threshold_pinned
    if _LIBC is not None and not _threshold_pinned:
        _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        _threshold_pinned = True


def _release_freed_memory() -> None:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class PasswordVerifier:
    """Password checks one at a time on one thread, with a bounded queue.

    An scrypt check allocates 16 MiB (n = 2**14, r = 8). Run on whichever server thread took the
    request, each of those threads' malloc arenas ends up holding such a buffer for good (8 failed
    logins took the daemon from 129 to 244 MB). One thread, one arena, trimmed after every check,
    keeps the memory bounded and returned; the queue bounds how many logins wait for their turn.
    """

    def __init__(self, max_waiting: int = 8) -> None:
        _pin_mmap_threshold()
        self._jobs: queue.Queue[tuple[str, str, queue.Queue[bool | BaseException]]] = queue.Queue(max_waiting)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def verify(self, password: str, stored: str, timeout_s: float = 30.0) -> bool:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="password-check", daemon=True)
                self._thread.start()
        answer: queue.Queue[bool | BaseException] = queue.Queue(1)
        try:
            self._jobs.put_nowait((password, stored, answer))
        except queue.Full:
            raise VerifierBusy("too many logins at once; try again in a few seconds") from None
        try:
            result = answer.get(timeout=timeout_s)
        except queue.Empty:
            raise VerifierBusy("the password check took too long; try again") from None
        if isinstance(result, BaseException):
            raise result
        return result

    def _run(self) -> None:
        while True:
            password, stored, answer = self._jobs.get()
            try:
                answer.put(verify_password(password, stored))
            except BaseException as exc:  # handed to the waiting request
                answer.put(exc)
            finally:
                del password
                _release_freed_memory()


def set_security_headers(headers: MutableMapping[str, str], *, static: bool) -> None:
    """The page's security headers (CSP, no framing or sniffing, no referrer) and its caching rule:
    static files revalidate, everything else carries patient data and is never stored."""
    headers["Content-Security-Policy"] = CSP
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if static:
        headers["Cache-Control"] = "no-cache"  # revalidate (ETag): no patient data, but fresh after an upgrade
    else:
        headers["Cache-Control"] = "no-store"  # pages and API carry patient data
        headers["Pragma"] = "no-cache"
