"""The one label set shared by both modalities, its valence/arousal coordinates and its colours.

Order is FER2013's original integer order; every model, manifest and payload uses it.
"""

from __future__ import annotations

import numpy as np

LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_LABELS = len(LABELS)

# One colour per label for every chart (the offline report, the device's page, the hub's
# dashboard): the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies);
# yellow is left out for its low contrast on white, neutral is a dark grey.
LABEL_COLOURS: dict[str, str] = {
    "angry": "#D55E00",
    "disgust": "#009E73",
    "fear": "#CC79A7",
    "happy": "#E69F00",
    "sad": "#0072B2",
    "surprise": "#56B4E9",
    "neutral": "#4D4D4D",
}
NO_MOOD_COLOUR = "#E3E3E3"  # a window without a mood estimate
OTHER_COLOUR = "#999999"  # a label outside LABELS

# Colours of the lines and bars that are not labels, for every chart: none of them is a label's
# colour, so a valence line is never read as "sad" nor a face-coverage bar as "disgust"
# (tests/test_labels.py checks it). The device's page gets them from its template, not a copy.
VALENCE_COLOUR = "#1b1f24"  # near-black, solid line
AROUSAL_COLOUR = "#7a4fa0"  # purple, dashed where the medium allows
FACE_COLOUR = "#8C6D31"  # ochre: share of frames with a face
VOICE_COLOUR = "#6A3D9A"  # violet: share of time with speech, prosody
CHART_COLOURS: dict[str, str] = {"valence": VALENCE_COLOUR, "arousal": AROUSAL_COLOUR, "face": FACE_COLOUR,
                                 "voice": VOICE_COLOUR, "no_mood": NO_MOOD_COLOUR}

# Valence (unpleasant -1 .. pleasant +1) and arousal (calm -1 .. activated +1) per label.
# Source: the circumplex model of affect (J. A. Russell, "A circumplex model of affect",
# J. Pers. Soc. Psychol. 39(6):1161-1178, 1980), where each affect word sits at an angle around
# the valence/arousal origin. The coordinates below are this project's hand placements that keep
# the circumplex's ordering (happy: pleasant and mildly aroused; surprise: aroused, mildly
# pleasant; angry and fear: aroused and unpleasant, fear the more aroused; sad: unpleasant and
# deactivated; neutral at the origin). "Disgust" is not among Russell's words; it is placed as
# unpleasant and moderately aroused. They are coarse: good for trends within one patient, not
# calibrated affect measurements. Change them only here.
VALENCE_AROUSAL: dict[str, tuple[float, float]] = {
    "angry": (-0.4, 0.8),
    "disgust": (-0.7, 0.4),
    "fear": (-0.3, 0.9),
    "happy": (0.9, 0.2),
    "sad": (-0.8, -0.4),
    "surprise": (0.3, 0.9),
    "neutral": (0.0, 0.0),
}

VA_TABLE = np.array([VALENCE_AROUSAL[label] for label in LABELS], dtype=np.float64)  # [7, 2]


def valence_arousal(probs: np.ndarray) -> tuple[float, float]:
    """Expected (valence, arousal) under a probability vector over LABELS."""
    p = np.asarray(probs, dtype=np.float64)
    total = p.sum()
    if total <= 0:
        return 0.0, 0.0
    v, a = (p / total) @ VA_TABLE
    return float(v), float(a)
