"""The items that flow through the pipeline: frames and audio blocks in, observations out.

Everything downstream of a source sees only item time `t` (seconds): media time for files,
monotonic time since session start for live capture, so offline and live behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.labels import LABELS


@dataclass(frozen=True)
class Frame:
    """One video frame: BGR uint8 pixels at item time `t`."""

    t: float
    image: np.ndarray
    index: int = 0


SAMPLE_RATE = 16000  # Hz; every audio source delivers 16 kHz mono int16, the speech models' input rate


@dataclass(frozen=True)
class AudioBlock:
    """A fixed-length block of 16 kHz mono int16 PCM starting at item time `t`.

    File and microphone sources both yield blocks of exactly `block_ms`; a file's last block is
    zero-padded to that length, and `valid` says how many of its samples are real.
    """

    t: float
    pcm: np.ndarray
    valid: int = -1  # samples of real audio; -1 = the whole block

    @property
    def padded(self) -> bool:
        """True for a final block that was filled up with zeros."""
        return 0 <= self.valid < len(self.pcm)

    @property
    def samples(self) -> np.ndarray:
        """The real audio of the block, without padding."""
        return self.pcm[: self.valid] if self.padded else self.pcm

    @property
    def duration(self) -> float:
        return len(self.pcm) / SAMPLE_RATE


@dataclass(frozen=True)
class Observation:
    """What one analyzer saw in one item.

    `probs` are calibrated probabilities over LABELS, or None when the modality saw nothing
    usable (no face, silence). `quality` in [0, 1] weighs the observation in fusion.
    """

    t: float
    modality: str
    probs: np.ndarray | None
    quality: float
    features: dict[str, Any] = field(default_factory=dict)

    @property
    def present(self) -> bool:
        return self.probs is not None

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"t": round(self.t, 3), "modality": self.modality, "present": self.present}
        row["quality"] = round(self.quality, 4)
        if self.probs is not None:
            row["label"] = LABELS[int(np.argmax(self.probs))]
            row["probs"] = {lab: round(float(p), 4) for lab, p in zip(LABELS, self.probs, strict=True)}
        row.update(self.features)
        return row
