"""Research exports: one tidy table per level (window, session, patient-month) as CSV or Parquet, with a codebook.

Patients appear under their pseudonymous device-side id (what the appliance was given: an opaque
id, never a name); the clinic's reference is added only when an administrator asks for the
mapping (`with_mapping`), and that export is audited as such. One row per window, per session,
or per patient and calendar month (UTC). Parquet through pyarrow (no network needed).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import IO, Any

from sqlalchemy import Connection, select

from device.labels import LABELS
from device.notice import NOT_A_DIAGNOSIS
from hub import schema
from hub.dashboard import course, records

LEVELS = ("window", "session", "patient-month")
PROSODY = ("speech_s", "f0_mean_hz", "f0_sd_st", "speaking_rate", "articulation_rate", "pause_ratio", "mean_pause_s")

_COMMON = {
    "patient_id": ("string", "pseudonymous patient id as entered on the device (opaque)"),
    "clinic_ref": ("string", "the clinic's own patient reference (only in exports with the mapping)"),
    "device_id": ("string", "the appliance that recorded the session"),
    "session_id": ("string", "the device's session id"),
}
CODEBOOK: dict[str, dict[str, tuple[str, str]]] = {
    "window": {
        **_COMMON,
        "window_index": ("integer", "window number within the session, from 0"),
        "start_s": ("number", "window start, seconds since the session started"),
        "end_s": ("number", "window end, seconds since the session started"),
        "has_mood": ("boolean", "the window has a fused mood estimate"),
        "dominant": ("string", "most probable label of the window (one of the seven)"),
        "valence": ("number", "expected valence of the window, -1..1"),
        "arousal": ("number", "expected arousal of the window, -1..1"),
        **{f"p_{label}": ("number", f"fused probability of {label}, 0..1") for label in LABELS},
        "face_share": ("number", "share of the window's frames with a face, 0..1"),
        "speech_share": ("number", "share of the window with speech, 0..1"),
        **{f"prosody_{k}": ("number", f"window prosody: {k}") for k in ("speaking_rate", "pause_ratio", "f0_sd_st")},
    },
    "session": {
        **_COMMON,
        "started_utc": ("string", "session start, UTC ISO-8601 (device clock)"),
        "end_event": ("string", "ended | interrupted | empty while running"),
        "duration_s": ("number", "session length in seconds"),
        "windows": ("integer", "windows in the session"),
        "windows_with_mood": ("integer", "windows with a mood estimate"),
        "coverage_mood": ("number", "windows_with_mood / windows"),
        "coverage_face": ("number", "share of frames with a face"),
        "coverage_speech": ("number", "share of time with speech"),
        "dominant": ("string", "most frequent dominant label"),
        "valence": ("number", "mean valence, -1..1"),
        "arousal": ("number", "mean arousal, -1..1"),
        "valence_sd": ("number", "SD of window valence within the session"),
        "arousal_sd": ("number", "SD of window arousal within the session"),
        **{f"p_{label}": ("number", f"session probability of {label}") for label in LABELS},
        **{f"prosody_{k}": ("number", f"session prosody: {k}") for k in PROSODY},
        "software_version": ("string", "device software version at the session"),
        "models": ("string", "model names and versions at the session"),
    },
    "patient-month": {
        "patient_id": _COMMON["patient_id"],
        "clinic_ref": _COMMON["clinic_ref"],
        "month": ("string", "calendar month of the session starts, UTC, YYYY-MM"),
        "sessions": ("integer", "sessions in the month"),
        "sessions_with_mood": ("integer", "sessions with a mean valence"),
        "valence": ("number", "mean of session mean valence"),
        "valence_between_sd": ("number", "SD of session mean valence within the month"),
        "arousal": ("number", "mean of session mean arousal"),
        "within_sd": ("number", "mean within-session SD of valence"),
        "coverage_mood": ("number", "mean session mood coverage"),
        **{f"share_{label}": ("number", f"share of the month's windows whose dominant label is {label}")
           for label in LABELS},
    },
}


def codebook(level: str) -> dict[str, Any]:
    return {"level": level, "columns": [{"name": n, "type": t, "description": desc}
                                        for n, (t, desc) in CODEBOOK[level].items()],
            "notice": NOT_A_DIAGNOSIS}


def codebook_markdown() -> str:
    lines = ["# affectbox research export codebook", ""]
    for level in LEVELS:
        lines += [f"## {level}", "", "| column | type | meaning |", "|---|---|---|"]
        lines += [f"| {n} | {t} | {desc} |" for n, (t, desc) in CODEBOOK[level].items()]
        lines.append("")
    return "\n".join(lines)


def _patients(conn: Connection) -> list[str]:
    return [p["patient_id"] for p in records.patients(conn)]


def table(conn: Connection, level: str, *, with_mapping: bool = False) -> list[dict[str, Any]]:
    """The rows of one level, columns in codebook order."""
    refs = dict(conn.execute(select(schema.patient_refs.c.patient_id, schema.patient_refs.c.clinic_ref)).all()) \
        if with_mapping else {}
    rows: list[dict[str, Any]] = []
    for patient_id in _patients(conn):
        points = records.patient_sessions(conn, patient_id)
        base = {"patient_id": patient_id, "clinic_ref": refs.get(patient_id)}
        if level == "session":
            for p in points:
                rows.append({**base, "device_id": p.device_id, "session_id": p.session_id, "started_utc": p.at,
                             "end_event": p.end_event, "duration_s": p.duration_s, "windows": p.windows,
                             "windows_with_mood": p.windows_with_mood, "coverage_mood": p.coverage.get("mood"),
                             "coverage_face": p.coverage.get("face"), "coverage_speech": p.coverage.get("speech"),
                             "dominant": p.dominant, "valence": p.valence, "arousal": p.arousal,
                             "valence_sd": p.valence_sd, "arousal_sd": p.arousal_sd,
                             **{f"p_{label}": (p.probs or {}).get(label) for label in LABELS},
                             **{f"prosody_{k}": p.prosody.get(k) for k in PROSODY},
                             "software_version": p.software_version, "models": p.model_signature})
        elif level == "window":
            for p in points:
                for w in records.session_windows(conn, p.device_id, p.session_id):
                    prosody = w.get("prosody") or {}
                    rows.append({**base, "device_id": p.device_id, "session_id": p.session_id,
                                 "window_index": w["index"], "start_s": w["start_s"], "end_s": w["end_s"],
                                 "has_mood": w["has_mood"], "dominant": w["dominant"], "valence": w["valence"],
                                 "arousal": w["arousal"],
                                 **{f"p_{label}": (w["probs"] or {}).get(label) for label in LABELS},
                                 "face_share": w["face_share"], "speech_share": w["speech_share"],
                                 **{f"prosody_{k}": prosody.get(k) for k in ("speaking_rate", "pause_ratio",
                                                                             "f0_sd_st")}})
        else:
            for r in course.period_rows([p for p in points if p.summary_event_id], "month"):
                rows.append({**base, "month": r["period"], "sessions": r["sessions"],
                             "sessions_with_mood": r["sessions_with_mood"], "valence": r["valence"],
                             "valence_between_sd": r["valence_sd"], "arousal": r["arousal"],
                             "within_sd": r["within_sd"], "coverage_mood": r["coverage"],
                             **{f"share_{label}": r["mood_share"].get(label, 0.0) if r["mood_share"] else None
                                for label in LABELS}})
    columns = list(CODEBOOK[level])
    if not with_mapping:
        columns.remove("clinic_ref")
    return [{c: row.get(c) for c in columns} for row in rows]


def columns_of(level: str, with_mapping: bool) -> list[str]:
    return [c for c in CODEBOOK[level] if with_mapping or c != "clinic_ref"]


def write(rows: Sequence[Mapping[str, Any]], out: IO[bytes], fmt: str, level: str | None = None,
          with_mapping: bool = False) -> None:
    names = list(rows[0]) if rows else (columns_of(level, with_mapping) if level else [])
    if fmt == "csv":
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        out.write(text.getvalue().encode("utf-8"))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {"string": pa.string(), "number": pa.float64(), "integer": pa.int64(), "boolean": pa.bool_()}
        book = {k: v for level_book in CODEBOOK.values() for k, v in level_book.items()}
        schema_ = pa.schema([(n, types[book[n][0]]) for n in names])
        table_ = pa.Table.from_pylist(list(rows), schema=schema_)
        pq.write_table(table_, out, compression="zstd")
    elif fmt == "json":
        out.write(json.dumps(list(rows)).encode())
    else:
        raise ValueError(f"unknown format {fmt!r}")
