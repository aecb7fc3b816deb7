"""What the report's tables and definition lists hold: summary, prosody, recording, models, configuration, windows.

Plain text values (the template escapes them); the few cells with markup (a label's colour swatch)
come as Markup built with `device.report.text._esc`. templates/tables.html.j2 lays them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from device.report.data import (
    _argmax_label,
    _has_mood,
    _only,
    _window_face,
    _window_speech,
)
from device.report.text import (
    DASH,
    MODALITY_NAMES,
    _esc,
    _finite,
    _fmt,
    _human,
    _label_colour,
    _mapping,
    _pct,
    _plain,
    _swatch,
    clock,
)


def _dominant_html(label: Any, probs: Mapping[str, Any], missing: str = "no mood estimate") -> Markup:
    """A summary cell: the label with its colour swatch and mean probability, built and escaped here."""
    if label is None:
        return Markup(f'{DASH} <span class="muted">({_esc(missing)})</span>')
    html_text = _swatch(_label_colour(label)) + " " + _esc(label)
    p = _finite(probs.get(label))
    if p is not None:
        html_text += f' <span class="muted">(mean probability {p:.2f})</span>'
    return Markup(html_text)


Pair = tuple[str, str]  # (term, value) of a definition list
Row = tuple[str, str, str]  # (name, value, about) of a table of the summary; a Markup value is shown as built


@dataclass(frozen=True)
class WindowRow:
    nomood: bool
    cells: list[tuple[str, bool]]  # (text or Markup, numeric)


@dataclass(frozen=True)
class WindowTable:
    columns: list[tuple[str, bool]]  # (name, numeric)
    rows: list[WindowRow]


PROSODY_NOTE = ("Prosody differs a lot between people: it is most meaningful compared with the same patient's "
                "earlier sessions, recorded the same way. None of these measures is a diagnosis.")

ANALYSED = {
    "face": "face only (the recording has no audio: voice and prosody were not analysed)",
    "speech": "voice only (the recording has no video: facial expression was not analysed)",
}


def _summary_rows(summary: Mapping[str, Any], windows: Sequence[Mapping[str, Any]],
                  window_seconds: float | None, kinds: frozenset[str] = frozenset({"face"})) -> list[Row]:
    duration = _finite(summary.get("duration_s"))
    coverage = _mapping(summary.get("coverage"))
    both = len(kinds) > 1
    duration_text = f"{clock(duration)} ({_fmt(duration, '.1f')} s)" if duration is not None else DASH
    rows: list[Row] = [("Duration", duration_text, "length of the analysed recording (mm:ss)")]
    # only name the modalities when the summary says which ones were analysed
    if any(m in coverage for m in MODALITY_NAMES):
        rows.append(("Analysed", ANALYSED.get(_only(kinds) or "", "face and voice"),
                     "what the recording allowed: video for the face, audio for the voice"))
    if "face" in kinds:
        face = _mapping(coverage.get("face"))
        share, items, present = face.get("share"), face.get("items"), face.get("present")
        face_text = _pct(share)
        if _finite(items) is not None and _finite(present) is not None:
            face_text += f" ({present:g} of {items:g} analysed frames)"
        rows.append(("Share of time with a face", face_text, "analysed frames in which a face was found"))
    if "speech" in kinds:
        speech = _mapping(coverage.get("speech"))
        speech_text = _pct(speech.get("share"))
        seconds, n = _finite(speech.get("seconds")), _finite(speech.get("items"))
        details = []
        if seconds is not None:
            details.append(f"{seconds:.1f} s")
        if n is not None:
            details.append(f"{n:g} utterance" + ("" if n == 1 else "s"))
        if details:
            speech_text += f" ({' in '.join(details)})"
        speakers = _mapping(summary.get("speakers"))
        attributed = speakers.get("attributed") is True
        rows.append(("Share of time with speech", speech_text,
                     "time covered by the patient's utterances (enrolled voices left out)" if attributed else
                     "time covered by the utterances the voice-activity detector found (every voice in the "
                     "room counts: speakers are not told apart)"))
        if speakers:
            other_text = (f"{_fmt(speakers.get('other_s'), '.1f')} s ({_pct(speakers.get('other_share'))} of the "
                          "speech)" if attributed else "not told apart")
            rows.append(("Speech of other voices", other_text,
                         _plain(speakers.get("note")) or ("enrolled voices (clinicians): counted, never analysed"
                                                          if attributed else "no voices enrolled")))
    probs = _mapping(summary.get("probs"))
    dominant = summary.get("dominant")
    modality_probs = _mapping(summary.get("modality_probs"))
    if both:
        for m, about in (("face", "face alone: highest mean probability over windows in which a face was seen"),
                         ("speech", "voice alone: highest mean probability over windows with speech")):
            mp = _mapping(modality_probs.get(m))
            missing = "no face estimate" if m == "face" else "no voice estimate"
            rows.append((f"Dominant mood: {MODALITY_NAMES[m]}", _dominant_html(_argmax_label(mp), mp, missing),
                         about))
        rows.append(("Dominant mood: combined", _dominant_html(dominant, probs),
                     "face and voice fused per window, then the label with the highest mean probability over "
                     "windows with a mood"))
    else:
        name = "Dominant mood" + (f" ({MODALITY_NAMES[_only(kinds) or 'face']})"
                                  if any(m in coverage for m in MODALITY_NAMES) else "")
        rows.append((name, _dominant_html(dominant, probs),
                     "label with the highest mean probability over windows with a mood"))

    def va(key: str) -> str:
        mean, sd = _finite(summary.get(key)), _finite(summary.get(f"{key}_sd"))
        return DASH if mean is None else f"{mean:+.2f}" + ("" if sd is None else f" (SD {sd:.2f})")

    combined = " (combined)" if both else ""
    rows += [
        (f"Mean valence{combined}", va("valence"),
         "\u22121 unpleasant \u2026 +1 pleasant; SD across windows (emotional range)"),
        (f"Mean arousal{combined}", va("arousal"), "\u22121 calm \u2026 +1 activated; SD across windows"),
    ]
    if "face" in kinds:
        rows.append(("Facial expressivity", _fmt(summary.get("face_expressivity"), ".3f"),
                     "mean spread of the probabilities within windows; higher means more varied expressions"))
    n_windows = summary.get("windows", len(windows))
    window_text = f"{_plain(summary.get('windows_with_mood'))} of {_plain(n_windows)}"
    if window_seconds is not None:
        window_text += f" (windows of {window_seconds:g} s)"
    need = {"face": "enough frames with a face", "speech": "enough speech"}.get(
        _only(kinds) or "", "enough frames with a face or enough speech")
    rows.append(("Windows with a mood estimate", window_text, f"a window needs {need} to carry a mood"))
    return rows


def _prosody_rows(summary: Mapping[str, Any], min_pause_s: float) -> list[Row] | None:
    """The session's prosody with a plain-language reading of each measure (device/audio/prosody.py).

    None when there is no speech to measure.
    """
    prosody = _mapping(summary.get("prosody"))
    if not _finite(prosody.get("speech_s")):
        return None

    def value(key: str, spec: str, unit: str) -> str:
        x = _finite(prosody.get(key))
        return DASH if x is None else f"{format(x, spec)}{unit}"

    pitch_sd = value("f0_sd_st", ".1f", " semitones")
    if _finite(prosody.get("f0_sd_hz")) is not None:
        pitch_sd += f" (SD {value('f0_sd_hz', '.0f', ' Hz')})"
    rate = value("speaking_rate", ".1f", " syllables/s")
    if _finite(prosody.get("articulation_rate")) is not None:
        rate += f" (articulation rate {value('articulation_rate', '.1f', '')}, pauses excluded)"
    pause_ms = f"{1000 * min_pause_s:.0f} ms"
    return [
        ("Speech measured", value("speech_s", ".1f", " s"),
         "speaking time the measures below come from (pauses excluded); the more, the steadier they are"),
        ("Pitch (F0), mean", value("f0_mean_hz", ".0f", " Hz"),
         "average voice pitch; differs a lot between people (for example between men and women)"),
        ("Pitch variability", pitch_sd,
         "how much the voice moves; lower variability = more monotonous speech (semitones make men's and "
         "women's voices comparable)"),
        ("Speaking rate", rate,
         "syllables per second, pauses included; slower speech gives lower values (the count is approximate: "
         "the change across sessions is what matters)"),
        ("Pause ratio", _pct(prosody.get("pause_ratio")),
         f"share of the speaking time spent in silent gaps of at least {pause_ms}; more and longer pauses go "
         f"with slowed, effortful speech"),
        ("Mean pause length", value("mean_pause_s", ".2f", " s"),
         "average length of those pauses; longer pauses go with slowed, effortful speech"),
        ("Loudness variability", value("energy_sd_db", ".1f", " dB"),
         "SD of loudness while voicing; lower = flatter, more monotonous speech"),
    ]



ANALYSIS_NAMES = {
    "face_cpu_ms_per_frame": "Face CPU time per frame (ms)",
    "speech_real_time_factor": "Speech real-time factor (CPU s per audio s)",
}


def _source_pairs(summary: Mapping[str, Any],
                  kinds: frozenset[str] = frozenset({"face"})) -> tuple[list[Pair], list[Pair]]:
    """(term, value) pairs of the recording and of the software that analysed it."""
    source = dict(_mapping(summary.get("source")))
    pairs: list[tuple[str, str]] = []
    for key in ("file", "file_name", "name", "path"):
        if key in source:
            pairs.append(("File", _plain(source.pop(key))))
    if "audio_file" in source:
        audio_file = source.pop("audio_file")
        if audio_file is not None:
            pairs.append(("Audio file", _plain(audio_file)))
    for key in ("duration_s", "duration"):
        if key in source:
            d = source.pop(key)
            text = f"{clock(d)} ({_fmt(d, '.1f')} s)" if _finite(d) is not None else _plain(d)
            pairs.append(("Duration", text))
    if "audio_seconds" in source:
        a = source.pop("audio_seconds")
        if _finite(a):
            pairs.append(("Audio", f"{clock(a)} ({_fmt(a, '.1f')} s)"))
        elif "speech" not in kinds:
            pairs.append(("Audio", "none"))
    if "fps" in source:
        fps = source.pop("fps")
        if fps is not None:
            pairs.append(("Frame rate", f"{fps:g} fps" if _finite(fps) is not None else _plain(fps)))
    if "width" in source or "height" in source:
        w, h = source.pop("width", None), source.pop("height", None)
        if w is not None or h is not None:
            pairs.append(("Frame size", f"{_plain(w)} \u00d7 {_plain(h)} px"))
    if "face" not in kinds and not _finite(source.get("frames_read")):
        source.pop("frames_read", None)
    pairs += [(_human(k), _plain(v)) for k, v in source.items() if v is not None]
    software = [("Software", f"affectbox {_plain(summary.get('software_version'))}"),
                ("Report created (UTC)", _plain(summary.get("created_utc")))]
    analysis = _mapping(summary.get("analysis"))
    for k, v in analysis.items():
        other_modality = ("face" not in kinds and k in ("frames_analysed", "detector_runs")) or (
            "speech" not in kinds and k == "utterances")
        if v is None or (other_modality and not _finite(v)):
            continue
        software.append((ANALYSIS_NAMES.get(str(k), _human(k)), _plain(v)))
    return pairs, software



def _model_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[tuple[str, bool]]]] | None:
    """Column headers and rows of (text, monospaced) cells of the models used; None without any."""
    models = [m for m in summary.get("models") or [] if isinstance(m, Mapping)]
    if not models:
        return None
    keys = ["name", "version"]
    keys += [k for m in models for k in m if k not in keys and k != "sha256"]
    keys = [*dict.fromkeys(keys), "sha256"]
    head = ["SHA-256" if k == "sha256" else _human(k) for k in keys]
    return head, [[(_plain(m.get(k)), k == "sha256") for k in keys] for m in models]



def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append((prefix, value))


def _config_pairs(summary: Mapping[str, Any]) -> list[Pair]:
    """The configuration the session was analysed with, flattened to (dotted key, value) pairs."""
    config = summary.get("config")
    if not isinstance(config, Mapping) or not config:
        return []
    flat: list[tuple[str, Any]] = []
    _flatten("", config, flat)
    return [(k, _plain(v)) for k, v in flat]



def _window_table(windows: Sequence[Mapping[str, Any]], kinds: frozenset[str] = frozenset({"face"})) -> WindowTable:
    """Columns (name, numeric) and one row per window; the rows are empty without windows."""
    face, speech = "face" in kinds, "speech" in kinds
    both = face and speech
    columns = [("#", True), ("Start", False), ("End", False), ("Dominant (combined)" if both else "Dominant", False),
               ("Valence", True), ("Arousal", True)]
    if face:
        columns.append(("Face share", True))
    if speech:
        columns.append(("Speech share", True))
    if both:
        columns.append(("Weight face / voice", True))
    if speech:
        columns += [("Speaking rate (syll./s)", True), ("Pause ratio", True)]
    rows: list[WindowRow] = []
    for w in windows:
        mood = _has_mood(w)
        dominant = w.get("dominant") if mood else None
        dom = DASH + " no mood" if dominant is None else Markup(_swatch(_label_colour(dominant)) + " " + _esc(dominant))
        cells = [(_plain(w.get("index")), True), (clock(w.get("start")), False), (clock(w.get("end")), False),
                 (dom, False), (_fmt(w.get("valence"), "+.2f"), True), (_fmt(w.get("arousal"), "+.2f"), True)]
        if face:
            cells.append((_pct(_window_face(w).get("share")), True))
        if speech:
            cells.append((_pct(_window_speech(w).get("share") or 0.0), True))
        if both:
            weights = _mapping(w.get("fusion_weights"))
            wf, wv = _finite(weights.get("face")) or 0.0, _finite(weights.get("speech")) or 0.0
            text = f"{wf / (wf + wv):.0%} / {wv / (wf + wv):.0%}" if mood and wf + wv > 0 else DASH
            cells.append((text, True))
        if speech:
            prosody = _mapping(w.get("prosody"))
            cells += [(_fmt(prosody.get("speaking_rate"), ".1f"), True), (_pct(prosody.get("pause_ratio")), True)]
        rows.append(WindowRow(not mood, cells))
    return WindowTable(columns, rows)
