"""The local record (device/store.py): lifecycle, idempotence, crash recovery, retention, baseline, export."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.aggregate import Window, WindowAggregator, summarize
from device.config import AggregationConfig, Config, FusionConfig, StoreConfig, config_from_dict, load_config
from device.errors import AffectboxError, ConfigError
from device.labels import LABELS
from device.observation import Observation
from device.store import (
    EXPORT_COLUMNS,
    PATIENT_ID_PATTERN,
    RECOVERED_REASON,
    NotFoundError,
    PatientIdError,
    SessionStateError,
    StorageError,
    Store,
    StoreError,
    deviation,
)

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
CONFIG_SNAPSHOT = {"aggregation": {"window_seconds": 10.0, "min_face_share": 0.2}, "fusion": {"method": "linear"}}


def one_line(err: BaseException) -> str:
    message = str(err)
    assert message and len(message.splitlines()) == 1, message
    return message


def mixture(happy: float) -> np.ndarray:
    """happy with probability `happy`, neutral otherwise: valence 0.9 h, arousal 0.2 h (labels.py)."""
    p = np.zeros(len(LABELS))
    p[LABELS.index("happy")] = happy
    p[LABELS.index("neutral")] = 1.0 - happy
    return p


def speech_obs(start: float, end: float, probs: np.ndarray, f0: float) -> Observation:
    prosody = {"speech_start": start, "speech_end": end, "span_s": end - start, "phonation_s": end - start,
               "pause_s": 0.0, "pause_count": 0, "nuclei": int(4 * (end - start)), "voiced_s": end - start,
               "f0_mean_hz": f0, "f0_sd_hz": 10.0, "f0_mean_st": 3.2, "f0_sd_st": 1.0,
               "energy_mean_db": -30.0, "energy_sd_db": 4.0}
    features = {"start": start, "end": end, "duration": end - start, "prosody": prosody}
    return Observation((start + end) / 2, "speech", probs, 0.8, features)


def build_session(probs_for: Callable[[int], np.ndarray], n_windows: int, f0: float | None = None,
                  missing_face_every: int = 0) -> tuple[list[Window], dict[str, Any]]:
    """Windows and summary from the real aggregator: face at 2 fps, optionally one utterance per window.

    Linear fusion of identical face and speech distributions gives that distribution back, so the
    windows' valence and arousal stay hand-computable.
    """
    agg = WindowAggregator(AggregationConfig(window_seconds=10.0, min_face_share=0.2),
                           FusionConfig(method="linear"), lateness=9.0)
    counts: dict[str, dict[str, Any]] = {"face": {"items": 0, "present": 0}}
    if f0 is not None:
        counts["speech"] = {"items": 0, "present": 0, "seconds": 0.0}
    windows: list[Window] = []
    for i in range(n_windows):
        for k in range(20):
            present = not (missing_face_every and k % missing_face_every == 0)
            counts["face"]["items"] += 1
            counts["face"]["present"] += int(present)
            windows += agg.add(Observation(i * 10 + k * 0.5, "face", probs_for(i) if present else None,
                                           0.9 if present else 0.0))
        if f0 is not None:
            counts["speech"]["items"] += 1
            counts["speech"]["present"] += 1
            counts["speech"]["seconds"] += 3.0
            windows += agg.add(speech_obs(i * 10 + 2.0, i * 10 + 5.0, probs_for(i), f0))
    windows += agg.flush(n_windows * 10.0)
    return windows, summarize(windows, n_windows * 10.0, counts)


def varied(i: int) -> np.ndarray:
    return mixture([0.1, 0.5, 0.9, 0.3][i % 4])


def run_session(store: Store, patient: str, probs_for: Callable[[int], np.ndarray], n_windows: int = 3,
                f0: float | None = None, state: str = "ended") -> str:
    windows, summary = build_session(probs_for, n_windows, f0)
    sid = store.start_session(patient, "dev-1", True, CONFIG_SNAPSHOT)
    for w in windows:
        assert store.add_window(sid, w.to_json()) is True
    store.end_session(sid, state, "test", summary)
    return sid


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "state" / "affectbox.db") as s:
        yield s


# ---- lifecycle -------------------------------------------------------------------------------


def test_lifecycle_round_trip_and_file_setup(tmp_path: Path):
    path = tmp_path / "state" / "affectbox.db"
    windows, summary = build_session(varied, 4, f0=120.0, missing_face_every=5)
    with Store.open(path) as store:
        sid = store.start_session("P-0001", "dev-1", True, CONFIG_SNAPSHOT)
        running = store.running_session()
        assert running is not None and running.id == sid and running.state == "running"
        for w in windows:
            assert store.add_window(sid, w.to_json())
        assert store.summary(sid) is None
        stored = store.end_session(sid, "ended", "stopped from the CLI", summary)
        assert stored.summary == summary and stored.deviation is None
        assert store.running_session() is None
        # on disk: folder 0700, file and its WAL companions 0600 (patient data)
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for suffix in ("", "-wal", "-shm"):
            companion = Path(str(path) + suffix)
            if companion.exists():
                assert stat.S_IMODE(companion.stat().st_mode) == 0o600, suffix
        conn = store._conn  # the pragmas the module docstring promises
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
        assert [r[0] for r in conn.execute("SELECT version FROM schema_version")] == [1, 2]

    with Store.open(path, readonly=True) as reader:
        (record,) = reader.sessions()
        assert (record.id, record.patient_id, record.device_id, record.state) == (sid, "P-0001", "dev-1", "ended")
        assert record.consent is True and record.config == CONFIG_SNAPSHOT
        assert record.end_reason == "stopped from the CLI" and record.windows == 4
        assert record.duration_s == pytest.approx(40.0)  # from the caller's item time, not the wall clock
        started = datetime.fromisoformat(record.started_utc)
        ended = datetime.fromisoformat(record.ended_utc or "")
        assert started.utcoffset() == timedelta(0) and ended >= started
        assert reader.windows(sid) == [w.to_json() for w in windows]
        assert reader.summary(sid).summary == summary
        assert reader.integrity_check()
        with pytest.raises(StoreError, match="read-only"):
            reader.start_session("P-0002", "dev-1", True, {})
    with Store.open(path) as again:  # reopening migrates nothing and keeps everything
        assert again.windows(sid) == [w.to_json() for w in windows]


def test_unknown_session_and_bad_end_state(store: Store):
    for call in (lambda: store.windows("nope"), lambda: store.summary("nope"),
                 lambda: store.add_window("nope", {"index": 0, "start": 0.0, "end": 10.0}),
                 lambda: store.end_session("nope")):
        with pytest.raises(NotFoundError) as err:
            call()
        assert "nope" in one_line(err.value)
    sid = store.start_session("p1", "dev-1", False, Config())  # a config dataclass is snapshotted as JSON
    assert store.session(sid).config["store"]["retention_days"] == 365 and store.session(sid).consent is False
    with pytest.raises(StoreError, match="'ended' or 'interrupted'"):
        store.end_session(sid, "running")
    with pytest.raises(StoreError, match="finite number"):
        store.add_window(sid, {"index": 0, "start": 0.0, "end": 10.0, "valence": float("nan")})
    with pytest.raises(StoreError, match="end >= start"):
        store.add_window(sid, {"index": 0, "start": 5.0, "end": 1.0})
    assert store.windows(sid) == []
    store.end_session(sid, "interrupted", "SIGTERM")  # no summary given: computed from the (no) windows
    assert store.summary(sid).summary["windows"] == 0
    with pytest.raises(SessionStateError, match="already interrupted"):
        store.end_session(sid)


def test_add_window_is_idempotent(store: Store):
    windows, summary = build_session(varied, 3)
    sid = store.start_session("p1", "dev-1", True, CONFIG_SNAPSHOT)
    first = windows[0].to_json()
    assert store.add_window(sid, first) is True
    assert store.add_window(sid, first) is False  # a replay after a crash
    changed = dict(first, valence=0.99)
    assert store.add_window(sid, changed) is False  # the first stored version wins (it may be published)
    for w in windows:
        store.add_window(sid, w.to_json())
    assert [w["index"] for w in store.windows(sid)] == [0, 1, 2]
    assert store.windows(sid)[0] == first
    store.end_session(sid, "ended", None, summary)
    assert store.add_window(sid, first) is False  # still idempotent after the end
    with pytest.raises(SessionStateError) as err:
        store.add_window(sid, dict(first, index=7))
    assert "only be added to a running session" in one_line(err.value)
    assert store.sessions()[0].windows == 3


def test_second_running_session_is_refused(tmp_path: Path):
    path = tmp_path / "affectbox.db"
    with Store.open(path) as store, Store.open(path) as other_connection:
        first = store.start_session("p1", "dev-1", True, {})
        with pytest.raises(SessionStateError) as err:
            store.start_session("p2", "dev-1", True, {})
        assert first in one_line(err.value)
        with pytest.raises(SessionStateError):  # a second connection (another process) sees it too
            other_connection.start_session("p2", "dev-1", True, {})
        with pytest.raises(sqlite3.IntegrityError):  # and the database itself refuses a second one
            store._conn.execute("INSERT INTO sessions (id, patient_id, device_id, started_utc, state, config_json, "
                                "consent) VALUES ('x', 'p3', 'd', '2025-01-01', 'running', '{}', 1)")
        store.end_session(first)
        second = other_connection.start_session("p2", "dev-1", True, {})
        assert [s.id for s in store.sessions()] == [second, first]


# ---- patient ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "fragment"), [
    ("", "empty"), ("a" * 65, "longer than 64"), ("Jane Doe", "contains ' '"), ("jane@clinic.org", "contains '@'"),
    ("12/03/1960", "contains '/'"), ("p1\n", "contains '\\n'"), ("pé", "contains 'é'"), (42, "must be a string"),
])
def test_bad_patient_ids_are_rejected_in_one_line(store: Store, bad: Any, fragment: str):
    with pytest.raises(PatientIdError) as err:
        store.start_session(bad, "dev-1", True, {})
    assert fragment in one_line(err.value)
    assert isinstance(err.value, AffectboxError)
    assert store.sessions() == []


def test_patient_ids_round_trip_or_are_rejected_whole(tmp_path: Path):
    with Store.open(tmp_path / "affectbox.db") as store:

        @settings(max_examples=80, deadline=None, database=None)
        @given(st.one_of(st.text(max_size=80), st.from_regex(PATIENT_ID_PATTERN, fullmatch=True)))
        def check(patient_id: str) -> None:
            total = store._conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
            try:
                sid = store.start_session(patient_id, "dev-1", True, {})
            except PatientIdError as err:
                one_line(err)
                # nothing stored, not even half a row
                assert store._conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == total
                assert store.running_session() is None
                return
            store.end_session(sid)
            assert store.session(sid).patient_id == patient_id
            assert patient_id in [s.patient_id for s in store.sessions(patient_id=patient_id, limit=None)]

        check()
        assert store.integrity_check()


# ---- crash recovery ------------------------------------------------------------------------------

CHILD = r"""
import json, sys, time
from device.store import Store
path, windows_file = sys.argv[1], sys.argv[2]
with open(windows_file) as handle:
    windows = json.load(handle)
store = Store.open(path)
sid = store.start_session("patient-7", "dev-1", True, {"aggregation": {"window_seconds": 10.0}})
print("session", sid, flush=True)
for window in windows:
    store.add_window(sid, window)
    print("committed", window["index"], flush=True)
print("done", flush=True)
time.sleep(120)
"""


def test_sigkill_mid_session_recovers_every_committed_window(tmp_path: Path):
    windows, _ = build_session(varied, 30, f0=110.0)
    expected = [w.to_json() for w in windows]
    windows_file = tmp_path / "windows.json"
    windows_file.write_text(json.dumps(expected))
    rng = random.Random(4)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    results = []
    for run in range(20):
        path = tmp_path / f"run{run}" / "affectbox.db"
        # kill after reading k lines: 1 = right after the session started, 32 = after "done"
        kill_after = rng.randint(1, len(expected) + 2)
        with subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(windows_file)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
            try:
                lines = [child.stdout.readline() for _ in range(kill_after)]
                if rng.random() < 0.5:  # sometimes let it run on a little, to land inside a commit
                    threading.Event().wait(rng.uniform(0.0, 0.005))
            finally:
                child.send_signal(signal.SIGKILL)
            # read through the same buffered stream readline() used (communicate() would skip its buffer)
            rest, errors = child.stdout.read(), child.stderr.read()
            child.wait(timeout=20)
        assert child.returncode == -signal.SIGKILL, errors
        lines += rest.splitlines()
        sid = lines[0].split()[1]
        reported = [int(line.split()[1]) for line in lines if line.startswith("committed")]

        with Store.open(path) as store:
            assert store.recover_interrupted() == [sid]
            assert store.recover_interrupted() == []
            record = store.session(sid)
            stored = store.windows(sid)
            assert record.state == "interrupted" and record.end_reason == RECOVERED_REASON
            # every window the child saw committed is there, unchanged, and nothing half-written
            assert len(stored) >= len(reported)
            assert len(stored) <= len(reported) + 1  # at most the one in flight when killed
            assert stored == expected[: len(stored)]
            summary = store.summary(sid).summary
            assert summary["recovered"] is True and summary["windows"] == len(stored)
            if stored:
                assert summary["duration_s"] == pytest.approx(stored[-1]["end"])
                valences = [w["valence"] for w in stored if w["valence"] is not None]
                assert summary["valence"] == pytest.approx(np.mean(valences), abs=2e-4)
            assert store.integrity_check()
            store.end_session(store.start_session("patient-7", "dev-1", True, {}))  # usable again
        results.append((kill_after, len(reported), len(stored)))
    print("kill points (lines read, windows reported committed, windows stored):", results)
    assert any(stored < len(expected) for _, _, stored in results)  # some kills did land mid-session


# ---- retention -------------------------------------------------------------------------------------


def test_retention_deletes_old_ended_sessions_only(tmp_path: Path):
    clock = FakeClock(datetime(2024, 1, 1, 9, 0, tzinfo=UTC))
    with Store.open(tmp_path / "affectbox.db", clock=clock) as store:
        old = run_session(store, "p1", varied)
        clock.now += timedelta(days=1)
        old_interrupted = run_session(store, "p2", varied, state="interrupted")
        clock.now += timedelta(days=200)
        recent = run_session(store, "p1", varied)
        clock.now += timedelta(days=10)
        running = store.start_session("p3", "dev-1", True, {})
        store.add_window(running, build_session(varied, 1)[0][0].to_json())
        now = clock.now + timedelta(days=400)

        assert store.apply_retention(365, now - timedelta(days=300)) == []  # nothing old enough yet
        assert store.apply_retention(365, now - timedelta(days=180)) == [old, old_interrupted]
        assert {s.id for s in store.sessions()} == {recent, running}
        for table in ("windows", "summaries"):
            ids = {r[0] for r in store._conn.execute(f"SELECT session_id FROM {table}")}
            assert old not in ids and old_interrupted not in ids
        assert store.apply_retention(1, now) == [recent]  # the running session is never deleted
        assert [s.id for s in store.sessions()] == [running] and len(store.windows(running)) == 1
        assert store.integrity_check()
        with pytest.raises(StoreError, match="positive integer"):
            store.apply_retention(0, now)
        with pytest.raises(StoreError, match="time zone"):
            store.apply_retention(30, datetime(2025, 1, 1))  # a naive time is refused


# ---- baseline and deviation --------------------------------------------------------------------------


def test_baseline_after_three_sessions_and_hand_computed_deviation(store: Store):
    # three sessions, happy share 0.2 / 0.4 / 0.6 and pitch 100 / 110 / 120 Hz
    earlier = []
    for n, (happy, f0) in enumerate([(0.2, 100.0), (0.4, 110.0), (0.6, 120.0)]):
        assert store.baseline("p1") is None  # fewer than 3 earlier sessions: no baseline
        earlier.append(run_session(store, "p1", lambda _i, h=happy: mixture(h), f0=f0))
        assert len(store.sessions("p1")) == n + 1
        assert store.summary(earlier[-1]).deviation is None
    # neither another patient's nor an interrupted session counts
    run_session(store, "p2", lambda _i: mixture(1.0), f0=200.0)
    run_session(store, "p1", lambda _i: mixture(1.0), f0=300.0, state="interrupted")

    baseline = store.baseline("p1")
    assert baseline is not None and baseline["n"] == 3 and baseline["session_ids"] == earlier
    fields = baseline["fields"]
    # valence = 0.9 h: 0.18, 0.36, 0.54 -> mean 0.36, SD (n-1) 0.18
    assert fields["valence"] == {"mean": pytest.approx(0.36), "sd": pytest.approx(0.18), "n": 3}
    # arousal = 0.2 h: 0.04, 0.08, 0.12 -> mean 0.08, SD 0.04
    assert fields["arousal"]["mean"] == pytest.approx(0.08) and fields["arousal"]["sd"] == pytest.approx(0.04)
    assert fields["f0_mean_hz"]["mean"] == pytest.approx(110.0) and fields["f0_mean_hz"]["sd"] == pytest.approx(10.0)
    # dominant label per window: neutral, neutral, happy -> happy share 0, 0, 1
    assert fields["dominant_share.happy"]["mean"] == pytest.approx(1 / 3, abs=1e-4)
    assert fields["dominant_share.happy"]["sd"] == pytest.approx(np.sqrt(1 / 3), abs=1e-4)
    assert fields["face_share"] == {"mean": 1.0, "sd": 0.0, "n": 3}
    assert fields["speech_share"]["mean"] == pytest.approx(0.3)
    assert {"valence_sd", "f0_sd_st", "speaking_rate", "pause_ratio"} <= set(fields)
    assert "mean_pause_s" not in fields  # no pauses in these utterances: never measured

    # a fourth session, happy share 0.8 (valence 0.72, arousal 0.16) at 140 Hz
    fourth = run_session(store, "p1", lambda _i: mixture(0.8), f0=140.0)
    dev = store.summary(fourth).deviation
    assert dev is not None and dev["baseline_n"] == 3 and dev["baseline_sessions"] == earlier
    z = {name: entry["z"] for name, entry in dev["fields"].items()}
    assert z["valence"] == pytest.approx((0.72 - 0.36) / 0.18)  # 2.0
    assert z["arousal"] == pytest.approx((0.16 - 0.08) / 0.05)  # SD 0.04 floored to 0.05: 1.6
    assert dev["fields"]["arousal"]["sd_used"] == 0.05
    assert z["f0_mean_hz"] == pytest.approx(3.0)
    assert z["dominant_share.happy"] == pytest.approx((1 - 1 / 3) / np.sqrt(1 / 3), abs=1e-3)
    assert z["face_share"] == 0.0 and z["speech_share"] == pytest.approx(0.0)
    assert z["valence_sd"] == 0.0  # SD 0 floored: no blow-up
    assert all(entry["n"] == 3 for entry in dev["fields"].values())
    # the stored deviation is the module function's answer on the stored summary and the earlier baseline
    assert store.baseline("p1", exclude_session=fourth) == baseline
    assert deviation(store.summary(fourth).summary, baseline) == dev
    assert deviation({"valence": 0.5}, None) is None
    assert store.baseline("p1", min_sessions=5) is None
    assert store.baseline("p1")["n"] == 4


# ---- export ------------------------------------------------------------------------------------------


def test_export_csv_and_jsonl(store: Store):
    first = run_session(store, "p1", varied, n_windows=3, f0=115.0)
    second = run_session(store, "p1", lambda _i: mixture(0.7), n_windows=2)
    run_session(store, "p2", varied, n_windows=2)
    expected = [(first, w) for w in store.windows(first)] + [(second, w) for w in store.windows(second)]

    buffer = io.StringIO()
    assert store.export(patient_id="p1", fmt="csv", out=buffer) == 5
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert list(rows[0]) == list(EXPORT_COLUMNS) and len(rows) == 5
    for row, (sid, window) in zip(rows, expected, strict=True):
        assert row["session_id"] == sid and row["patient_id"] == "p1"
        assert int(row["window_index"]) == window["index"]
        assert float(row["start_s"]) == window["start"] and float(row["end_s"]) == window["end"]
        assert row["dominant"] == window["dominant"]
        assert float(row["valence"]) == window["valence"] and float(row["arousal"]) == window["arousal"]
        assert float(row["face_share"]) == window["modalities"]["face"]["share"]
        for label in LABELS:
            assert float(row[f"p_{label}"]) == window["probs"][label]
        if sid == first:
            assert float(row["speech_share"]) == window["modalities"]["speech"]["share"] == 0.3
            assert float(row["f0_mean_hz"]) == window["prosody"]["f0_mean_hz"] == 115.0
        else:
            assert row["speech_share"] == "" and row["f0_mean_hz"] == ""

    buffer = io.StringIO()
    assert store.export(session_id=first, fmt="jsonl", out=buffer) == 3
    records = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [r["window_index"] for r in records] == [0, 1, 2] and list(records[0]) == list(EXPORT_COLUMNS)
    for record, (_, window) in zip(records, expected[:3], strict=True):
        assert record["valence"] == window["valence"] and record["has_mood"] is True
        assert record["p_happy"] == window["probs"]["happy"]
        assert record["speaking_rate"] == window["prosody"]["speaking_rate"]
        assert record["face_share"] == window["modalities"]["face"]["share"]

    for kwargs, error, fragment in [
        ({"patient_id": "nobody"}, NotFoundError, "no sessions for patient 'nobody'"),
        ({"session_id": "0000"}, NotFoundError, "no session '0000'"),
        ({}, StoreError, "exactly one"),
        ({"patient_id": "p1", "session_id": first}, StoreError, "exactly one"),
        ({"patient_id": "p1", "fmt": "xlsx"}, StoreError, "csv, jsonl"),
        ({"patient_id": "bad id"}, PatientIdError, "contains ' '"),
    ]:
        with pytest.raises(error) as err:
            store.export(out=io.StringIO(), **kwargs)
        assert fragment in one_line(err.value)


# ---- robustness: read-only, full disk, threads, schema ----------------------------------------------------

RO_CHILD = r"""
import json, sys
from pathlib import Path
from device.store import Store, StoreError
base, session_id = Path(sys.argv[1]), sys.argv[2]
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = "ok"
    except StoreError as exc:
        results[name] = str(exc)
def read():
    with Store.open(base / "rofile" / "affectbox.db", readonly=True) as store:
        results["windows_read"] = len(store.windows(session_id))
attempt("existing_in_ro_folder", lambda: Store.open(base / "ro" / "affectbox.db").close())
attempt("new_in_ro_folder", lambda: Store.open(base / "ro" / "other.db").close())
attempt("new_folder_in_ro_folder", lambda: Store.open(base / "ro" / "sub" / "affectbox.db").close())
attempt("ro_file", lambda: Store.open(base / "rofile" / "affectbox.db").close())
attempt("reader_of_ro_file", read)
print(json.dumps(results))
"""


def test_read_only_folder_and_file_give_clear_errors_and_keep_data(tmp_path: Path):
    command = [sys.executable, "-c", RO_CHILD]
    if os.geteuid() == 0:
        # root ignores file modes; without CAP_DAC_OVERRIDE it is held to them like the service user
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a folder read-only for this process")
        command = [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--", *command]
    ids = {}
    for name in ("ro", "rofile"):
        with Store.open(tmp_path / name / "affectbox.db") as store:
            ids[name] = run_session(store, "p1", varied)
    (tmp_path / "ro").chmod(0o500)
    (tmp_path / "rofile" / "affectbox.db").chmod(0o400)
    try:
        done = subprocess.run([*command, str(tmp_path), ids["rofile"]], cwd=REPO, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=30)
    finally:
        (tmp_path / "ro").chmod(0o700)
        (tmp_path / "rofile" / "affectbox.db").chmod(0o600)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for key in ("existing_in_ro_folder", "new_in_ro_folder", "new_folder_in_ro_folder", "ro_file"):
        message = results[key]
        assert message != "ok" and len(message.splitlines()) == 1 and "Traceback" not in message, (key, message)
    assert "read-only" in results["existing_in_ro_folder"] or "not writable" in results["existing_in_ro_folder"]
    assert "Permission denied" in results["new_in_ro_folder"] and "folder writable" in results["new_in_ro_folder"]
    assert "cannot create the session store's folder" in results["new_folder_in_ro_folder"]
    assert "Permission denied" in results["ro_file"] and "read-only for this user" in results["ro_file"]
    assert results["reader_of_ro_file"] == "ok" and results["windows_read"] == 3  # readers still work
    for name in ("ro", "rofile"):
        with Store.open(tmp_path / name / "affectbox.db") as store:
            assert store.integrity_check() and len(store.windows(ids[name])) == 3
            assert store.summary(ids[name]) is not None
    assert not (tmp_path / "ro" / "other.db").exists()


def test_full_disk_is_a_clear_error_and_nothing_is_lost(store: Store):
    windows, _ = build_session(varied, 12)
    sid = store.start_session("p1", "dev-1", True, CONFIG_SNAPSHOT)
    for w in windows[:4]:
        store.add_window(sid, w.to_json())
    # a full SD card, simulated: SQLite may not grow the file beyond its current size
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StorageError) as err:
        for w in windows[4:]:
            store.add_window(sid, w.to_json())
    message = one_line(err.value)
    assert "disk is full" in message and str(store.path) in message
    stored = store.windows(sid)
    assert len(stored) >= 4 and stored == [w.to_json() for w in windows[: len(stored)]]
    assert store.integrity_check()
    store._conn.execute("PRAGMA max_page_count = 1073741823")  # space freed: the same calls succeed
    for w in windows:
        store.add_window(sid, w.to_json())
    assert len(store.windows(sid)) == 12
    store.end_session(sid)
    assert store.integrity_check()


def test_writer_thread_and_readers(tmp_path: Path):
    path = tmp_path / "affectbox.db"
    windows, _ = build_session(varied, 40)
    errors: list[BaseException] = []
    with Store.open(path) as store, Store.open(path, readonly=True) as reader:
        sid = store.start_session("p1", "dev-1", True, {})

        def write() -> None:
            try:
                for w in windows:
                    store.add_window(sid, w.to_json())
            except BaseException as exc:  # surfaced in the main thread
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        seen = 0
        while writer.is_alive() or seen < len(windows):
            now = len(reader.windows(sid))  # its own connection: reads while the writer commits
            assert now >= seen
            seen = now
            assert len(store.windows(sid)) >= seen  # the shared Store is safe across threads
            if not writer.is_alive() and seen < len(windows):
                break
        writer.join()
        assert not errors and len(reader.windows(sid)) == len(windows)


def test_newer_schema_and_damaged_file_are_refused(tmp_path: Path):
    path = tmp_path / "affectbox.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (99, '2030-01-01')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as err:
        Store.open(path)
    assert "schema version 99" in one_line(err.value)
    with pytest.raises(StorageError, match="schema version 99"):
        Store.open(path, readonly=True)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StorageError) as err:
        Store.open(junk)
    assert "not an affectbox session store" in one_line(err.value)
    with pytest.raises(StorageError, match="no session store there"):
        Store.open(tmp_path / "missing.db", readonly=True)


# ---- config -------------------------------------------------------------------------------------------


def test_store_config_section(tmp_path: Path):
    defaults = load_config(None).store
    assert defaults == StoreConfig()
    assert (defaults.path, defaults.retention_days, defaults.baseline_min_sessions) == (
        "/var/lib/affectbox/affectbox.db", 365, 3)
    toml = tmp_path / "c.toml"
    toml.write_text(f'[store]\npath = "{tmp_path / "db" / "a.db"}"\nretention_days = 30\nbaseline_min_sessions = 4\n')
    config = load_config(toml).store
    assert config.retention_days == 30 and config.baseline_min_sessions == 4
    with Store.from_config(config) as store:
        assert store.path == tmp_path / "db" / "a.db" and store.baseline_min_sessions == 4
    for document, fragment in [
        ({"store": {"retention_days": 0}}, "store.retention_days: must be between 1 and 3650"),
        ({"store": {"retention_days": 4000}}, "store.retention_days: must be between 1 and 3650"),
        ({"store": {"baseline_min_sessions": 1}}, "store.baseline_min_sessions: must be between"),
        ({"store": {"path": ""}}, "store.path: must not be empty"),
        ({"store": {"retention": 5}}, "store.retention: unknown key"),
    ]:
        with pytest.raises(ConfigError) as err:
            config_from_dict(document)
        assert fragment in one_line(err.value)
