"""Building the speaker attributor: the verified encoder, and the voices to compare with.

- `device_attributor(config)`: the device's enrolled voices (`[voice]`, `voiceprints_dir`); None
  when attribution is off or no voice is enrolled, so nothing is loaded and nothing changes;
- `file_attributor(config, paths)`: voices enrolled on the fly from audio files, for
  `affectbox analyze --other-voice` (nothing is stored).
The encoder file must match its sha256 pin in models/third_party.json (fetched by setup.sh).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from device.assets import third_party_entry
from device.capture.audio_file import read_audio
from device.config import Config
from device.errors import ModelError
from device.inference.runtime import resolve_models_dir, sha256_file
from device.inference.voice_encoder import MODEL_NAME, VoiceEncoder
from device.voice.attribution import SpeakerAttributor
from device.voice.enrollment import Enrollment, enroll_pcm
from device.voice.voiceprints import VoiceprintError, VoiceprintStore, check_name

log = logging.getLogger(__name__)
_ENCODERS: dict[str, VoiceEncoder] = {}  # one copy of the 17 MB of weights per process


def encoder_entry(config: Config) -> dict[str, Any]:
    return third_party_entry(MODEL_NAME, resolve_models_dir(config.runtime.models_dir))


def load_encoder(config: Config) -> VoiceEncoder:
    models_dir = resolve_models_dir(config.runtime.models_dir)
    entry = encoder_entry(config)
    path = models_dir / entry["file"]
    if not path.is_file():
        raise ModelError(f"{path}: the speaker-embedding model is missing (run: affectbox fetch-models)")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ModelError(f"{path}: sha256 {digest[:12]}… does not match its pin (run: affectbox fetch-models)")
    if digest not in _ENCODERS:
        _ENCODERS[digest] = VoiceEncoder.from_file(path)
    return _ENCODERS[digest]


def model_metadata(config: Config) -> dict[str, Any]:
    entry = encoder_entry(config)
    return {"name": MODEL_NAME, "version": entry["source"]["version"], "sha256": entry["sha256"],
            "runtime": "numpy"}


def voiceprints_dir(config: Config) -> Path:
    return Path(config.voice.voiceprints_dir or Path(config.device.state_dir) / "voiceprints")


def attributor_for(config: Config, encoder: VoiceEncoder, voices: dict[str, Any]) -> SpeakerAttributor:
    v = config.voice
    return SpeakerAttributor(encoder, voices, v.threshold, v.max_partials, v.adaptive, v.margin)


def device_attributor(config: Config, only: Iterable[str] | None = None) -> SpeakerAttributor | None:
    if not config.voice.enabled:
        return None
    store = VoiceprintStore(voiceprints_dir(config))
    voices = store.load()
    for problem in store.problems:  # names the file, never its content
        log.warning("voice: skipped: %s", problem)
    if only is not None:
        wanted = set(only)
        voices = [v for v in voices if v.name in wanted]
    if not voices:
        return None
    return attributor_for(config, load_encoder(config), {v.name: v.embedding for v in voices})


def enroll_file(config: Config, path: str | Path, encoder: VoiceEncoder | None = None) -> Enrollment:
    pcm, _ = read_audio(path)
    return enroll_pcm(pcm, encoder or load_encoder(config), config.speech, what=str(path),
                      threshold=config.voice.threshold, min_speech_s=config.voice.min_enroll_speech_s)


def file_attributor(config: Config, paths: Iterable[str | Path]) -> SpeakerAttributor:
    encoder = load_encoder(config)
    voices = {f"voice{i + 1}": enroll_file(config, p, encoder).embedding for i, p in enumerate(paths)}
    return attributor_for(config, encoder, voices)


def enroll_and_save(config: Config, name: str, pcm: Any, *, what: str, replace: bool = False) -> dict[str, Any]:
    """Enroll int16 PCM under `name` in the device's voiceprint folder; the listing entry (no embedding)."""
    check_name(name)
    store = VoiceprintStore(voiceprints_dir(config))
    if not replace and name in store.names():
        raise VoiceprintError(f"a voice named {name!r} is already enrolled (delete it first, or replace it)")
    result = enroll_pcm(pcm, load_encoder(config), config.speech, what=what, threshold=config.voice.threshold,
                        min_speech_s=config.voice.min_enroll_speech_s)
    return store.save(name, result.embedding, result.speech_s, result.utterances, replace=replace).listing()
