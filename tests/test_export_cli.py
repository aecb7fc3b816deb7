"""`affectbox export`: a clinician's copy of the stored windows, by patient or by session."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.aggregate import WindowAggregator
from device.config import AggregationConfig
from device.contract.timestamps import UTC_TIMESTAMP_RE, parse_utc_timestamp, utc_timestamp
from device.labels import LABELS
from device.observation import Observation
from device.store import Store

pytestmark = pytest.mark.timeout(120)


def windows(label: str, seconds: int = 30) -> list[dict]:
    probs = np.full(len(LABELS), 0.05)
    probs[LABELS.index(label)] = 0.7
    agg = WindowAggregator(AggregationConfig(window_seconds=10.0))
    out = []
    for i in range(seconds * 5):
        out += agg.add(Observation(i / 5, "face", probs / probs.sum(), 0.9))
    out += agg.flush(float(seconds))
    return [w.to_json() for w in out]


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "state" / "affectbox.db"
    ids = []
    with Store.open(path) as store:
        for label in ("happy", "sad"):
            sid = store.start_session("patient-7", "dev-1", True, {})
            for row in windows(label):
                store.add_window(sid, row)
            store.end_session(sid, "ended", "test")
            ids.append(sid)
    return path, ids


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", "export", *args], capture_output=True, text=True,
                          timeout=100, check=False)


def test_patient_csv_to_stdout(db):
    path, ids = db
    result = export("--patient", "patient-7", "--db", str(path))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 6 and {r["session_id"] for r in rows} == set(ids)
    assert all(UTC_TIMESTAMP_RE.fullmatch(r["session_started_utc"]) for r in rows), rows[0]
    assert "exported 6 windows" in result.stderr and "does not diagnose" in result.stderr


def test_session_jsonl_to_private_file(db, tmp_path):
    path, ids = db
    out = tmp_path / "export.jsonl"
    result = export("--session", ids[1], "--format", "jsonl", "--db", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["dominant"] == "sad" for r in rows)
    with Store.open(path, readonly=True) as store:  # the store keeps its `+00:00` form; the export writes the one
        started = parse_utc_timestamp(store.session(ids[1]).started_utc)
    assert {r["session_started_utc"] for r in rows} == {utc_timestamp(started)}
    assert out.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--patient", "nobody"], "no sessions for patient"),
        (["--session", "not-a-session"], "not-a-session"),
        (["--patient", "bad id!"], "patient id"),
    ],
)
def test_bad_ids_are_one_line_errors(db, args, fragment):
    path, _ = db
    result = export(*args, "--db", str(path))
    assert result.returncode == 2 and fragment in result.stderr
    assert result.stderr.strip().count("\n") == 0 and result.stdout == ""


def test_missing_database(tmp_path):
    result = export("--patient", "p1", "--db", str(tmp_path / "none.db"))
    assert result.returncode == 2 and "no session store there" in result.stderr


def test_needs_exactly_one_selector(db):
    path, _ = db
    assert export("--db", str(path)).returncode == 2
    assert export("--patient", "p", "--session", "s", "--db", str(path)).returncode == 2
