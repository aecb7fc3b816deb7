"""Store-and-forward outbox: QoS 1 events wait in SQLite until the broker acknowledges them.

paho keeps unacknowledged messages only in memory, so an event queued there is lost with the
process (a crash, a power cut, a restart by the watchdog). Every event therefore goes through
this outbox: `enqueue` commits it to the file before anything is sent, the client hands the
oldest rows to paho (`next_batch`, at most `max_inflight` at a time) and a row is deleted only
when the broker's PUBACK for it arrives (`ack`). After a reconnect or a restart the outbox drains
in insertion order; the hub deduplicates on `event_id` what was sent twice (sent, then the
connection or the process died before the PUBACK came back).

Message ids belong to one connection
- MQTT packet ids are only meaningful on the connection they were sent on (paho's, and most
  clients', restart or get reused after a reconnect). So the map `mid -> row` lives in memory,
  per connection: `begin_connection()` starts a new one and forgets the old map,
  `end_connection()` forgets it on disconnect, and `ack()` / `mark_inflight()` with a stale
  connection token do nothing. A row whose PUBACK never came is simply sent again on the next
  connection. The client also makes paho forget its own copies at each connect
  (`drop_out_messages`), so that only the outbox retransmits.

Bounds
- `max_bytes` bounds the sum of payload and topic bytes held (the SQLite file is larger by its
  page and index overhead, and the -wal file by up to `journal_size_limit`). Over the bound, rows
  are dropped by priority class, oldest first: mood windows (priority 0) before anything else,
  session events and summaries (priority 2) last. Rows in flight are never dropped: their PUBACK
  is due.
- `max_age_s` (optional) drops rows older than that, whatever their kind. Ages use the wall
  clock (the only clock that survives a restart); a Pi without a real-time clock can jump at NTP
  sync, so a row that seems to come from the future counts as new.
- Every drop is counted by kind in the file (`stats()["dropped"]`, also `rejected`); the
  daemon reports the counts in the retained `status`. The full record stays in the local
  session store. (`delivered` counts since the process started: persisting it would cost a
  page write per event.)

Durability is the session store's (device/store.py): WAL, `synchronous=FULL` (a committed event
survives a power cut), `secure_delete` (delivered rows holding patient ids are zeroed),
one-line `OutboxError`s naming the file. Acknowledgements are deleted in batches (one commit per
batch), so a fast drain does not cost one fsync per event.

Sequence numbers: `next_seq(stream)` hands out the per-stream `seq` of docs/MQTT.md from the
same file, so it keeps increasing across restarts; `enqueue_event` numbers, builds and queues an
event in one transaction, so `seq` order is queue order.

Threads: an `Outbox` is thread-safe (one connection behind a lock). One process at a time.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device.errors import HubError
from device.sqlite_file import explain_error, open_durable, write_transaction

if TYPE_CHECKING:
    from device.config import HubConfig

FILE_FORMAT = 1  # PRAGMA user_version of the outbox file
KIND = "hub outbox"
# Priority classes: lower is dropped first when the outbox is over its bound.
PRIORITY_MOOD = 0
PRIORITY_DEFAULT = 1
PRIORITY_LIFECYCLE = 2
KIND_PRIORITY = {"mood": PRIORITY_MOOD, "session": PRIORITY_LIFECYCLE, "summary": PRIORITY_LIFECYCLE}
_COUNTER_GROUPS = ("dropped", "rejected")  # kept in the file; "delivered" is counted since start only
AGE_CHECK_EVERY_S = 60.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL CHECK (qos IN (1, 2)),
        kind TEXT NOT NULL,
        priority INTEGER NOT NULL,
        size INTEGER NOT NULL,
        created REAL NOT NULL,
        event_id TEXT
    )""",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sequences (stream TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)


class OutboxError(HubError):
    """The outbox file cannot be opened, read or written; `str(err)` is one line naming the file."""


@dataclass(frozen=True)
class OutboxEntry:
    """One queued event."""

    id: int
    topic: str
    payload: bytes
    qos: int
    kind: str
    priority: int
    created: float
    event_id: str | None


def _error(exc: BaseException, path: Path, action: str) -> OutboxError:
    return OutboxError(explain_error(exc, path, action, KIND))


class Outbox:
    """The bounded, durable queue of events for the hub. See the module docstring."""

    def __init__(self, path: str | Path, *, max_bytes: int, max_age_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise OutboxError(f"outbox max_bytes must be a positive integer (got {max_bytes!r})")
        if max_age_s is not None and not max_age_s > 0:
            raise OutboxError(f"outbox max_age_s must be positive or None (got {max_age_s!r})")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.RLock()
        self._connection = 0  # token of the current connection; 0 = none
        self._tokens = 0
        self._inflight: dict[int, int] = {}  # mid -> row id, current connection only
        self._delivered: dict[str, int] = {}  # since this process opened the file
        self._next_age_check = 0.0
        self._conn = self._connect()

    @classmethod
    def from_config(cls, hub: HubConfig) -> Outbox:
        """The outbox at `hub.outbox_path` with the configured bounds."""
        age = hub.outbox_max_age_hours * 3600.0 if hub.outbox_max_age_hours > 0 else None
        return cls(hub.outbox_path, max_bytes=hub.outbox_max_bytes, max_age_s=age)

    # ---- file ------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = open_durable(self.path, KIND, OutboxError, journal_size_limit=4 << 20)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > FILE_FORMAT:
                raise OutboxError(f"{self.path}: outbox format {version} is newer than this affectbox "
                                  f"understands ({FILE_FORMAT}); upgrade affectbox")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {FILE_FORMAT}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            raise _error(exc, self.path, "open the hub outbox") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock, write_transaction(self._conn, self.path, action, KIND, OutboxError) as conn:
            yield conn

    def _query(self, action: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise _error(exc, self.path, action) from exc

    def close(self) -> None:
        """Close the file; rows not yet acknowledged stay for the next start."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- queueing --------------------------------------------------------------------------

    def enqueue(self, topic: str, payload: bytes, *, kind: str, qos: int = 1, priority: int | None = None,
                event_id: str | None = None) -> int:
        """Commit one event to the file and apply the bounds; returns its row id (it may itself be dropped)."""
        with self._write("queue an event in the hub outbox") as conn:
            return self._insert(conn, topic, payload, kind, qos, priority, event_id)

    def enqueue_event(self, topic: str, kind: str, stream: str | None,
                      build: Callable[[int], Mapping[str, Any]]) -> dict[str, Any]:
        """Number (next seq of `stream`), build and queue one JSON event in one transaction; returns it."""
        with self._write("queue an event in the hub outbox") as conn:
            seq = self._next_seq(conn, stream)
            payload = dict(build(seq))
            data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
            self._insert(conn, topic, data, kind, 1, None, payload.get("event_id"))
            return payload

    def next_seq(self, stream: str | None) -> int:
        """The next `seq` of a stream (a session id, or None for the device's own stream), from 0."""
        with self._write("number an event in the hub outbox") as conn:
            return self._next_seq(conn, stream)

    @staticmethod
    def _next_seq(conn: sqlite3.Connection, stream: str | None) -> int:
        key = stream or ""
        row = conn.execute("SELECT value FROM sequences WHERE stream = ?", (key,)).fetchone()
        seq = 0 if row is None else int(row[0]) + 1
        conn.execute("INSERT INTO sequences (stream, value) VALUES (?, ?) "
                     "ON CONFLICT (stream) DO UPDATE SET value = excluded.value", (key, seq))
        return seq

    def _insert(self, conn: sqlite3.Connection, topic: str, payload: bytes, kind: str, qos: int,
                priority: int | None, event_id: str | None) -> int:
        if qos not in (1, 2):
            raise ValueError(f"the outbox holds acknowledged events only: qos must be 1 or 2 (got {qos!r})")
        priority = KIND_PRIORITY.get(kind, PRIORITY_DEFAULT) if priority is None else int(priority)
        size = len(payload) + len(topic.encode("utf-8"))
        cursor = conn.execute(
            "INSERT INTO outbox (topic, payload, qos, kind, priority, size, created, event_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (topic, bytes(payload), qos, kind, priority, size, self._clock(), event_id))
        row_id = int(cursor.lastrowid or 0)
        self._enforce(conn)
        return row_id

    def _drop(self, conn: sqlite3.Connection, rows: list[tuple[int, str]]) -> None:
        """Delete rows (id, kind) and count them as dropped."""
        if not rows:
            return
        conn.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
        counts: dict[str, int] = {}
        for _, kind in rows:
            counts[kind] = counts.get(kind, 0) + 1
        self._count(conn, "dropped", counts)

    @staticmethod
    def _count(conn: sqlite3.Connection, group: str, counts: Mapping[str, int]) -> None:
        conn.executemany("INSERT INTO counters (name, value) VALUES (?, ?) "
                         "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                         [(f"{group}.{kind}", n) for kind, n in counts.items() if n])

    def _not_inflight(self) -> tuple[str, list[int]]:
        ids = sorted(self._inflight.values())
        return (f" AND id NOT IN ({','.join('?' * len(ids))})" if ids else ""), ids

    def _enforce(self, conn: sqlite3.Connection, force_age: bool = False) -> None:
        """Drop expired rows (checked at most once a minute), then the lowest-priority oldest rows
        while over the byte bound. No index serves these scans: an index would cost a page write
        per event (SD card wear) to speed up a query that reads a few thousand rows at most."""
        exclude, ids = self._not_inflight()
        now = self._clock()
        if self.max_age_s is not None and (force_age or now >= self._next_age_check):
            self._next_age_check = now + AGE_CHECK_EVERY_S
            cutoff = now - self.max_age_s
            expired = conn.execute(f"SELECT id, kind FROM outbox WHERE created < ?{exclude}", (cutoff, *ids)).fetchall()
            self._drop(conn, expired)
        total = int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0])
        while total > self.max_bytes:
            victims = conn.execute(f"SELECT id, kind, size FROM outbox WHERE 1{exclude} ORDER BY priority, id "
                                   "LIMIT 64", ids).fetchall()
            if not victims:
                return  # only rows in flight remain; their acknowledgements will free the space
            chosen = []
            for row_id, kind, size in victims:
                chosen.append((row_id, kind))
                total -= size
                if total <= self.max_bytes:
                    break
            self._drop(conn, chosen)

    def expire(self) -> None:
        """Apply the bounds now (the client calls this now and then, so old rows go even without new ones)."""
        with self._write("expire old events in the hub outbox") as conn:
            self._enforce(conn, force_age=True)

    # ---- sending ---------------------------------------------------------------------------

    def begin_connection(self) -> int:
        """A new connection: forget every mid of the previous one; returns its token."""
        with self._lock:
            self._tokens += 1
            self._connection = self._tokens
            self._inflight.clear()
            return self._connection

    def end_connection(self) -> None:
        """The connection is gone: its mids mean nothing any more; unacknowledged rows will be sent again."""
        with self._lock:
            self._connection = 0
            self._inflight.clear()

    @property
    def inflight(self) -> int:
        """Rows handed to the broker on the current connection and not yet acknowledged."""
        with self._lock:
            return len(self._inflight)

    def next_batch(self, limit: int) -> list[OutboxEntry]:
        """The oldest rows not in flight on the current connection, in insertion order."""
        if limit <= 0:
            return []
        with self._lock:
            exclude, ids = self._not_inflight()
            rows = self._query("read the hub outbox",
                               "SELECT id, topic, payload, qos, kind, priority, created, event_id FROM outbox "
                               f"WHERE 1{exclude} ORDER BY id LIMIT ?", (*ids, int(limit)))
        return [OutboxEntry(int(r[0]), r[1], bytes(r[2]), int(r[3]), r[4], int(r[5]), float(r[6]), r[7])
                for r in rows]

    def mark_inflight(self, connection: int, mid: int, entry_id: int) -> bool:
        """Remember that `entry_id` went out as `mid` on `connection`; False (and nothing kept) if stale."""
        with self._lock:
            if connection != self._connection or connection == 0:
                return False
            self._inflight[int(mid)] = int(entry_id)
            return True

    def ack(self, connection: int, acks: Iterable[tuple[int, bool]]) -> int:
        """PUBACKs `(mid, rejected)` of `connection`: delete their rows in one commit; returns how many.

        A rejected PUBACK (MQTT 5 reason code >= 0x80: the broker refused the message, e.g. not
        authorised) deletes the row too, since sending it again would be refused again and block
        the queue; it is counted under `rejected`. Unknown mids and stale connections are ignored.
        """
        with self._lock:
            if connection != self._connection or connection == 0:
                return 0
            done: list[tuple[int, bool]] = []
            for mid, rejected in acks:
                row_id = self._inflight.pop(int(mid), None)
                if row_id is not None:
                    done.append((row_id, rejected))
            if not done:
                return 0
            with self._write("remove acknowledged events from the hub outbox") as conn:
                marks = ",".join("?" * len(done))
                kinds = dict(conn.execute(f"SELECT id, kind FROM outbox WHERE id IN ({marks})",
                                          [d[0] for d in done]).fetchall())
                conn.execute(f"DELETE FROM outbox WHERE id IN ({marks})", [d[0] for d in done])
                rejected_counts: dict[str, int] = {}
                for row_id, rejected in done:
                    kind = kinds.get(row_id)
                    if kind is None:
                        continue  # dropped meanwhile
                    target = rejected_counts if rejected else self._delivered
                    target[kind] = target.get(kind, 0) + 1
                self._count(conn, "rejected", rejected_counts)
                empty = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM outbox)").fetchone()[0]
            if empty:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA incremental_vacuum")  # give the drained pages back
            return len(done)

    # ---- reporting -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Depth, bytes, age of the oldest row, depth by kind, dropped / rejected counters (kept in the
        file) and delivered (since this process opened it)."""
        with self._lock:
            depth, size, oldest = self._query(
                "read the hub outbox", "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(created) FROM outbox")[0]
            by_kind = dict(self._query("read the hub outbox", "SELECT kind, COUNT(*) FROM outbox GROUP BY kind"))
            counters = self._query("read the hub outbox", "SELECT name, value FROM counters")
            inflight = len(self._inflight)
        out: dict[str, Any] = {
            "depth": int(depth), "bytes": int(size), "inflight": inflight,
            "oldest_age_s": None if oldest is None else round(max(0.0, self._clock() - float(oldest)), 1),
            "by_kind": {k: int(v) for k, v in by_kind.items()},
        }
        for group in _COUNTER_GROUPS:
            out[group] = {}
        out["delivered"] = dict(self._delivered)
        for name, value in counters:
            group, _, kind = str(name).partition(".")
            if group in out:
                out[group][kind] = int(value)
        return out
