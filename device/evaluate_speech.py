"""`affectbox eval speech DIR`: accuracy of the on-device speech-emotion model on labelled corpora.

Labels come from the file names of four public corpora, found anywhere under DIR (recursively),
as .wav or .flac at any sample rate and channel count (downmixed and resampled to 16 kHz):

- RAVDESS `MM-VV-EE-II-SS-RR-AA` (e.g. `03-01-05-01-02-01-12.wav`): emotion EE 01 neutral,
  02 calm (-> neutral), 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised;
  speech (VV 01) and song (VV 02) files alike; speaker = actor AA.
- CREMA-D `SSSS_SEN_EMO_LV` (e.g. `1001_DFA_ANG_XX.wav`): ANG, DIS, FEA, HAP, NEU, SAD.
- EMO-DB `SSTTTEv` (e.g. `03a01Fa.wav`): 6th character W anger, E disgust (Ekel), A fear
  (Angst), F happiness, T sadness, N neutral; L boredom has no counterpart in the label set:
  such files are excluded, counted in `n_excluded` and named in the note.
- TESS `*_<emotion>` (e.g. `OAF_back_angry.wav`): angry, disgust, fear, happy, neutral, sad,
  pleasant_surprise / pleasant_surprised / ps (-> surprise).

Files with other names are skipped and counted (`n_skipped_unknown`); files that cannot be read
as audio are skipped, counted and named (`unreadable`): public copies of TESS hold corrupt
files, and one broken file should not hide the result of thousands. Each file is classified
exactly as on the device (SpeechEmotionClassifier: same features, windows and interpreter).
Runtime dependencies only.

The `calibration` block is cross-fitted by speaker (no speaker on both sides). The shipped model
was trained on all RAVDESS actors, so its figures on RAVDESS files are in-sample, not held out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.calibration import eval_calibration
from device.capture.audio_file import read_audio
from device.config import Config
from device.errors import MediaError
from device.labels import LABELS
from device.metrics import classification_report
from device.observation import SAMPLE_RATE

AUDIO_SUFFIXES = {".wav", ".flac"}

RAVDESS_EMOTIONS = {
    "01": "neutral", "02": "neutral", "03": "happy", "04": "sad",
    "05": "angry", "06": "fear", "07": "disgust", "08": "surprise",
}
CREMA_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
EMODB_EMOTIONS: dict[str, str | None] = {
    "W": "angry", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "neutral", "L": None,
}
TESS_EMOTIONS = {
    "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "neutral": "neutral",
    "sad": "sad", "ps": "surprise", "pleasant_surprise": "surprise", "pleasant_surprised": "surprise",
}

_RAVDESS = re.compile(r"^(\d\d)-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)$")
_CREMA = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_([A-Z]{1,2})$")
_EMODB = re.compile(r"^(\d\d)([a-b]\d\d)([WLEAFTN])([a-z])$")
_TESS = re.compile(r"^([A-Za-z]+)_(.+?)_(pleasant_surprised?|ps|angry|disgust|fear|happy|neutral|sad)$",
                   re.IGNORECASE)


@dataclass(frozen=True)
class SpeechItem:
    """What a file name says: corpus, label (None = excluded, e.g. EMO-DB boredom), speaker."""

    corpus: str
    label: str | None
    speaker: str
    excluded_reason: str | None = None

    @property
    def label_index(self) -> int:
        if self.label is None:
            raise ValueError(f"{self.corpus} item has no label ({self.excluded_reason})")
        return LABELS.index(self.label)


def parse_speech_name(filename: str) -> SpeechItem | None:
    """Corpus, label and speaker from a corpus file name (suffix ignored); None when unrecognised."""
    stem = Path(filename).stem
    m = _RAVDESS.match(stem)
    if m:
        return SpeechItem("ravdess", RAVDESS_EMOTIONS[m.group(3)], f"ravdess-{m.group(7)}")
    m = _CREMA.match(stem)
    if m:
        return SpeechItem("crema-d", CREMA_EMOTIONS[m.group(3)], f"crema-d-{m.group(1)}")
    m = _EMODB.match(stem)
    if m:
        label = EMODB_EMOTIONS[m.group(3)]
        reason = "EMO-DB boredom (L) has no counterpart in the label set" if label is None else None
        return SpeechItem("emo-db", label, f"emo-db-{m.group(1)}", reason)
    m = _TESS.match(stem)
    if m:
        return SpeechItem("tess", TESS_EMOTIONS[m.group(3).lower()], f"tess-{m.group(1).upper()}")
    return None


@dataclass
class Inventory:
    items: list[tuple[Path, SpeechItem]]
    excluded: dict[str, int]
    n_skipped_unknown: int


def find_speech_files(root: Path) -> Inventory:
    """Every recognised .wav/.flac under root, with the exclusions and unknown names counted."""
    if not root.is_dir():
        raise MediaError(f"{root}: not a folder")
    items: list[tuple[Path, SpeechItem]] = []
    excluded: dict[str, int] = {}
    unknown = 0
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        item = parse_speech_name(path.name)
        if item is None:
            unknown += 1
        elif item.label is None:
            reason = item.excluded_reason or "excluded"
            excluded[reason] = excluded.get(reason, 0) + 1
        else:
            items.append((path, item))
    return Inventory(items, excluded, unknown)


def evaluate_speech(
    root: Path, config: Config, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Classification report of the speech model on the labelled audio files under root."""
    from device.inference.runtime import resolve_models_dir
    from device.inference.speech_emotion import SpeechEmotionClassifier

    inventory = find_speech_files(root)
    if not inventory.items:
        raise MediaError(
            f"{root}: no labelled speech files found (.wav/.flac named as in RAVDESS, CREMA-D, EMO-DB or "
            f"TESS; {inventory.n_skipped_unknown} audio files with other names, "
            f"{sum(inventory.excluded.values())} excluded)"
        )
    classifier = SpeechEmotionClassifier.from_models_dir(
        resolve_models_dir(config.runtime.models_dir), config.runtime.num_threads
    )
    truth: list[int] = []
    logits_all: list[np.ndarray] = []
    corpora: list[str] = []
    speakers: list[str] = []
    unreadable: list[str] = []
    cpu = 0.0
    seconds = 0.0
    total = len(inventory.items)
    for i, (path, item) in enumerate(inventory.items):
        try:
            samples, _ = read_audio(path)
            pcm = samples.astype(np.float32) / 32768.0
        except MediaError as exc:
            unreadable.append(str(exc))
        else:
            start = time.process_time()
            logits = classifier.logits(pcm)
            cpu += time.process_time() - start
            seconds += len(pcm) / SAMPLE_RATE
            truth.append(item.label_index)
            logits_all.append(logits)
            corpora.append(item.corpus)
            speakers.append(item.speaker)
        if progress is not None:
            progress(i + 1, total)
    if not truth:
        raise MediaError(f"{root}: none of the {total} labelled files could be read as audio ({unreadable[0]})")
    t, c = np.array(truth), np.array(corpora)
    z = np.array(logits_all, dtype=np.float64)
    p = z.argmax(axis=1)
    report = classification_report(t, p)
    n_excluded = sum(inventory.excluded.values())
    notes = [f"{n} files excluded: {reason}" for reason, n in inventory.excluded.items()]
    if inventory.n_skipped_unknown:
        notes.append(f"{inventory.n_skipped_unknown} audio files skipped: names of no known corpus")
    if unreadable:
        notes.append(f"{len(unreadable)} files skipped: not readable as audio")
    report.update({
        "folder": str(root),
        "model": classifier.model.spec.name,
        "model_sha256": classifier.model.spec.sha256,
        "n_excluded": n_excluded,
        "excluded": dict(inventory.excluded),
        "n_skipped_unknown": inventory.n_skipped_unknown,
        "n_unreadable": len(unreadable),
        "unreadable": unreadable[:20],
        "note": "; ".join(notes) if notes else "all recognised files evaluated",
        "per_corpus": {
            name: {
                "n": int((c == name).sum()),
                "accuracy": float((p[c == name] == t[c == name]).mean()),
                "macro_recall": classification_report(t[c == name], p[c == name])["macro_recall"],
            }
            for name in sorted(set(corpora))
        },
        "audio_seconds": round(seconds, 2),
        "cpu_ms_per_audio_second": round(1000 * cpu / seconds, 4) if seconds else 0.0,
        "num_threads": config.runtime.num_threads,
        "calibration": eval_calibration(z, t, classifier.temperature, groups=speakers,
                                        note=calibration_note(set(corpora))),
    })
    # Corpora the shipped model was trained on: calibration (and accuracy) there is in-sample.
    report["calibration"]["in_sample_corpora"] = ["ravdess"] if "ravdess" in corpora else []
    return report


def calibration_note(corpora: set[str]) -> str:
    note = "cross-fitted by speaker: each half's temperature is fitted on the other half's speakers"
    if "ravdess" in corpora:
        note += ("; in-sample on RAVDESS: the shipped model was trained on all RAVDESS actors (and its "
                 "temperature fitted on their cross-validation logits), so figures on RAVDESS files are "
                 "not held out")
    return note
