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

import hashlib
import hmac
import ipaddress
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

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
        self._lock = threading.Lock()
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
