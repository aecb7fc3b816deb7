"""The enrolled voices of this device: one voiceprint (a 256-d speaker embedding) per file.

A voiceprint is biometric data (docs/PRIVACY.md): it lives only here, in a folder created 0700,
one file per voice created 0600 from the start, written atomically. Names are short opaque ids
(`[A-Za-z0-9_.-]`, at most 64), so a name can never be a path. Listing returns the name, when it
was enrolled and from how much speech, never the embedding; exports, logs and MQTT payloads only
ever see names and counts. A corrupt file is reported by name and skipped, never overwritten.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.contract.timestamps import as_utc_timestamp, utc_timestamp
from device.credentials import write_secret
from device.errors import AffectboxError
from device.inference.voice_encoder import EMBEDDING_SIZE

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SUFFIX = ".voiceprint.json"
FORMAT = 1
MAX_FILE_BYTES = 64 * 1024
MAX_VOICES = 64


class VoiceprintError(AffectboxError):
    """Enrollment, listing or deletion of a voiceprint failed; the message says why."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name.startswith("."):
        raise VoiceprintError(f"voice name {name!r} is not valid: use 1-64 letters, digits, '_', '-' or '.' "
                              "(not starting with '.')")
    return name


@dataclass(frozen=True)
class Voiceprint:
    name: str
    embedding: np.ndarray
    created_utc: str
    speech_s: float
    utterances: int

    def listing(self) -> dict[str, Any]:
        """What may be shown: everything but the embedding (`created_utc` in the one UTC format; empty if unknown)."""
        try:
            created = as_utc_timestamp(self.created_utc) or ""
        except ValueError:  # a file from before the field, or written by hand
            created = ""
        return {"name": self.name, "created_utc": created, "speech_s": round(self.speech_s, 1),
                "utterances": self.utterances}


def _parse(path: Path) -> Voiceprint:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise VoiceprintError(f"{path}: too large for a voiceprint")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        embedding = np.asarray(raw["embedding"], dtype=np.float32)
        if raw.get("format") != FORMAT or embedding.shape != (EMBEDDING_SIZE,) or not np.isfinite(embedding).all():
            raise ValueError("wrong format")
        norm = float(np.linalg.norm(embedding))
        if norm <= 0:
            raise ValueError("zero embedding")
        return Voiceprint(check_name(str(raw["name"])), embedding / norm, str(raw.get("created_utc", "")),
                          float(raw.get("speech_s", 0.0)), int(raw.get("utterances", 0)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VoiceprintError(f"{path}: not a readable voiceprint ({exc})") from None


class VoiceprintStore:
    """The folder of enrolled voices."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.problems: list[str] = []  # files skipped by the last load, one line each

    def _path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}{SUFFIX}"

    def load(self) -> list[Voiceprint]:
        """Every readable voiceprint, sorted by name (unreadable files are listed in `problems`)."""
        self.problems = []
        if not self.folder.is_dir():
            return []
        voices = []
        for path in sorted(self.folder.glob(f"*{SUFFIX}"))[:MAX_VOICES]:
            try:
                voices.append(_parse(path))
            except VoiceprintError as exc:
                self.problems.append(str(exc))
        return voices

    def names(self) -> list[str]:
        return [v.name for v in self.load()]

    def save(self, name: str, embedding: np.ndarray, speech_s: float, utterances: int,
             replace: bool = False) -> Voiceprint:
        path = self._path(name)
        if path.exists() and not replace:
            raise VoiceprintError(f"a voice named {name!r} is already enrolled (delete it first, or enroll "
                                  "with --replace)")
        if not path.exists() and len(list(self.folder.glob(f"*{SUFFIX}"))) >= MAX_VOICES:
            raise VoiceprintError(f"{MAX_VOICES} voices are enrolled already; delete one first")
        vector = np.asarray(embedding, dtype=np.float32)
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        created = utc_timestamp()
        record = {"format": FORMAT, "name": name, "created_utc": created, "speech_s": round(float(speech_s), 2),
                  "utterances": int(utterances), "embedding": [round(float(x), 6) for x in vector]}
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        write_secret(path, json.dumps(record))
        self._give_to_state_owner(path)
        return Voiceprint(name, vector, created, float(speech_s), int(utterances))

    def _give_to_state_owner(self, path: Path) -> None:
        """Run as root (`sudo affectbox voice enroll`), hand the folder and file to the owner of the
        state folder (the service user on a Pi), or the daemon could not read what was enrolled."""
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            return
        owner = self.folder.parent.stat()
        if owner.st_uid != 0:
            for target in (self.folder, path):
                os.chown(target, owner.st_uid, owner.st_gid)

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise VoiceprintError(f"no voice named {name!r} is enrolled") from None
        except OSError as exc:
            raise VoiceprintError(f"{path}: cannot delete: {exc.strerror or exc}") from None
