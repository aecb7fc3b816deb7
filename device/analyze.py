"""Offline analysis of a recording: the daemon's own pipeline objects, run as fast as the CPU allows.

Inputs: a video (its audio track, when it has one, is analysed too), a video plus a separate
audio file, or an audio file alone. Frames (`VideoFileSource`) and audio blocks
(`AudioFileSource`) are merged in media-time order and passed to the same `FaceAnalyzer`,
`SpeechAnalyzer` and `WindowAggregator` the live daemon uses. Into the output folder go:
- `timeline.jsonl`: one observation per analysed frame and per utterance (time, face box or
  utterance span, probabilities, quality, prosody);
- `windows.jsonl` and `windows.csv`: per-window aggregates with the fused mood;
- `summary.json`: the session summary with source, model and configuration metadata;
- `report.html`: a self-contained report that opens without network access.
Every file is written atomically; a failed run leaves earlier outputs untouched.

`other_voices` (`--other-voice FILE`, repeatable) enrolls those voices for this run only (nothing is
stored): utterances matching one are marked `"speaker": "other"` in the timeline, counted in the
windows and the summary (`speakers`), and kept out of emotion, prosody and fusion (device/voice).
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from device import __version__
from device.aggregate import Window, WindowAggregator, summarize
from device.atomic import atomic_writer, check_output_path, write_text_atomic
from device.capture.audio_file import AudioFileSource
from device.capture.probe import probe_media
from device.capture.video_file import VideoFileSource
from device.config import Config
from device.contract.timestamps import utc_timestamp
from device.errors import MediaError
from device.inference.face import FaceAnalyzer
from device.inference.runtime import model_metadata
from device.inference.speech import SpeechAnalyzer
from device.labels import LABELS
from device.observation import AudioBlock, Frame, Observation
from device.report import render_report
from device.voice.attribution import OTHER
from device.voice.loading import file_attributor
from device.voice.loading import model_metadata as voice_model_metadata

OUTPUT_FILES = ("timeline.jsonl", "windows.jsonl", "windows.csv", "summary.json", "report.html")
NO_FACE_WARNING = "no face was found in any analysed frame: the report holds no facial expression estimate"
NO_SPEECH_WARNING = "no speech was found in the audio: the report holds no voice estimate"


@dataclass
class AnalysisResult:
    out_dir: Path
    summary: dict[str, Any]
    windows: list[Window]
    frames: int
    utterances: int
    warnings: list[str] = field(default_factory=list)


def default_out_dir(media: Path) -> Path:
    return Path.cwd() / f"{media.stem}.affectbox"


def windows_csv(windows: list[Window]) -> str:
    """Windows as CSV for a spreadsheet: one row per window, one column per label probability."""
    prosody_keys = ("speech_share", "f0_mean_hz", "f0_sd_st", "energy_sd_db", "speaking_rate", "pause_ratio",
                    "mean_pause_s")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "start_s", "end_s", "has_mood", "dominant", "valence", "arousal",
                     "face_share", "speech_share", "face_weight", "speech_weight", "face_expressivity",
                     *[f"p_{lab}" for lab in LABELS], *[f"prosody_{k}" for k in prosody_keys[1:]],
                     "patient_speech_s", "other_speech_s"])

    def cell(value: Any) -> Any:
        return "" if value is None else value

    for window in windows:
        row = window.to_json()
        face = row["modalities"].get("face", {})
        speech = row["modalities"].get("speech", {})
        probs = row["probs"] or {}
        prosody = row["prosody"] or {}
        writer.writerow([
            row["index"], row["start"], row["end"], int(row["has_mood"]), cell(row["dominant"]),
            cell(row["valence"]), cell(row["arousal"]), cell(face.get("share")), cell(speech.get("share")),
            cell(row["fusion_weights"].get("face")), cell(row["fusion_weights"].get("speech")),
            cell(face.get("expressivity")), *[cell(probs.get(lab)) for lab in LABELS],
            *[cell(prosody.get(k)) for k in prosody_keys[1:]],
            row["speakers"]["patient_s"], row["speakers"]["other_s"],
        ])
    return buffer.getvalue()


def speakers_note(speakers: dict[str, Any], attributing: bool) -> str:
    """The report's one line on whose speech was analysed."""
    if not attributing:
        return ("no voices enrolled: speakers are not told apart, every voice heard is analysed as the "
                "patient's")
    share = speakers.get("other_share")
    return (f"speech of enrolled voices excluded from the analysis: {speakers['other_s']:.1f} s "
            f"({0.0 if share is None else 100 * share:.0f} % of the speech); the patient's: "
            f"{speakers['patient_s']:.1f} s")


def _timed(items: Iterator[Frame] | Iterator[AudioBlock], kind: int) -> Iterator[tuple[float, int, Any]]:
    for item in items:
        yield item.t, kind, item


def analyze_media(
    media: str | Path,
    config: Config,
    out_dir: str | Path | None = None,
    audio: str | Path | None = None,
    progress: Callable[[float, float], None] | None = None,
    face_analyzer: FaceAnalyzer | None = None,
    speech_analyzer: SpeechAnalyzer | None = None,
    overwrite: bool = True,
    other_voices: list[str | Path] | None = None,
) -> AnalysisResult:
    """Analyse one recording; `progress(media_seconds_done, media_seconds_total)` is called as it goes.

    The output files in `out_dir` must be absent or regular files; with `overwrite=False` (the CLI
    without --force) an earlier analysis there is refused before any work is done.
    """
    media = Path(media)
    info = probe_media(media)
    audio_info = probe_media(audio) if audio is not None else None
    if audio_info is not None and not audio_info.has_audio:
        raise MediaError(f"{audio_info.path}: has no audio track")
    if not info.has_video and not info.has_audio:
        raise MediaError(f"{media}: holds neither a video nor an audio stream")
    out = Path(out_dir) if out_dir is not None else default_out_dir(media)
    if out.exists() and not out.is_dir():
        raise MediaError(f"{out}: output path exists and is not a folder")
    for name in OUTPUT_FILES:
        check_output_path(out / name, overwrite=overwrite)

    video = VideoFileSource(media, config.face.analysis_fps) if info.has_video else None
    audio_path = audio_info.path if audio_info else (media if info.has_audio else None)
    sound = AudioFileSource(audio_path, config.speech.block_ms) if audio_path is not None else None
    if video is not None:
        face_analyzer = face_analyzer or FaceAnalyzer.from_config(config)
    if sound is not None:
        speech_analyzer = speech_analyzer or SpeechAnalyzer.from_config(config)
        if other_voices:
            speech_analyzer = SpeechAnalyzer(speech_analyzer.classifier, config.speech,
                                             file_attributor(config, other_voices))
    elif other_voices:
        raise MediaError(f"{media}: --other-voice needs audio, and the recording has none")
    aggregator = WindowAggregator(
        config.aggregation, config.fusion, lateness=speech_analyzer.lateness if sound is not None else 0.0,
        min_pause_s=config.speech.min_pause_ms / 1000,
    )
    counts: dict[str, dict[str, Any]] = {}
    if video is not None:
        counts["face"] = {"items": 0, "present": 0}
    if sound is not None:
        counts["speech"] = {"items": 0, "present": 0, "seconds": 0.0}
    total = max(info.duration, audio_info.duration if audio_info else 0.0)
    windows: list[Window] = []
    frames = 0
    last_t = 0.0
    cpu = {"face": 0.0, "speech": 0.0}
    out.mkdir(parents=True, exist_ok=True)

    def account(observations: list[Observation], timeline: io.TextIOBase) -> None:
        for observation in observations:
            if observation.features.get("speaker") == OTHER:  # counted in the windows' speakers only
                timeline.write(json.dumps(observation.to_json(), separators=(",", ":")) + "\n")
                windows.extend(aggregator.add(observation))
                continue
            entry = counts[observation.modality]
            entry["items"] += 1
            entry["present"] += int(observation.present)
            if "seconds" in entry:
                entry["seconds"] += observation.features.get("duration", 0.0)
            timeline.write(json.dumps(observation.to_json(), separators=(",", ":")) + "\n")
            windows.extend(aggregator.add(observation))

    streams = []
    if video is not None:
        streams.append(_timed(iter(video), 0))
    if sound is not None:
        streams.append(_timed(iter(sound), 1))
    with atomic_writer(out / "timeline.jsonl") as timeline:
        for t, kind, item in heapq.merge(*streams, key=lambda entry: (entry[0], entry[1])):
            start = time.process_time()
            if kind == 0:
                observations = [face_analyzer.process(item)]  # type: ignore[union-attr]
                frames += 1
                cpu["face"] += time.process_time() - start
            else:
                observations = speech_analyzer.process(item)  # type: ignore[union-attr]
                cpu["speech"] += time.process_time() - start
            last_t = max(last_t, t)
            account(observations, timeline)
            if progress is not None:
                progress(t, total)
        if speech_analyzer is not None and sound is not None:
            start = time.process_time()
            tail = speech_analyzer.flush()
            cpu["speech"] += time.process_time() - start
            account(tail, timeline)
    if video is not None and frames == 0:
        raise MediaError(f"{media}: the video holds no decodable frames")
    frame_step = 1.0 / ((video.fps if video else 0) or config.face.analysis_fps)
    audio_seconds = sound.duration if sound is not None else 0.0
    duration = max(video.duration if video else 0.0, last_t + (frame_step if video else 0.0), audio_seconds)
    windows.extend(aggregator.flush(end=duration))

    warnings = []
    if "face" in counts and not counts["face"]["present"]:
        warnings.append(NO_FACE_WARNING)
    if "speech" in counts and not counts["speech"]["present"]:
        warnings.append(NO_SPEECH_WARNING)
    if video is not None and video.decode_error:
        warnings.append(f"the video is damaged: {video.decode_error}; analysed what came before")
    if aggregator.late_dropped:
        warnings.append(f"{aggregator.late_dropped} observations arrived after their window had closed")

    models = []
    if face_analyzer is not None and video is not None:
        models += [face_analyzer.detector.model, face_analyzer.classifier.model]
    if speech_analyzer is not None and sound is not None:
        models.append(speech_analyzer.classifier.model)
    summary = summarize(windows, duration, counts)
    attributing = speech_analyzer is not None and sound is not None and speech_analyzer.attributing
    summary["speakers"].update({
        "attributed": attributing,
        "enrolled_voices": len(other_voices or []) if attributing else 0,
        "other_utterances": speech_analyzer.other_utterances if attributing else 0,  # type: ignore[union-attr]
        "note": speakers_note(summary["speakers"], attributing),
    })
    summary.update({
        "software_version": __version__,
        "created_utc": utc_timestamp(),
        "source": {
            "file": media.name,
            "audio_file": audio_info.path.name if audio_info else None,
            "duration_s": round(duration, 3),
            "fps": round(video.fps, 3) if video else None,
            "width": video.width if video else None,
            "height": video.height if video else None,
            "frames_read": video.frames_read if video else 0,
            "audio_seconds": round(audio_seconds, 3),
        },
        "analysis": {
            "frames_analysed": frames,
            "detector_runs": face_analyzer.detector_runs if face_analyzer is not None and video else 0,
            "utterances": counts.get("speech", {}).get("items", 0),
            "face_cpu_ms_per_frame": round(1000 * cpu["face"] / frames, 3) if frames else None,
            "speech_real_time_factor": round(cpu["speech"] / audio_seconds, 5) if audio_seconds else None,
        },
        "models": model_metadata(models) + ([voice_model_metadata(config)] if attributing else []),
        "config": {"face": asdict(config.face), "speech": asdict(config.speech),
                   "aggregation": asdict(config.aggregation), "fusion": asdict(config.fusion)},
        "warnings": warnings,
    })
    window_rows = [w.to_json() for w in windows]
    with atomic_writer(out / "windows.jsonl") as handle:
        for row in window_rows:
            handle.write(json.dumps(row, separators=(",", ":")) + "\n")
    write_text_atomic(out / "windows.csv", windows_csv(windows))
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    with (out / "timeline.jsonl").open(encoding="utf-8") as handle:
        timeline_rows = [json.loads(line) for line in handle]
    write_text_atomic(out / "report.html", render_report(summary, window_rows, timeline_rows,
                                                         title=f"affectbox report: {media.name}"))
    return AnalysisResult(out, summary, windows, frames, counts.get("speech", {}).get("items", 0), warnings)
