"""Follows a detected face between detector runs by template matching on a small grayscale image.

The detector is the expensive step; on frames where it does not run, the face is searched for
near its last position with normalised cross-correlation on an image downscaled so the face
is about 32 pixels wide. A weak match means the face is lost, and the caller runs the detector.
Scale and roll are not tracked; the next detection refreshes them.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from device.inference.blazeface import Detection

TEMPLATE_WIDTH = 32
MIN_MATCH = 0.6


class FaceTracker:
    def __init__(self, max_shift: float = 0.5, min_match: float = MIN_MATCH) -> None:
        self.max_shift = max_shift
        self.min_match = min_match
        self._template: np.ndarray | None = None
        self._det: Detection | None = None
        self._scale = 1.0

    def reset(self) -> None:
        self._template = None
        self._det = None

    def start(self, frame_gray: np.ndarray, det: Detection) -> None:
        """Remember the face just detected as the template to follow."""
        self._scale = TEMPLATE_WIDTH / max(det.width, 1.0)
        x0, y0 = int(det.x0 * self._scale), int(det.y0 * self._scale)
        x1, y1 = int(det.x1 * self._scale), int(det.y1 * self._scale)
        small = self._shrink(frame_gray)
        h, w = small.shape
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 < 8 or y1 - y0 < 8:
            self.reset()
            return
        self._template = small[y0:y1, x0:x1].copy()
        self._origin = (x0, y0)
        self._det = det

    def _shrink(self, frame_gray: np.ndarray) -> np.ndarray:
        h, w = frame_gray.shape
        size = (max(1, int(w * self._scale)), max(1, int(h * self._scale)))
        return cv2.resize(frame_gray, size, interpolation=cv2.INTER_AREA)

    def track(self, frame_gray: np.ndarray) -> Detection | None:
        """The face moved to its best match near the last position, or None if it is lost."""
        if self._template is None or self._det is None:
            return None
        small = self._shrink(frame_gray)
        th, tw = self._template.shape
        margin = int(round(self.max_shift * tw)) + 1
        ox, oy = self._origin
        sx0, sy0 = max(0, ox - margin), max(0, oy - margin)
        sx1 = min(small.shape[1], ox + tw + margin)
        sy1 = min(small.shape[0], oy + th + margin)
        region = small[sy0:sy1, sx0:sx1]
        if region.shape[0] < th or region.shape[1] < tw:
            return None
        scores = cv2.matchTemplate(region, self._template, cv2.TM_CCOEFF_NORMED)
        _, best, _, (bx, by) = cv2.minMaxLoc(scores)
        if not np.isfinite(best) or best < self.min_match:
            return None
        dx = (sx0 + bx - ox) / self._scale
        dy = (sy0 + by - oy) / self._scale
        det = self._det
        return replace(
            det, x0=det.x0 + dx, y0=det.y0 + dy, x1=det.x1 + dx, y1=det.y1 + dy,
            score=float(best), keypoints=det.keypoints + np.array([dx, dy], dtype=np.float32),
        )
