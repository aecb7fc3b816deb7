"""`affectbox eval av DIR`: face, voice and fused mood on labelled audio-visual clips.

Clips are found anywhere under DIR and labelled by their names:
- RAVDESS `MM-VV-EE-II-SS-RR-AA`: MM 01 = audio-visual, 02 = video only, 03 = audio only. A 01
  clip is analysed with its own sound; a 02 clip with the 03 recording of the same take (same
  VV-EE-II-SS-RR-AA) when there is one, else as video alone. 03 files are only used as such a
  pair (`affectbox eval speech` measures them alone).
- CREMA-D `SSSS_SEN_EMO_LV` (`1001_DFA_ANG_XX.flv`): the video with its own sound, or with a
  .wav/.flac of the same name when the video has no audio track.
Emotion codes map to the label set as in `affectbox eval speech` (RAVDESS calm -> neutral).

Each clip goes through `analyze_media`, the code `affectbox analyze` runs (the same face and
speech pathways, windows and fusion), into a temporary folder. Per clip: face alone = the mean of
its windows' face distributions, voice alone = the same for speech, fused = the session summary's
dominant mood. A clip where a modality delivered nothing has no prediction for it: metrics are
computed over the clips with one, and `n_without` says how many had none.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.config import Config
from device.errors import AffectboxError, MediaError
from device.evaluate_speech import AUDIO_SUFFIXES, parse_speech_name
from device.labels import LABELS
from device.metrics import classification_report, format_report

VIDEO_SUFFIXES = {".mp4", ".flv", ".avi", ".mkv", ".mov", ".webm"}
MODES = ("face", "voice", "fused")


@dataclass(frozen=True)
class AvClip:
    video: Path
    audio: Path | None  # a separate recording of the same take, when paired
    corpus: str
    label: str


def _ravdess_take(stem: str) -> tuple[str, str] | None:
    """(modality MM, take key VV-EE-II-SS-RR-AA) of a RAVDESS name."""
    parts = stem.split("-")
    return (parts[0], "-".join(parts[1:])) if len(parts) == 7 else None


def find_av_clips(root: Path) -> tuple[list[AvClip], int]:
    """Labelled clips under root and the number of video files with names of no known corpus."""
    if not root.is_dir():
        raise MediaError(f"{root}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES | AUDIO_SUFFIXES)
    ravdess_audio: dict[str, Path] = {}
    side_audio: dict[str, Path] = {}
    for path in files:
        item = parse_speech_name(path.name)
        if item is None or item.label is None:
            continue
        take = _ravdess_take(path.stem) if item.corpus == "ravdess" else None
        if take is not None and take[0] == "03":
            ravdess_audio.setdefault(take[1], path)
        elif path.suffix.lower() in AUDIO_SUFFIXES:
            side_audio.setdefault(path.stem, path)
    clips, unknown = [], 0
    for path in files:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        item = parse_speech_name(path.name)
        if item is None or item.label is None or item.corpus not in ("ravdess", "crema-d"):
            unknown += 1
            continue
        if item.corpus == "ravdess":
            take = _ravdess_take(path.stem)
            if take is None or take[0] not in ("01", "02"):
                continue  # 03: audio only, used as a pair
            audio = ravdess_audio.get(take[1]) if take[0] == "02" else None
        else:
            audio = side_audio.get(path.stem)
        clips.append(AvClip(path, audio, item.corpus, item.label))
    return clips, unknown


def _argmax(probs: dict[str, float] | None) -> int | None:
    if not probs:
        return None
    return int(np.argmax([probs[label] for label in LABELS]))


def _report(truth: list[int], pred: list[int | None]) -> dict[str, Any]:
    pairs = [(t, p) for t, p in zip(truth, pred, strict=True) if p is not None]
    if not pairs:
        return {"n": 0, "n_without": len(truth)}
    t, p = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    report = classification_report(t, p)
    report.update({"n": len(pairs), "n_without": len(truth) - len(pairs)})
    return report


def evaluate_av(root: Path, config: Config, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Per-modality and fused classification reports on the labelled clips under root."""
    from device.analyze import analyze_media
    from device.inference.face import FaceAnalyzer
    from device.inference.speech import SpeechAnalyzer

    clips, unknown = find_av_clips(root)
    if not clips:
        raise MediaError(f"{root}: no labelled audio-visual clips found (videos named as in RAVDESS "
                         f"01-/02- or CREMA-D; {unknown} videos with other names)")
    face = FaceAnalyzer.from_config(config)
    speech = SpeechAnalyzer.from_config(config)
    truth: list[int] = []
    preds: dict[str, list[int | None]] = {m: [] for m in MODES}
    frames = frames_with_face = clips_with_speech = 0
    failed: list[str] = []
    start = time.process_time()
    for i, clip in enumerate(clips):
        with tempfile.TemporaryDirectory(prefix="affectbox-eval-av-") as tmp:
            try:
                result = analyze_media(clip.video, config, Path(tmp), audio=clip.audio, face_analyzer=face,
                                       speech_analyzer=speech)
            except AffectboxError as exc:
                failed.append(str(exc))
                continue
            finally:
                if progress is not None:
                    progress(i + 1, len(clips))
        summary = result.summary
        coverage = summary["coverage"]
        truth.append(LABELS.index(clip.label))
        preds["face"].append(_argmax(summary["modality_probs"].get("face")))
        preds["voice"].append(_argmax(summary["modality_probs"].get("speech")))
        preds["fused"].append(LABELS.index(summary["dominant"]) if summary["dominant"] else None)
        if "face" in coverage:
            frames += coverage["face"]["items"]
            frames_with_face += coverage["face"]["present"]
        clips_with_speech += bool(coverage.get("speech", {}).get("present"))
    if not truth:
        raise MediaError(f"{root}: none of the {len(clips)} clips could be analysed ({failed[0]})")
    corpora = sorted({c.corpus for c in clips})
    return {
        "folder": str(root),
        "n_clips": len(truth),
        "corpora": corpora,
        "n_paired_audio": sum(c.audio is not None for c in clips),
        "n_skipped_unknown": unknown,
        "n_failed": len(failed),
        "failed": failed[:20],
        "face_frame_share": round(frames_with_face / frames, 4) if frames else 0.0,
        "speech_clip_share": round(clips_with_speech / len(truth), 4),
        "modes": {m: _report(truth, preds[m]) for m in MODES},
        "labels": list(LABELS),
        "cpu_s": round(time.process_time() - start, 2),
        "note": "the same analysis as `affectbox analyze`; a clip without a face or speech has no prediction "
                "for that modality (n_without)",
    }


def format_av_report(report: dict[str, Any]) -> str:
    lines = [f"{report['folder']}: {report['n_clips']} clips ({', '.join(report['corpora'])}; "
             f"{report['n_paired_audio']} with a paired audio file), face in {report['face_frame_share']:.1%} of "
             f"frames, speech in {report['speech_clip_share']:.1%} of clips, {report['cpu_s']:.1f} CPU s"]
    for mode in MODES:
        figures = report["modes"][mode]
        if not figures["n"]:
            lines.append(f"\n{mode}: no prediction on any clip")
            continue
        lines += [f"\n{mode} (clips without a prediction: {figures['n_without']})", format_report(figures)]
    if report["n_failed"]:
        lines.append(f"  {report['n_failed']} clips could not be analysed, e.g. {report['failed'][0]}")
    return "\n".join(lines)
