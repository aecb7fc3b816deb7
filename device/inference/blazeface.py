"""MediaPipe BlazeFace (short and full range) run through LiteRT, with anchors, decoding and NMS in numpy.

The short-range model takes a 128x128 RGB image scaled to [-1, 1] and returns, for each of 896
SSD anchors, 16 regressors (box centre offset, size, six keypoints) and one logit; the
full-range model (made for faces up to about 5 m) takes 192x192 and has 2304 anchors. The
post-processing follows MediaPipe's graphs `face_detection_short_range.pbtxt` and
`face_detection_full_range_common.pbtxt`:
- SsdAnchorsCalculator, short range: 4 layers, strides 8, 16, 16, 16, one aspect ratio plus one
  interpolated scale, fixed anchor size (every anchor is 1x1, so only its centre matters).
  Layers with equal strides share a grid: 16x16x2 + 8x8x6 = 896 anchors. Full range: one layer
  of stride 4 and no interpolated scale: 48x48x1 = 2304 anchors.
- TensorsToDetectionsCalculator: x/y/w/h scale = the input size, scores = sigmoid(clip(logit, +-100)).
- NonMaxSuppressionCalculator: weighted NMS (overlapping boxes are averaged by score).
Frames of any aspect ratio are letterboxed to a square first, as MediaPipe does, and
boxes are mapped back to pixel coordinates of the original frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.inference.runtime import LoadedModel

INPUT_SIZE = 128  # the short-range model
NUM_KEYPOINTS = 6
# Keypoint order in the model's output (MediaPipe): right eye, left eye (from the subject's
# point of view), nose tip, mouth centre, right ear tragion, left ear tragion.
RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH, RIGHT_EAR, LEFT_EAR = range(6)


@dataclass(frozen=True)
class Detection:
    """One face in pixel coordinates of the analysed frame."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    keypoints: np.ndarray  # [6, 2] pixel (x, y)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


def generate_anchors(
    input_size: int = INPUT_SIZE, strides: tuple[int, ...] = (8, 16, 16, 16), anchors_per_layer: int = 2
) -> np.ndarray:
    """SSD anchor centres [N, 2] (x, y) in [0, 1], in the model's output order."""
    centres: list[tuple[float, float]] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        # consecutive layers with the same stride share one grid, their anchors interleaved per cell
        repeats = 0
        while layer < len(strides) and strides[layer] == stride:
            repeats += anchors_per_layer
            layer += 1
        grid = int(np.ceil(input_size / stride))
        for y in range(grid):
            for x in range(grid):
                centre = ((x + 0.5) / grid, (y + 0.5) / grid)
                centres.extend([centre] * repeats)
    return np.asarray(centres, dtype=np.float32)


ANCHORS = generate_anchors()


@dataclass(frozen=True)
class DetectorVariant:
    """Input size and anchor layout of one BlazeFace model file."""

    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int

    def anchors(self) -> np.ndarray:
        return generate_anchors(self.input_size, self.strides, self.anchors_per_layer)


VARIANTS = {
    "short": DetectorVariant(128, (8, 16, 16, 16), 2),
    "full": DetectorVariant(192, (4,), 1),
}


def decode_boxes(raw: np.ndarray, anchors: np.ndarray = ANCHORS, scale: float = INPUT_SIZE) -> np.ndarray:
    """Regressors [N, 16] to [N, 16]: box (x0, y0, x1, y1) then 6 keypoints (x, y), all in [0, 1]."""
    out = np.empty_like(raw, dtype=np.float32)
    cx = raw[:, 0] / scale + anchors[:, 0]
    cy = raw[:, 1] / scale + anchors[:, 1]
    w = raw[:, 2] / scale
    h = raw[:, 3] / scale
    out[:, 0] = cx - w / 2
    out[:, 1] = cy - h / 2
    out[:, 2] = cx + w / 2
    out[:, 3] = cy + h / 2
    for k in range(NUM_KEYPOINTS):
        out[:, 4 + 2 * k] = raw[:, 4 + 2 * k] / scale + anchors[:, 0]
        out[:, 5 + 2 * k] = raw[:, 5 + 2 * k] / scale + anchors[:, 1]
    return out


def sigmoid_scores(logits: np.ndarray, clip: float = 100.0) -> np.ndarray:
    # float64: exp(100) overflows float32
    return 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -clip, clip)))


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box [4] against many [M, 4] (x0, y0, x1, y1)."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(decoded: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted NMS: each cluster of overlapping candidates becomes their score-weighted mean.

    Returns (coords [16], score of the cluster's best member), best first.
    """
    order = np.argsort(-scores)
    decoded = decoded[order]
    scores = scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    results: list[tuple[np.ndarray, float]] = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        overlaps = iou(decoded[i, :4], decoded[:, :4])
        cluster = remaining & (overlaps > iou_threshold)
        cluster[i] = True
        weights = scores[cluster]
        merged = (decoded[cluster] * weights[:, None]).sum(axis=0) / weights.sum()
        results.append((merged, float(scores[i])))
        remaining &= ~cluster
    return results


class Letterbox:
    """Square padding of a frame, and the inverse mapping of normalised coordinates back to pixels."""

    def __init__(self, width: int, height: int) -> None:
        self.side = max(width, height)
        self.pad_x = (self.side - width) / 2
        self.pad_y = (self.side - height) / 2

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Normalised [..., 2] in the padded square to pixel coordinates of the original frame."""
        out = np.asarray(xy, dtype=np.float32) * self.side
        out[..., 0] -= self.pad_x
        out[..., 1] -= self.pad_y
        return out


def prepare_input(frame_bgr: np.ndarray, input_size: int = INPUT_SIZE) -> tuple[np.ndarray, Letterbox]:
    """Letterbox, resize to the model's square input, BGR -> RGB, scale to [-1, 1]; [1,S,S,3] float32."""
    height, width = frame_bgr.shape[:2]
    box = Letterbox(width, height)
    scale = input_size / box.side
    # resize first (cheap at the model's size), then pad: same result as padding then resizing
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    small = cv2.resize(frame_bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((input_size, input_size, 3), dtype=np.uint8)
    top = (input_size - new_h) // 2
    left = (input_size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = small
    # keep the mapping exact for the integer placement used above
    box.pad_x = left / scale
    box.pad_y = top / scale
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    tensor = rgb.astype(np.float32) * (2.0 / 255.0) - 1.0
    return tensor[None], box


class BlazeFaceDetector:
    """Detects faces in BGR frames; one LiteRT interpreter, created once."""

    def __init__(self, model: LoadedModel, min_score: float = 0.6, iou_threshold: float = 0.3,
                 variant: DetectorVariant | None = None) -> None:
        self.model = model
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self.variant = variant or VARIANTS["short"]
        self._anchors = self.variant.anchors()
        # by shape, not name: the sparse full-range file names its outputs Identity, Identity_1
        last_dims = [int(d["shape"][-1]) for d in model.outputs]
        self._reg_index = last_dims.index(16)
        self._cls_index = last_dims.index(1)

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        """All faces above the score threshold, best first, in pixel coordinates."""
        size = self.variant.input_size
        tensor, letterbox = prepare_input(frame_bgr, size)
        outputs = self.model.run(tensor)
        raw = outputs[self._reg_index][0]
        scores = sigmoid_scores(outputs[self._cls_index][0, :, 0])
        keep = scores >= self.min_score
        if not keep.any():
            return []
        decoded = decode_boxes(raw[keep], self._anchors[keep], float(size))
        detections = []
        for coords, score in weighted_nms(decoded, scores[keep], self.iou_threshold):
            corners = letterbox.to_pixels(coords[:4].reshape(2, 2))
            keypoints = letterbox.to_pixels(coords[4:].reshape(NUM_KEYPOINTS, 2))
            detections.append(
                Detection(
                    float(corners[0, 0]), float(corners[0, 1]), float(corners[1, 0]), float(corners[1, 1]),
                    score, keypoints,
                )
            )
        return detections
