"""The speech pathway: audio blocks in, one observation per utterance out.

`SpeechAnalyzer` owns the VAD segmenter and the speech-emotion model (one interpreter). It is
what `affectbox analyze` and the live daemon both call as audio arrives:
`process(block) -> list[Observation]`, and `flush()` at the end of a session. The model runs only
on speech the VAD found; silence costs a VAD call and nothing else.

Each observation sits at the utterance's midpoint and carries the utterance's span and duration
(which make up the window's speech coverage), its SNR, its prosody, and a quality in [0, 1]
that weighs it in fusion:
    quality = min(1, duration / 2 s) * clip((snr_db - 5) / 15, 0.1, 1)
i.e. a short fragment or a noisy recording counts less; two seconds of speech 20 dB above the
background count fully. (2 s is about the length of the model's input; below 5 dB SNR the VAD
and the model are both unreliable.)

With a `SpeakerAttributor` holding enrolled voices (device/voice), each utterance is first
attributed: one matching an enrolled voice becomes an observation with `"speaker": "other"`, its
similarity and its span, and nothing else: no emotion, no prosody (the model never runs on it).
The patient's carry `"speaker": "patient"` and the similarity too. Without voices, nothing changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device.audio.prosody import utterance_prosody
from device.audio.vad import SpeechSegmenter, Utterance
from device.config import Config, SpeechConfig
from device.inference.runtime import resolve_models_dir
from device.inference.speech_emotion import SpeechEmotionClassifier
from device.observation import AudioBlock, Observation
from device.voice.attribution import OTHER, SpeakerAttributor

FULL_QUALITY_SECONDS = 2.0
SNR_FLOOR_DB = 5.0
SNR_FULL_DB = 20.0


def speech_quality(duration: float, snr_db: float) -> float:
    length = min(1.0, max(0.0, duration) / FULL_QUALITY_SECONDS)
    snr = float(np.clip((snr_db - SNR_FLOOR_DB) / (SNR_FULL_DB - SNR_FLOOR_DB), 0.1, 1.0))
    return length * snr


class SpeechAnalyzer:
    modality = "speech"

    def __init__(self, classifier: SpeechEmotionClassifier, config: SpeechConfig,
                 attributor: SpeakerAttributor | None = None) -> None:
        self.classifier = classifier
        self.config = config
        self.segmenter = SpeechSegmenter(config)
        self.attributor = attributor.fresh() if attributor is not None and attributor.active else None
        self.utterances = 0
        self.other_utterances = 0

    @classmethod
    def from_config(cls, config: Config) -> SpeechAnalyzer:
        models_dir = resolve_models_dir(config.runtime.models_dir)
        classifier = SpeechEmotionClassifier.from_models_dir(models_dir, config.runtime.num_threads)
        return cls(classifier, config.speech)

    @property
    def model_paths(self) -> list[Path]:
        return [self.classifier.model.path]

    @property
    def lateness(self) -> float:
        """How long after its start an utterance's observation can arrive (for the aggregator)."""
        c = self.config
        return (c.max_utterance_ms + c.hangover_ms + c.pre_roll_ms + c.block_ms) / 1000.0 + 0.5

    @property
    def attributing(self) -> bool:
        return self.attributor is not None

    def observe(self, utterance: Utterance) -> Observation:
        attribution = self.attributor.attribute(utterance.pcm) if self.attributor is not None else None
        t = (utterance.start + utterance.end) / 2
        span = {"start": round(utterance.start, 3), "end": round(utterance.end, 3),
                "duration": round(utterance.duration, 3)}
        if attribution is not None and attribution.speaker == OTHER:
            self.other_utterances += 1
            return Observation(t, self.modality, None, 0.0,
                               {**span, "speaker": OTHER, "similarity": round(attribution.similarity, 4)})
        probs, _ = self.classifier.classify(utterance.pcm)
        prosody = utterance_prosody(utterance.pcm, t0=utterance.start, min_pause_s=self.config.min_pause_ms / 1000)
        self.utterances += 1
        features = {
            **span,
            "snr_db": round(float(utterance.snr_db), 2),
            "speech_share": round(utterance.speech_share, 3),
            "cut": utterance.cut,
            "prosody": prosody,
        }
        if attribution is not None:
            features.update({"speaker": attribution.speaker, "similarity": round(attribution.similarity, 4)})
        quality = speech_quality(utterance.duration, utterance.snr_db)
        return Observation(t, self.modality, probs, quality, features)

    def process(self, block: AudioBlock) -> list[Observation]:
        return [self.observe(u) for u in self.segmenter.push(block)]

    def flush(self) -> list[Observation]:
        return [self.observe(u) for u in self.segmenter.flush()]
