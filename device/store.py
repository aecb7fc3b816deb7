"""The local record (issue 4): sessions, their windows and summaries, in one SQLite file.

What is stored
- `sessions`: one row per session: uuid, the patient's opaque id, device id, UTC start/end,
  state (`running` | `ended` | `interrupted`), why it ended, the config snapshot it ran with
  (JSON), the consent flag and its duration (item time from the caller, see below).
- `windows`: one row per aggregation window (`Window.to_json()` as JSON) plus copies of the
  fields clinicians query (dominant, valence, arousal, face and speech share); unique per
  (session, window index), so replaying a window after a crash or a retry never duplicates it.
- `summaries`: the session summary (`device.aggregate.summarize`) and its deviation from the
  patient's own baseline, once `baseline_min_sessions` earlier ended sessions exist.
- `schema_version`: one row per applied migration; `MIGRATIONS` holds forward steps only.

Durability on SD cards (why these pragmas)
- WAL journal: a writer never blocks the status page's or the export's readers, and a commit
  is one sequential append to the -wal file (kind to flash), checkpointed in the background.
- `synchronous=FULL`: in WAL mode NORMAL cannot corrupt the file either, but a power cut can
  roll back the last commits; FULL fsyncs the WAL at every commit, so "committed" means "survives
  power loss" (given a card that honours flushes; cheap cards that lie cannot be fixed here).
  The price is one fsync per commit, and the daemon commits about one window per 10 s, so it is
  negligible in time and wear, and it is what lets the daemon promise that every stored window
  survives a power cut (issue 4).
- `auto_vacuum=INCREMENTAL` + `secure_delete=ON`: retention really removes a patient's data
  (freed pages are zeroed, then returned to the file system) instead of leaving it in free pages.
- `foreign_keys=ON` so deleting a session deletes its windows and summary; `busy_timeout` so a
  reader's checkpoint or a second process waits briefly rather than failing at once.

Time
- Wall-clock times (`started_utc`, `ended_utc`) are UTC ISO-8601 strings, for people and for
  retention only. A Pi has no real-time clock, so the wall clock can jump at NTP sync: session
  order comes from an insertion sequence, never from these strings, and durations come from the
  caller's item time (monotonic since session start, `summary["duration_s"]`), never from
  differences of wall-clock times. After a crash the duration is the last stored window's end.

Threads and processes
- A `Store` is thread-safe: one connection guarded by a lock (so calls are serialised). The
  daemon's writer thread owns the read-write `Store`; readers that may be slow (the status page,
  `affectbox export` streaming to a file) should open their own `Store.open(path, readonly=True)`
  so that WAL lets them read while the writer commits.
- At most one session is `running` in the whole file (a partial unique index enforces it even
  against a second process). `recover_interrupted()` must only be called by the single daemon at
  start-up, before it starts sessions: it turns every `running` session into `interrupted`.

Errors
- Every refusal is a `StoreError` (an `AffectboxError`: one line, printed by the CLI as is).
  `StorageError` wraps SQLite and file-system failures (read-only folder or file, full disk, I/O
  error, a damaged file) with a message naming the file and the cause. A failed write rolls its
  transaction back, so stored data stay as they were.
- The store records data; it does not interpret them. Summaries carry the aggregate's notice
  that affectbox supports clinical judgment and does not diagnose.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import sqlite3
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from device.aggregate import Window, summarize
from device.contract.ids import OPAQUE_ID_PATTERN, patient_id_problem
from device.contract.timestamps import as_utc_timestamp
from device.errors import AffectboxError
from device.labels import LABELS
from device.sqlite_file import BUSY_TIMEOUT_MS, explain_error, open_durable, write_transaction
from device.sqlite_file import one_line as _one_line

if TYPE_CHECKING:
    from device.config import StoreConfig

SCHEMA_VERSION = 2
PATIENT_ID_PATTERN = OPAQUE_ID_PATTERN  # patients are opaque ids (device.contract.ids)
STATES = ("running", "ended", "interrupted")
END_STATES = ("ended", "interrupted")
KIND = "session store"
RECOVERED_REASON = "the device stopped unexpectedly (crash or power loss); recovered at the next start"

# Prosody measures kept in the baseline (from the summary's speech-time-weighted prosody): pitch
# level and pitch movement, tempo and pausing, the measures clinicians relate to low mood.
BASELINE_PROSODY_KEYS = ("f0_mean_hz", "f0_sd_st", "speaking_rate", "pause_ratio", "mean_pause_s")

# Smallest SD used for a z-score, per field. Three near-identical sessions give an SD close to 0,
# and then any ordinary change would read as a huge deviation. The floors are roughly the
# smallest difference that means something for each measure (valence and arousal are
# expectations over a coarse label table on [-1, 1]; shares are fractions; F0 in Hz; F0 spread
# in semitones; syllables per second; pause length in seconds).
SD_FLOORS: dict[str, float] = {
    "valence": 0.05, "arousal": 0.05, "valence_sd": 0.02, "face_share": 0.05, "speech_share": 0.05,
    "f0_mean_hz": 5.0, "f0_sd_st": 0.25, "speaking_rate": 0.2, "pause_ratio": 0.02, "mean_pause_s": 0.05,
}
DOMINANT_SD_FLOOR = 0.05  # for the "dominant_share.<label>" fields

# Export: one row per window; prosody columns are the window's own prosody measures.
EXPORT_PROSODY_KEYS = ("n_utterances", "speech_s", "f0_mean_hz", "f0_sd_hz", "f0_mean_st", "f0_sd_st",
                       "energy_sd_db", "speaking_rate", "articulation_rate", "pause_ratio", "pause_count",
                       "mean_pause_s")
EXPORT_COLUMNS: tuple[str, ...] = (
    "session_id", "patient_id", "session_started_utc", "window_index", "start_s", "end_s", "has_mood",
    "dominant", "valence", "arousal", "face_share", "speech_share",
    *(f"p_{label}" for label in LABELS), *EXPORT_PROSODY_KEYS,
)
EXPORT_FORMATS = ("csv", "jsonl")


class StoreError(AffectboxError):
    """The session store refused an operation; `str(err)` is one line."""


class PatientIdError(StoreError):
    """A patient id that is not an opaque id of 1-64 characters of [A-Za-z0-9._-]."""


class SessionStateError(StoreError):
    """The operation does not fit the session's state (another is running, this one has ended...)."""


class NotFoundError(StoreError):
    """No session with this id, or no sessions for this patient."""


class StorageError(StoreError):
    """The file system or SQLite failed: read-only, full, I/O error, locked, damaged."""


# Forward migrations: MIGRATIONS[v - 1] takes the schema from version v - 1 to v, in the same
# transaction as its `schema_version` row, so a crash mid-migration leaves the old version.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # seq orders sessions (the wall clock cannot); AUTOINCREMENT never reuses a deleted seq
        """CREATE TABLE sessions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            patient_id TEXT NOT NULL CHECK (length(patient_id) BETWEEN 1 AND 64
                                            AND patient_id NOT GLOB '*[^A-Za-z0-9._-]*'),
            device_id TEXT NOT NULL,
            started_utc TEXT NOT NULL,
            ended_utc TEXT,
            state TEXT NOT NULL CHECK (state IN ('running', 'ended', 'interrupted')),
            end_reason TEXT,
            config_json TEXT NOT NULL,
            consent INTEGER NOT NULL CHECK (consent IN (0, 1)),
            duration_s REAL,
            CHECK ((state = 'running') = (ended_utc IS NULL))
        )""",
        # the database itself refuses a second running session, whichever process tries
        "CREATE UNIQUE INDEX sessions_one_running ON sessions(state) WHERE state = 'running'",
        "CREATE INDEX sessions_by_patient ON sessions(patient_id, seq)",
        "CREATE INDEX sessions_by_end ON sessions(ended_utc)",
        """CREATE TABLE windows (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            window_index INTEGER NOT NULL CHECK (window_index >= 0),
            start_s REAL NOT NULL,
            end_s REAL NOT NULL,
            dominant TEXT,
            valence REAL,
            arousal REAL,
            face_share REAL,
            speech_share REAL,
            window_json TEXT NOT NULL,
            UNIQUE (session_id, window_index)
        )""",
        """CREATE TABLE summaries (
            session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
            summary_json TEXT NOT NULL,
            deviation_json TEXT,
            stored_utc TEXT NOT NULL
        )""",
    ),
    (
        # What has been handed to the hub's outbox: "started", "window:<index>", "ended" (the end
        # event and the summary). The store is the source of truth and the outbox the transport:
        # after a crash between storing and queueing, the daemon queues whatever is not marked
        # (event ids are derived from these keys, so a re-queue is deduplicated at the hub).
        """CREATE TABLE published (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            item TEXT NOT NULL,
            PRIMARY KEY (session_id, item)
        ) WITHOUT ROWID""",
        # sessions recorded before this version are not re-published after an upgrade
        "INSERT INTO published SELECT id, 'started' FROM sessions",
        "INSERT INTO published SELECT id, 'ended' FROM sessions WHERE state != 'running'",
        "INSERT INTO published SELECT session_id, 'window:' || window_index FROM windows",
    ),
)


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    """One row of `sessions`, with the number of stored windows."""

    id: str
    patient_id: str
    device_id: str
    started_utc: str
    ended_utc: str | None
    state: str
    end_reason: str | None
    consent: bool
    config: dict[str, Any]
    duration_s: float | None
    windows: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class StoredSummary:
    """A session's summary and its deviation from the patient's baseline (None without one)."""

    session_id: str
    summary: dict[str, Any]
    deviation: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)




def _shown(value: Any, limit: int = 40) -> str:
    """A value for an error message: repr escapes control characters, so the message stays one line."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


def validate_patient_id(patient_id: Any) -> str:
    """Return the id unchanged if it is an opaque id (1-64 of [A-Za-z0-9._-]); raise PatientIdError otherwise.

    The rule and its messages are `device.contract.ids.patient_id_problem`.
    """
    problem = patient_id_problem(patient_id)
    if problem is not None:
        raise PatientIdError(problem)
    return patient_id


def _utc_iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise StoreError(f"time {moment.isoformat()} has no time zone; give an aware UTC datetime")
    # one fixed format, so that stored times compare correctly as strings
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value: Any, what: str) -> str:
    try:
        # allow_nan=False: NaN and inf are not JSON, and other tools would fail reading them back
        return json.dumps(value, allow_nan=False, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} cannot be stored as JSON ({_one_line(str(exc))})") from None


def _plain(snapshot: Any) -> Any:
    if dataclasses.is_dataclass(snapshot) and not isinstance(snapshot, type):
        return dataclasses.asdict(snapshot)
    return snapshot


def _finite_or_none(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StoreError(f"{what} must be a finite number or null (got {_shown(value)})")
    return float(value)


def _window_columns(window: Any) -> tuple[int, float, float, str | None, float | None, float | None,
                                          float | None, float | None, str]:
    """Check a `Window.to_json()` dict and return its query columns and its JSON text."""
    if not isinstance(window, Mapping):
        raise StoreError(f"a window must be a JSON object (got {type(window).__name__})")
    index = window.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise StoreError(f"window index must be a non-negative integer (got {_shown(index)})")
    what = f"window {index}"
    start = _finite_or_none(window.get("start"), f"{what}: start")
    end = _finite_or_none(window.get("end"), f"{what}: end")
    if start is None or end is None or end < start:
        raise StoreError(f"{what}: needs start and end with end >= start (got {_shown(start)}, {_shown(end)})")
    dominant = window.get("dominant")
    if dominant is not None and dominant not in LABELS:
        raise StoreError(f"{what}: dominant must be one of {', '.join(LABELS)} or null (got {_shown(dominant)})")
    modalities = window.get("modalities") or {}
    if not isinstance(modalities, Mapping):
        raise StoreError(f"{what}: modalities must be an object")

    def share(modality: str) -> float | None:
        entry = modalities.get(modality)
        if not isinstance(entry, Mapping):
            return None
        return _finite_or_none(entry.get("share"), f"{what}: {modality} share")

    return (index, start, end, dominant, _finite_or_none(window.get("valence"), f"{what}: valence"),
            _finite_or_none(window.get("arousal"), f"{what}: arousal"), share("face"), share("speech"),
            _dumps(dict(window), what))


def window_from_json(row: Mapping[str, Any]) -> Window:
    """Rebuild a `Window` from its stored JSON, so that `summarize` can run on stored windows."""
    probs = row.get("probs")
    return Window(
        index=int(row["index"]), start=float(row["start"]), end=float(row["end"]),
        modalities=dict(row.get("modalities") or {}),
        probs=None if not probs else np.array([float(probs[label]) for label in LABELS], dtype=np.float64),
        weights=dict(row.get("fusion_weights") or {}),
        prosody=row.get("prosody"),
    )


def summary_from_windows(rows: list[Mapping[str, Any]], duration: float | None = None) -> dict[str, Any]:
    """A session summary from stored window JSON, by the same `summarize` the live pipeline uses.

    Modality counts are the sums of the windows' own counts (the aggregator skips windows in which
    nothing was observed, so nothing is lost). Without a duration from the caller, it is the last
    window's end in item time (seconds since session start): a lower bound after a crash.
    """
    windows = [window_from_json(r) for r in rows]
    counts: dict[str, dict[str, Any]] = {}
    for w in windows:
        for modality, stats in w.modalities.items():
            entry = counts.setdefault(modality, {"items": 0, "present": 0})
            entry["items"] += int(stats.get("items") or 0)
            entry["present"] += int(stats.get("present") or 0)
            if stats.get("seconds") is not None:
                entry["seconds"] = entry.get("seconds", 0.0) + float(stats["seconds"])
    if duration is None:
        duration = max((w.end for w in windows), default=0.0)
    return summarize(windows, duration, counts)


def summary_features(summary: Mapping[str, Any]) -> dict[str, float]:
    """The per-session measures a baseline is made of (absent or null ones left out)."""
    out: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)

    for key in ("valence", "arousal", "valence_sd"):
        put(key, summary.get(key))
    coverage = summary.get("coverage") or {}
    for modality in ("face", "speech"):
        put(f"{modality}_share", (coverage.get(modality) or {}).get("share"))
    with_mood = summary.get("windows_with_mood") or 0
    dominant = summary.get("dominant_windows") or {}
    if with_mood > 0:
        for label in LABELS:
            put(f"dominant_share.{label}", (dominant.get(label) or 0) / with_mood)
    prosody = summary.get("prosody") or {}
    for key in BASELINE_PROSODY_KEYS:
        put(key, prosody.get(key))
    return out


def sd_floor(field_name: str) -> float:
    if field_name.startswith("dominant_share."):
        return DOMINANT_SD_FLOOR
    return SD_FLOORS.get(field_name, 1e-6)


def deviation(summary: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """z-scores of a session's measures against the patient's baseline: (value - mean) / max(SD, floor).

    One entry per field present in both, with the value, the baseline's mean, SD and n, the SD
    actually used and z. None without a baseline. A z-score says how unusual the session is for
    this patient; it is not a clinical threshold.
    """
    if not baseline:
        return None
    values = summary_features(summary)
    fields: dict[str, dict[str, Any]] = {}
    for name, stats in baseline["fields"].items():
        if name not in values:
            continue
        used = max(float(stats["sd"]), sd_floor(name))
        fields[name] = {
            "value": round(values[name], 4), "mean": stats["mean"], "sd": stats["sd"], "sd_used": round(used, 4),
            "n": stats["n"], "z": round((values[name] - float(stats["mean"])) / used, 3),
        }
    return {"baseline_n": baseline["n"], "baseline_sessions": list(baseline["session_ids"]), "fields": fields}


def _storage_error(exc: BaseException, path: Path, action: str) -> StorageError:
    """One line naming the file, what was being done and why it failed."""
    return StorageError(explain_error(exc, path, action, KIND))


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Store:
    """The session store. Open with `Store.open(path)` (the daemon) or `Store.open(path, readonly=True)`."""

    def __init__(self, path: str | Path, readonly: bool = False, *, baseline_min_sessions: int = 3,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        if isinstance(baseline_min_sessions, bool) or not isinstance(baseline_min_sessions, int) \
                or baseline_min_sessions < 2:
            raise StoreError(f"baseline_min_sessions must be an integer >= 2 (got {_shown(baseline_min_sessions)})")
        self.path = Path(path)
        self.readonly = readonly
        self.baseline_min_sessions = baseline_min_sessions
        self._clock = clock
        self._lock = threading.RLock()
        self._conn = self._connect()
        try:
            if readonly:
                self._check_version()
            else:
                self._migrate()
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def open(cls, path: str | Path, readonly: bool = False, *, baseline_min_sessions: int = 3,
             clock: Callable[[], datetime] = _utcnow) -> Store:
        """Open (and for read-write, create or migrate) the store at `path`."""
        return cls(path, readonly, baseline_min_sessions=baseline_min_sessions, clock=clock)

    @classmethod
    def from_config(cls, config: StoreConfig, readonly: bool = False) -> Store:
        return cls(config.path, readonly, baseline_min_sessions=config.baseline_min_sessions)

    # ---- opening -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                if not self.path.is_file():
                    raise StorageError(f"{self.path}: no session store there")
                uri = "file:" + urllib.parse.quote(str(self.path.absolute())) + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                       timeout=BUSY_TIMEOUT_MS / 1000)
            else:
                conn = open_durable(self.path, KIND, StorageError, journal_size_limit=8 << 20)
        except sqlite3.Error as exc:
            raise _storage_error(exc, self.path, "open the session store") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            if self.readonly:
                conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            conn.close()
            raise _storage_error(exc, self.path, "open the session store") from exc
        return conn

    def _current_version(self, conn: sqlite3.Connection) -> int:
        table = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
        if not table:
            return 0
        return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._write("prepare the session store") as conn:
            current = self._current_version(conn)
            if current > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: the session store has schema version {current}, newer than this "
                                 f"affectbox understands ({SCHEMA_VERSION}); upgrade affectbox")
            if current == 0:
                conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_utc TEXT NOT NULL)")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, _utc_iso(self._clock())))
            # A read-only *file* lets BEGIN IMMEDIATE through; a write statement (here one that
            # changes nothing) does not, so a daemon that could not store windows fails at start.
            conn.execute("DELETE FROM schema_version WHERE 0")

    def _check_version(self) -> None:
        with self._read("read the session store") as conn:
            current = self._current_version(conn)
        if current != SCHEMA_VERSION:
            raise StorageError(f"{self.path}: session store schema version {current}, this affectbox reads "
                               f"{SCHEMA_VERSION} (open it read-write once, with the daemon, to migrate)")

    # ---- transactions --------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE takes the write lock up front (waiting up to
        busy_timeout), so a transaction never fails half-way on a lock; any error rolls it back."""
        with self._lock:
            if self.readonly:
                raise StoreError(f"{self.path}: opened read-only; cannot {action}")
            with write_transaction(self._conn, self.path, action, KIND, StorageError) as conn:
                yield conn

    @contextlib.contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several SELECTs (a deferred transaction takes no write lock)."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN")
            except sqlite3.Error as exc:
                raise _storage_error(exc, self.path, action) from exc
            try:
                yield conn
            except sqlite3.Error as exc:
                raise _storage_error(exc, self.path, action) from exc
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- helpers -------------------------------------------------------------------------

    _SESSION_COLUMNS = ("s.id, s.patient_id, s.device_id, s.started_utc, s.ended_utc, s.state, s.end_reason, "
                        "s.consent, s.config_json, s.duration_s, "
                        "(SELECT COUNT(*) FROM windows w WHERE w.session_id = s.id)")

    @staticmethod
    def _record(row: tuple[Any, ...]) -> SessionRecord:
        return SessionRecord(id=row[0], patient_id=row[1], device_id=row[2], started_utc=row[3], ended_utc=row[4],
                             state=row[5], end_reason=row[6], consent=bool(row[7]), config=json.loads(row[8]),
                             duration_s=row[9], windows=int(row[10]))

    def _session(self, conn: sqlite3.Connection, session_id: Any) -> SessionRecord:
        if not isinstance(session_id, str):
            raise NotFoundError(f"no session {_shown(session_id)} in {self.path}")
        row = conn.execute(f"SELECT {self._SESSION_COLUMNS} FROM sessions s WHERE s.id = ?", (session_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no session {_shown(session_id)} in {self.path}")
        return self._record(row)

    def _window_rows(self, conn: sqlite3.Connection, session_id: str) -> list[dict[str, Any]]:
        rows = conn.execute("SELECT window_json FROM windows WHERE session_id = ? ORDER BY window_index",
                            (session_id,))
        return [json.loads(r[0]) for r in rows]

    def _baseline(self, conn: sqlite3.Connection, patient_id: str, before_seq: int | None,
                  min_sessions: int) -> dict[str, Any] | None:
        rows = conn.execute(
            "SELECT s.id, m.summary_json FROM sessions s JOIN summaries m ON m.session_id = s.id "
            "WHERE s.patient_id = ? AND s.state = 'ended' AND (? IS NULL OR s.seq < ?) ORDER BY s.seq",
            (patient_id, before_seq, before_seq)).fetchall()
        if len(rows) < min_sessions:
            return None
        per_field: dict[str, list[float]] = {}
        for _, text in rows:
            for name, value in summary_features(json.loads(text)).items():
                per_field.setdefault(name, []).append(value)
        fields = {}
        for name, values in per_field.items():
            # a field needs as many sessions as the baseline itself (prosody only exists with speech)
            if len(values) >= min_sessions:
                arr = np.asarray(values, dtype=np.float64)
                fields[name] = {"mean": round(float(arr.mean()), 4), "sd": round(float(arr.std(ddof=1)), 4),
                                "n": len(values)}
        return {"patient_id": patient_id, "n": len(rows), "session_ids": [r[0] for r in rows], "fields": fields}

    def _seq(self, conn: sqlite3.Connection, session_id: str) -> int:
        return int(conn.execute("SELECT seq FROM sessions WHERE id = ?", (session_id,)).fetchone()[0])

    def _finish(self, conn: sqlite3.Connection, record: SessionRecord, state: str, reason: str | None,
                summary: dict[str, Any]) -> StoredSummary:
        baseline = self._baseline(conn, record.patient_id, self._seq(conn, record.id), self.baseline_min_sessions)
        dev = deviation(summary, baseline)
        duration = summary.get("duration_s")
        duration = float(duration) if isinstance(duration, int | float) and math.isfinite(duration) else None
        now = _utc_iso(self._clock())
        conn.execute("UPDATE sessions SET state = ?, ended_utc = ?, end_reason = ?, duration_s = ? WHERE id = ?",
                     (state, now, reason, duration, record.id))
        conn.execute("INSERT OR REPLACE INTO summaries VALUES (?, ?, ?, ?)",
                     (record.id, _dumps(summary, "summary"), None if dev is None else _dumps(dev, "deviation"), now))
        return StoredSummary(record.id, summary, dev)

    # ---- sessions ------------------------------------------------------------------------

    def start_session(self, patient_id: str, device_id: str, consent: bool, config_snapshot: Any) -> str:
        """Record a new running session and return its id; refused while another session is running."""
        validate_patient_id(patient_id)
        if not isinstance(device_id, str) or not device_id or len(device_id) > 128 or not device_id.isprintable():
            raise StoreError(f"device id must be 1-128 printable characters (got {_shown(device_id)})")
        if not isinstance(consent, bool):
            raise StoreError(f"consent must be true or false (got {_shown(consent)})")
        snapshot = _dumps(_plain(config_snapshot), "config snapshot")
        session_id = str(uuid.uuid4())
        with self._write("start a session") as conn:
            running = conn.execute("SELECT id FROM sessions WHERE state = 'running'").fetchone()
            if running:
                raise SessionStateError(f"session {running[0]} is still running; end it before starting another")
            try:
                conn.execute(
                    "INSERT INTO sessions (id, patient_id, device_id, started_utc, state, config_json, consent) "
                    "VALUES (?, ?, ?, ?, 'running', ?, ?)",
                    (session_id, patient_id, device_id, _utc_iso(self._clock()), snapshot, int(consent)))
            except sqlite3.IntegrityError:
                # only reachable if another process slipped in between (the partial unique index)
                raise SessionStateError("another session is already running; end it before starting another") from None
        return session_id

    def add_window(self, session_id: str, window_json: Mapping[str, Any]) -> bool:
        """Store one window (`Window.to_json()`); True if stored, False if this index was already stored.

        Idempotent per (session, index), whatever the session's state, so a replay after a crash
        or a retry after an error never duplicates a window; the first stored version is kept
        (it may already have been published).
        """
        columns = _window_columns(window_json)
        with self._write("store a window") as conn:
            record = self._session(conn, session_id)
            if conn.execute("SELECT 1 FROM windows WHERE session_id = ? AND window_index = ?",
                            (session_id, columns[0])).fetchone():
                return False
            if record.state != "running":
                raise SessionStateError(f"session {session_id} is {record.state}; "
                                        "windows can only be added to a running session")
            conn.execute("INSERT INTO windows (session_id, window_index, start_s, end_s, dominant, valence, arousal, "
                         "face_share, speech_share, window_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (session_id, *columns))
        return True

    def end_session(self, session_id: str, state: str = "ended", reason: str | None = None,
                    summary: Mapping[str, Any] | None = None) -> StoredSummary:
        """End a running session as `ended` or `interrupted` and store its summary.

        `summary` is the pipeline's `summarize(...)` (its `duration_s` from monotonic item time);
        None computes it from the stored windows. The deviation from the patient's baseline
        (earlier ended sessions only) is stored with it once a baseline exists.
        """
        if state not in END_STATES:
            raise StoreError(f"a session ends as 'ended' or 'interrupted' (got {_shown(state)})")
        if reason is not None and not isinstance(reason, str):
            raise StoreError(f"end reason must be text (got {type(reason).__name__})")
        reason = None if reason is None else _one_line(reason)[:500]
        if summary is not None and not isinstance(summary, Mapping):
            raise StoreError(f"a session summary must be a JSON object (got {type(summary).__name__})")
        with self._write("end the session") as conn:
            record = self._session(conn, session_id)
            if record.state != "running":
                raise SessionStateError(f"session {session_id} is already {record.state}")
            final = dict(summary) if summary is not None else summary_from_windows(self._window_rows(conn, session_id))
            return self._finish(conn, record, state, reason, final)

    def recover_interrupted(self) -> list[str]:
        """At start-up: mark sessions left running by a crash or power loss `interrupted`.

        Their windows are kept; a summary is computed from them (flagged `"recovered": true`).
        Returns the ids, oldest first. Only the single daemon may call this, before starting sessions.
        """
        with self._write("recover interrupted sessions") as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM sessions WHERE state = 'running' ORDER BY seq")]
            for session_id in ids:
                record = self._session(conn, session_id)
                summary = summary_from_windows(self._window_rows(conn, session_id))
                summary["recovered"] = True
                self._finish(conn, record, "interrupted", RECOVERED_REASON, summary)
        return ids

    # ---- queries -------------------------------------------------------------------------

    def session(self, session_id: str) -> SessionRecord:
        with self._read("read a session") as conn:
            return self._session(conn, session_id)

    def running_session(self) -> SessionRecord | None:
        with self._read("read the running session") as conn:
            row = conn.execute(f"SELECT {self._SESSION_COLUMNS} FROM sessions s WHERE s.state = 'running'").fetchone()
            return None if row is None else self._record(row)

    def sessions(self, patient_id: str | None = None, limit: int | None = 100,
                 since: datetime | None = None) -> list[SessionRecord]:
        """Sessions, most recent first; optionally one patient's, started at or after `since`."""
        if patient_id is not None:
            validate_patient_id(patient_id)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise StoreError(f"limit must be a positive integer or None (got {_shown(limit)})")
        since_text = None if since is None else _utc_iso(since)
        with self._read("list sessions") as conn:
            rows = conn.execute(
                f"SELECT {self._SESSION_COLUMNS} FROM sessions s WHERE (? IS NULL OR s.patient_id = ?) "
                "AND (? IS NULL OR s.started_utc >= ?) ORDER BY s.seq DESC LIMIT ?",
                (patient_id, patient_id, since_text, since_text, -1 if limit is None else limit)).fetchall()
        return [self._record(r) for r in rows]

    def windows(self, session_id: str) -> list[dict[str, Any]]:
        """The session's stored windows (`Window.to_json()` dicts) in index order."""
        with self._read("read windows") as conn:
            self._session(conn, session_id)
            return self._window_rows(conn, session_id)

    def summary(self, session_id: str) -> StoredSummary | None:
        """The stored summary and deviation; None while the session runs."""
        with self._read("read a summary") as conn:
            self._session(conn, session_id)
            row = conn.execute("SELECT summary_json, deviation_json FROM summaries WHERE session_id = ?",
                               (session_id,)).fetchone()
        if row is None:
            return None
        return StoredSummary(session_id, json.loads(row[0]), None if row[1] is None else json.loads(row[1]))

    def baseline(self, patient_id: str, exclude_session: str | None = None,
                 min_sessions: int | None = None) -> dict[str, Any] | None:
        """Mean, SD (n - 1) and n per measure over the patient's earlier ended sessions.

        "Earlier" means recorded before `exclude_session` when given (that session itself and
        later ones are left out), else all ended sessions. Interrupted sessions are left out: they
        are cut short and would bias the baseline. None until `min_sessions` (default: the store's
        `baseline_min_sessions`) such sessions exist; a measure is included when at least that
        many sessions have it. Fields: valence, arousal, valence_sd, face_share, speech_share,
        dominant_share.<label>, and the prosody measures in BASELINE_PROSODY_KEYS.
        """
        validate_patient_id(patient_id)
        minimum = self.baseline_min_sessions if min_sessions is None else min_sessions
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 2:
            raise StoreError(f"min_sessions must be an integer >= 2 (got {_shown(minimum)})")
        with self._read("compute a baseline") as conn:
            before = None
            if exclude_session is not None:
                self._session(conn, exclude_session)
                before = self._seq(conn, exclude_session)
            return self._baseline(conn, patient_id, before, minimum)

    deviation = staticmethod(deviation)

    # ---- retention and health --------------------------------------------------------------

    def apply_retention(self, days: int, now: datetime | None = None) -> list[str]:
        """Delete sessions that ended more than `days` ago, with their windows and summaries.

        A running session is never deleted, however old. Freed pages are zeroed (secure_delete)
        and handed back to the file system (incremental vacuum). Returns the deleted ids.
        """
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise StoreError(f"retention days must be a positive integer (got {_shown(days)})")
        cutoff = _utc_iso((now or self._clock()) - timedelta(days=days))
        with self._write("apply the retention policy") as conn:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM sessions WHERE state != 'running' AND ended_utc IS NOT NULL AND ended_utc < ? "
                "ORDER BY seq", (cutoff,))]
            conn.executemany("DELETE FROM sessions WHERE id = ?", [(i,) for i in ids])  # cascades
        if ids:
            with self._lock:
                try:
                    self._conn.execute("PRAGMA incremental_vacuum").fetchall()
                    # move the zeroed pages into the file now, so no deleted data lingers in the -wal
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                except sqlite3.Error as exc:
                    raise _storage_error(exc, self.path, "reclaim space after retention") from exc
        return ids

    # ---- what the hub has been given -------------------------------------------------------

    def mark_published(self, session_id: str, *items: str) -> None:
        """Record that these items ("started", "window:<i>", "ended") are in the hub's outbox."""
        with self._write("record published events") as conn:
            conn.executemany("INSERT OR IGNORE INTO published VALUES (?, ?)", [(session_id, i) for i in items])

    def unpublished(self, since: datetime | None = None) -> list[tuple[SessionRecord, list[str]]]:
        """Sessions (oldest first) with items not yet handed to the hub, and those items in order.

        `since` skips sessions started before it (events older than the outbox's age bound would
        be dropped at once anyway).
        """
        out: list[tuple[SessionRecord, list[str]]] = []
        with self._read("find unpublished events") as conn:
            where, params = "", ()
            if since is not None:
                where, params = "WHERE s.started_utc >= ?", (_utc_iso(since),)
            rows = conn.execute(f"SELECT {self._SESSION_COLUMNS} FROM sessions s {where} ORDER BY s.seq",
                                params).fetchall()
            for row in rows:
                record = self._record(row)
                done = {r[0] for r in conn.execute("SELECT item FROM published WHERE session_id = ?", (record.id,))}
                items = [] if "started" in done else ["started"]
                for (index,) in conn.execute("SELECT window_index FROM windows WHERE session_id = ? "
                                             "ORDER BY window_index", (record.id,)):
                    if f"window:{index}" not in done:
                        items.append(f"window:{index}")
                if record.state != "running" and "ended" not in done:
                    items.append("ended")
                if items:
                    out.append((record, items))
        return out

    def forget_published(self, session_id: str, items: list[str]) -> list[str] | None:
        """Mark these items ("started", "window:<i>", "ended") not handed over, so a backfill queues
        them again (the hub's resend); returns those the record holds, or None for an unknown session."""
        with self._write("forget published events") as conn:
            row = conn.execute("SELECT state FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                return None
            indexes = {r[0] for r in conn.execute("SELECT window_index FROM windows WHERE session_id = ?",
                                                  (session_id,))}
            held = [i for i in items if i == "started" or (i == "ended" and row[0] != "running")
                    or (i.startswith("window:") and int(i.split(":", 1)[1]) in indexes)]
            conn.executemany("DELETE FROM published WHERE session_id = ? AND item = ?", [(session_id, i) for i in held])
        return held

    def window(self, session_id: str, index: int) -> dict[str, Any] | None:
        """One stored window's JSON, or None."""
        with self._read("read a window") as conn:
            row = conn.execute("SELECT window_json FROM windows WHERE session_id = ? AND window_index = ?",
                               (session_id, index)).fetchone()
        return None if row is None else json.loads(row[0])

    def integrity_check(self) -> bool:
        """True when PRAGMA integrity_check and quick_check both say ok and no foreign key dangles."""
        with self._lock:
            try:
                integrity = [r[0] for r in self._conn.execute("PRAGMA integrity_check")]
                quick = [r[0] for r in self._conn.execute("PRAGMA quick_check")]
                dangling = self._conn.execute("PRAGMA foreign_key_check").fetchall()
            except sqlite3.DatabaseError as exc:
                name = getattr(exc, "sqlite_errorname", "") or ""
                if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
                    return False
                raise _storage_error(exc, self.path, "check the session store") from exc
        return integrity == ["ok"] and quick == ["ok"] and not dangling

    # ---- export --------------------------------------------------------------------------

    def export(self, patient_id: str | None = None, session_id: str | None = None, fmt: str = "csv",
               out: TextIO | None = None) -> int:
        """Write one row per window (EXPORT_COLUMNS) of one patient's sessions or of one session.

        Rows are in session order, then window order. Returns the number of rows. Exactly one of
        `patient_id` and `session_id`; an unknown id is a one-line NotFoundError. Streams from the
        database, so use a read-only Store for large exports (the lock is held while writing).
        """
        if (patient_id is None) == (session_id is None):
            raise StoreError("export needs exactly one of a patient id or a session id")
        if fmt not in EXPORT_FORMATS:
            raise StoreError(f"export format must be one of {', '.join(EXPORT_FORMATS)} (got {_shown(fmt)})")
        if out is None:
            raise StoreError("export needs an output stream")
        if patient_id is not None:
            validate_patient_id(patient_id)
        writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        count = 0
        with self._read("export") as conn:
            if session_id is not None:
                self._session(conn, session_id)
                where, key = "s.id = ?", session_id
            else:
                if not conn.execute("SELECT 1 FROM sessions WHERE patient_id = ?", (patient_id,)).fetchone():
                    raise NotFoundError(f"no sessions for patient {_shown(patient_id)} in {self.path}")
                where, key = "s.patient_id = ?", patient_id
            if writer is not None:  # only once the ids are known good: an error leaves no half output
                writer.writerow(EXPORT_COLUMNS)
            cursor = conn.execute(
                "SELECT s.id, s.patient_id, s.started_utc, w.window_json, w.face_share, w.speech_share "
                f"FROM windows w JOIN sessions s ON s.id = w.session_id WHERE {where} "
                "ORDER BY s.seq, w.window_index", (key,))
            for sid, pid, started, text, face_share, speech_share in cursor:
                row = _export_row(sid, pid, started, json.loads(text), face_share, speech_share)
                if writer is not None:
                    writer.writerow(["" if row[c] is None else row[c] for c in EXPORT_COLUMNS])
                else:
                    out.write(json.dumps(row, allow_nan=False) + "\n")
                count += 1
        return count


def _export_row(session_id: str, patient_id: str, started: str, window: Mapping[str, Any],
                face_share: float | None, speech_share: float | None) -> dict[str, Any]:
    probs = window.get("probs") or {}
    prosody = window.get("prosody") or {}
    row: dict[str, Any] = {
        "session_id": session_id, "patient_id": patient_id, "session_started_utc": as_utc_timestamp(started),
        "window_index": window.get("index"), "start_s": window.get("start"), "end_s": window.get("end"),
        "has_mood": bool(window.get("has_mood", window.get("probs") is not None)),
        "dominant": window.get("dominant"), "valence": window.get("valence"), "arousal": window.get("arousal"),
        "face_share": face_share, "speech_share": speech_share,
    }
    for label in LABELS:
        row[f"p_{label}"] = probs.get(label)
    for key in EXPORT_PROSODY_KEYS:
        row[key] = prosody.get(key)
    return row
