"""The report's tables and definition lists: summary, prosody, recording, models, configuration, windows.

Built as HTML fragments; every value goes through `device.report.text._esc`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from device.report.data import (
    _argmax_label,
    _has_mood,
    _no_windows_message,
    _only,
    _window_face,
    _window_speech,
)
from device.report.text import (
    DASH,
    MODALITY_NAMES,
    NUM,
    _empty,
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


def _dominant_html(label: Any, probs: Mapping[str, Any], missing: str = "no mood estimate") -> str:
    if label is None:
        return f'{DASH} <span class="muted">({_esc(missing)})</span>'
    html_text = _swatch(_label_colour(label)) + " " + _esc(label)
    p = _finite(probs.get(label))
    if p is not None:
        html_text += f' <span class="muted">(mean probability {p:.2f})</span>'
    return html_text


def _rows_html(rows: Iterable[tuple[str, str, str]], cls: str = "summary") -> str:
    """Table of (name, already-escaped value, about) rows."""
    body = "".join(f'<tr><th scope="row">{_esc(name)}</th><td>{value}</td>'
                   f'<td class="about">{_esc(about)}</td></tr>' for name, value, about in rows)
    return f'<table class="{_esc(cls)}"><tbody>{body}</tbody></table>'


ANALYSED = {
    "face": "face only (the recording has no audio: voice and prosody were not analysed)",
    "speech": "voice only (the recording has no video: facial expression was not analysed)",
}


def _summary_table(summary: Mapping[str, Any], windows: Sequence[Mapping[str, Any]],
                   window_seconds: float | None, kinds: frozenset[str] = frozenset({"face"})) -> str:
    duration = _finite(summary.get("duration_s"))
    coverage = _mapping(summary.get("coverage"))
    both = len(kinds) > 1
    rows = [("Duration", _esc(f"{clock(duration)} ({_fmt(duration, '.1f')} s)" if duration is not None else DASH),
             "length of the analysed recording (mm:ss)")]
    # only name the modalities when the summary says which ones were analysed
    if any(m in coverage for m in MODALITY_NAMES):
        rows.append(("Analysed", _esc(ANALYSED.get(_only(kinds) or "", "face and voice")),
                     "what the recording allowed: video for the face, audio for the voice"))
    if "face" in kinds:
        face = _mapping(coverage.get("face"))
        share, items, present = face.get("share"), face.get("items"), face.get("present")
        face_text = _pct(share)
        if _finite(items) is not None and _finite(present) is not None:
            face_text += f" ({present:g} of {items:g} analysed frames)"
        rows.append(("Share of time with a face", _esc(face_text), "analysed frames in which a face was found"))
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
        rows.append(("Share of time with speech", _esc(speech_text),
                     "time covered by the patient's utterances (enrolled voices left out)" if attributed else
                     "time covered by the utterances the voice-activity detector found (every voice in the "
                     "room counts: speakers are not told apart)"))
        if speakers:
            other_text = (f"{_fmt(speakers.get('other_s'), '.1f')} s ({_pct(speakers.get('other_share'))} of the "
                          "speech)" if attributed else "not told apart")
            rows.append(("Speech of other voices", _esc(other_text),
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
        (f"Mean valence{combined}", _esc(va("valence")),
         "\u22121 unpleasant \u2026 +1 pleasant; SD across windows (emotional range)"),
        (f"Mean arousal{combined}", _esc(va("arousal")), "\u22121 calm \u2026 +1 activated; SD across windows"),
    ]
    if "face" in kinds:
        rows.append(("Facial expressivity", _esc(_fmt(summary.get("face_expressivity"), ".3f")),
                     "mean spread of the probabilities within windows; higher means more varied expressions"))
    n_windows = summary.get("windows", len(windows))
    window_text = f"{_plain(summary.get('windows_with_mood'))} of {_plain(n_windows)}"
    if window_seconds is not None:
        window_text += f" (windows of {window_seconds:g} s)"
    need = {"face": "enough frames with a face", "speech": "enough speech"}.get(
        _only(kinds) or "", "enough frames with a face or enough speech")
    rows.append(("Windows with a mood estimate", _esc(window_text), f"a window needs {need} to carry a mood"))
    return _rows_html(rows)


def _prosody_block(summary: Mapping[str, Any], min_pause_s: float) -> str:
    """The session's prosody with a plain-language reading of each measure (device/audio/prosody.py)."""
    heading = "<h3>Voice: prosody (how the patient speaks)</h3>"
    prosody = _mapping(summary.get("prosody"))
    if not _finite(prosody.get("speech_s")):
        return heading + _empty("No speech found: no prosody measures.")

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
    rows = [
        ("Speech measured", _esc(value("speech_s", ".1f", " s")),
         "speaking time the measures below come from (pauses excluded); the more, the steadier they are"),
        ("Pitch (F0), mean", _esc(value("f0_mean_hz", ".0f", " Hz")),
         "average voice pitch; differs a lot between people (for example between men and women)"),
        ("Pitch variability", _esc(pitch_sd),
         "how much the voice moves; lower variability = more monotonous speech (semitones make men's and "
         "women's voices comparable)"),
        ("Speaking rate", _esc(rate),
         "syllables per second, pauses included; slower speech gives lower values (the count is approximate: "
         "the change across sessions is what matters)"),
        ("Pause ratio", _esc(_pct(prosody.get("pause_ratio"))),
         f"share of the speaking time spent in silent gaps of at least {pause_ms}; more and longer pauses go "
         f"with slowed, effortful speech"),
        ("Mean pause length", _esc(value("mean_pause_s", ".2f", " s")),
         "average length of those pauses; longer pauses go with slowed, effortful speech"),
        ("Loudness variability", _esc(value("energy_sd_db", ".1f", " dB")),
         "SD of loudness while voicing; lower = flatter, more monotonous speech"),
    ]
    note = ("Prosody differs a lot between people: it is most meaningful compared with the same patient's "
            "earlier sessions, recorded the same way. None of these measures is a diagnosis.")
    return heading + _rows_html(rows) + f'<p class="note prosody-note">{_esc(note)}</p>'


def _dl(pairs: Iterable[tuple[str, str]]) -> str:
    """Definition list of already-escaped (term, value) pairs."""
    items = "".join(f"<dt>{term}</dt><dd>{value}</dd>" for term, value in pairs)
    return f'<dl class="meta">{items}</dl>' if items else f'<p class="muted">{DASH}</p>'


ANALYSIS_NAMES = {
    "face_cpu_ms_per_frame": "Face CPU time per frame (ms)",
    "speech_real_time_factor": "Speech real-time factor (CPU s per audio s)",
}


def _source_block(summary: Mapping[str, Any], kinds: frozenset[str] = frozenset({"face"})) -> str:
    source = dict(_mapping(summary.get("source")))
    pairs: list[tuple[str, str]] = []
    for key in ("file", "file_name", "name", "path"):
        if key in source:
            pairs.append(("File", _esc(_plain(source.pop(key)))))
    if "audio_file" in source:
        audio_file = source.pop("audio_file")
        if audio_file is not None:
            pairs.append(("Audio file", _esc(_plain(audio_file))))
    for key in ("duration_s", "duration"):
        if key in source:
            d = source.pop(key)
            text = f"{clock(d)} ({_fmt(d, '.1f')} s)" if _finite(d) is not None else _plain(d)
            pairs.append(("Duration", _esc(text)))
    if "audio_seconds" in source:
        a = source.pop("audio_seconds")
        if _finite(a):
            pairs.append(("Audio", _esc(f"{clock(a)} ({_fmt(a, '.1f')} s)")))
        elif "speech" not in kinds:
            pairs.append(("Audio", "none"))
    if "fps" in source:
        fps = source.pop("fps")
        if fps is not None:
            pairs.append(("Frame rate", _esc(f"{fps:g} fps" if _finite(fps) is not None else _plain(fps))))
    if "width" in source or "height" in source:
        w, h = source.pop("width", None), source.pop("height", None)
        if w is not None or h is not None:
            pairs.append(("Frame size", _esc(f"{_plain(w)} \u00d7 {_plain(h)} px")))
    if "face" not in kinds and not _finite(source.get("frames_read")):
        source.pop("frames_read", None)
    pairs += [(_esc(_human(k)), _esc(_plain(v))) for k, v in source.items() if v is not None]
    software = [("Software", _esc(f"affectbox {_plain(summary.get('software_version'))}")),
                ("Report created (UTC)", _esc(_plain(summary.get("created_utc"))))]
    analysis = _mapping(summary.get("analysis"))
    for k, v in analysis.items():
        other_modality = ("face" not in kinds and k in ("frames_analysed", "detector_runs")) or (
            "speech" not in kinds and k == "utterances")
        if v is None or (other_modality and not _finite(v)):
            continue
        software.append((_esc(ANALYSIS_NAMES.get(str(k), _human(k))), _esc(_plain(v))))
    return (f'<div class="cols"><div><h3>Source</h3>{_dl(pairs)}</div>'
            f"<div><h3>Software</h3>{_dl(software)}</div></div>")


def _models_table(summary: Mapping[str, Any]) -> str:
    models = [m for m in summary.get("models") or [] if isinstance(m, Mapping)]
    if not models:
        return f'<p class="muted">{DASH} (no model information)</p>'
    keys = ["name", "version"]
    keys += [k for m in models for k in m if k not in keys and k != "sha256"]
    keys = [*dict.fromkeys(keys), "sha256"]
    head = "".join(f'<th scope="col">{_esc("SHA-256" if k == "sha256" else _human(k))}</th>' for k in keys)
    rows = []
    mono = ' class="mono"'
    for m in models:
        cells = "".join(f"<td{mono if k == 'sha256' else ''}>{_esc(_plain(m.get(k)))}</td>" for k in keys)
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="models"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append((prefix, value))


def _config_block(summary: Mapping[str, Any]) -> str:
    config = summary.get("config")
    if not isinstance(config, Mapping) or not config:
        return f'<p class="muted">{DASH} (no configuration recorded)</p>'
    flat: list[tuple[str, Any]] = []
    _flatten("", config, flat)
    return _dl((f'<span class="mono">{_esc(k)}</span>', f'<span class="mono">{_esc(_plain(v))}</span>')
               for k, v in flat)


def _windows_table(windows: Sequence[Mapping[str, Any]], kinds: frozenset[str] = frozenset({"face"})) -> str:
    if not windows:
        return _empty(_no_windows_message(kinds))
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
    head = "".join(f'<th scope="col"{NUM if num else ""}>{_esc(name)}</th>' for name, num in columns)
    head = f"<thead><tr>{head}</tr></thead>"
    rows = []
    for w in windows:
        mood = _has_mood(w)
        dominant = w.get("dominant") if mood else None
        dom = DASH + " no mood" if dominant is None else _swatch(_label_colour(dominant)) + " " + _esc(dominant)
        cls = "" if mood else ' class="nomood"'
        cells = [f"<td{NUM}>{_esc(_plain(w.get('index')))}</td><td>{_esc(clock(w.get('start')))}</td>"
                 f"<td>{_esc(clock(w.get('end')))}</td><td>{dom}</td>"
                 f"<td{NUM}>{_esc(_fmt(w.get('valence'), '+.2f'))}</td>"
                 f"<td{NUM}>{_esc(_fmt(w.get('arousal'), '+.2f'))}</td>"]
        if face:
            cells.append(f"<td{NUM}>{_esc(_pct(_window_face(w).get('share')))}</td>")
        if speech:
            cells.append(f"<td{NUM}>{_esc(_pct(_window_speech(w).get('share') or 0.0))}</td>")
        if both:
            weights = _mapping(w.get("fusion_weights"))
            wf, wv = _finite(weights.get("face")) or 0.0, _finite(weights.get("speech")) or 0.0
            text = f"{wf / (wf + wv):.0%} / {wv / (wf + wv):.0%}" if mood and wf + wv > 0 else DASH
            cells.append(f"<td{NUM}>{_esc(text)}</td>")
        if speech:
            prosody = _mapping(w.get("prosody"))
            cells.append(f"<td{NUM}>{_esc(_fmt(prosody.get('speaking_rate'), '.1f'))}</td>"
                         f"<td{NUM}>{_esc(_pct(prosody.get('pause_ratio')))}</td>")
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f'<table class="windows">{head}<tbody>{"".join(rows)}</tbody></table>'
