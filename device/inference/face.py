"""The face pathway: detect (or track) the patient's face, crop it, recognise the expression.

One `FaceAnalyzer` owns the detector and the expression model (one interpreter each). It is
what `affectbox analyze` and the live daemon both call, one frame at a time:
`process(frame) -> Observation`.

Patient selection: the largest face, or, when a region of interest is configured, the largest
face whose centre lies inside it (a clinician may sit in the frame too).

Far faces (issue 14, measured in docs/DESIGN.md): the detector sees a square letterboxed copy
of what it is given (192x192 for the full-range model), so a 40 px face in a whole 640x480 frame
shrinks to 12 px there and is mostly missed. Hence a coarse-to-fine search:
- while a face is known, the detector runs on a square window of about four face widths around
  it, at native resolution (the face fills a quarter of the model's input);
- otherwise (start, face lost) it runs on the whole frame (or roi), for large faces, and on
  overlapping square tiles of `search_tile_px` at native resolution, for small ones, a few tiles
  per round in turn (`search_tiles_per_round`), rounds only on the detector's cadence
  (`detect_every`), so an empty room costs little; duplicates from overlapping tiles are merged.
  A face the tracker loses is searched for at once.
Template tracking between detector runs (`detect_every`) is unchanged.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from device.assets import third_party_entry
from device.config import Config, FaceConfig
from device.inference.blazeface import VARIANTS, BlazeFaceDetector, Detection, iou
from device.inference.expression import ExpressionClassifier
from device.inference.face_crop import crop_geometry, cut_face
from device.inference.runtime import ModelSpec, load_model, resolve_models_dir
from device.inference.tracker import FaceTracker
from device.observation import Frame, Observation

DETECTORS = {"full_range": ("blazeface_full_range", "full"), "short_range": ("blazeface_short_range", "short")}
# Expression accuracy of a face this wide relative to a full-size face (FER2013 val shrunk to the
# crop such a face gives, sensor noise added; bench/bench_small_face.py, results/bench_small_face.json):
# the fusion `quality` of a small face. Under 24 px it falls to 0 (no measurement there).
SMALL_FACE_WIDTHS_PX = (0.0, 24.0, 32.0, 40.0, 48.0)
SMALL_FACE_ACCURACY = (0.0, 0.896, 0.976, 0.976, 1.0)  # 40 px measured 0.975: noise, kept monotone


def size_quality(width_px: float) -> float:
    """How much of a full-size face's expression accuracy a face `width_px` wide delivers."""
    return float(np.interp(width_px, SMALL_FACE_WIDTHS_PX, SMALL_FACE_ACCURACY))
WINDOW_FACE_WIDTHS = 4.0  # side of the window around a known face, in face widths
MIN_WINDOW_PX = 128
DUPLICATE_IOU = 0.3

Region = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels


def tile_regions(region: Region, tile: int) -> list[Region]:
    """Square tiles of side `tile` covering `region`, overlapping by half a tile, so any face up to
    half a tile wide lies wholly inside one; none when the region is no larger than a tile."""
    x0, y0, x1, y1 = region
    width, height = x1 - x0, y1 - y0
    if tile <= 0 or (width <= tile and height <= tile):
        return []

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        out = list(range(0, length - tile + 1, tile // 2))
        if out[-1] + tile < length:
            out.append(length - tile)
        return out

    return [(x0 + sx, y0 + sy, x0 + min(width, sx + tile), y0 + min(height, sy + tile))
            for sy in starts(height) for sx in starts(width)]


def window_around(det: Detection, region: Region) -> Region:
    """A square of about WINDOW_FACE_WIDTHS face widths centred on a known face, inside `region`."""
    x0, y0, x1, y1 = region
    side = int(min(max(MIN_WINDOW_PX, WINDOW_FACE_WIDTHS * max(det.width, det.height)), x1 - x0, y1 - y0))
    cx, cy = det.center
    left = int(np.clip(round(cx - side / 2), x0, x1 - side))
    top = int(np.clip(round(cy - side / 2), y0, y1 - side))
    return left, top, left + side, top + side


def merge_duplicates(faces: list[Detection]) -> list[Detection]:
    """One detection per face when overlapping tiles saw it twice: the best-scoring one, best first."""
    kept: list[Detection] = []
    for det in sorted(faces, key=lambda d: -d.score):
        box = np.array([det.x0, det.y0, det.x1, det.y1])
        others = np.array([[k.x0, k.y0, k.x1, k.y1] for k in kept]).reshape(-1, 4)
        if not len(kept) or not (iou(box, others) > DUPLICATE_IOU).any():
            kept.append(det)
    return kept


def shift_detection(det: Detection, dx: float, dy: float) -> Detection:
    return Detection(det.x0 + dx, det.y0 + dy, det.x1 + dx, det.y1 + dy, det.score,
                     det.keypoints + np.array([dx, dy], dtype=np.float32))


class FaceAnalyzer:
    modality = "face"

    def __init__(self, detector: BlazeFaceDetector, classifier: ExpressionClassifier, config: FaceConfig) -> None:
        self.detector = detector
        self.classifier = classifier
        self.config = config
        self.tracker = FaceTracker(max_shift=config.track_max_shift)
        self._since_detect = 0
        self._known: Detection | None = None  # the patient's face at the last detection, if any
        self._tile_cursor = 0  # the next search tile, while tiles are searched in turn
        self.detector_runs = 0  # detection rounds (one per frame where the detector ran)
        self.detector_calls = 0  # model invocations (a search runs several)
        self.frames = 0

    @classmethod
    def from_config(cls, config: Config) -> FaceAnalyzer:
        models_dir = resolve_models_dir(config.runtime.models_dir)
        threads = config.runtime.num_threads
        name, variant = DETECTORS[config.face.detector]
        spec = ModelSpec.from_manifest(third_party_entry(name, models_dir))
        detector = BlazeFaceDetector(load_model(spec, models_dir, threads), config.face.min_score,
                                     config.face.nms_iou, VARIANTS[variant])
        classifier = ExpressionClassifier.from_models_dir(models_dir, threads, config.face.flip_average)
        return cls(detector, classifier, config.face)

    @property
    def model_paths(self) -> list[Path]:
        return [self.detector.model.path, self.classifier.model.path]

    def _region(self, image: np.ndarray) -> Region:
        h, w = image.shape[:2]
        roi = self.config.roi
        if roi is None:
            return 0, 0, w, h
        x0, y0 = int(roi[0] * w), int(roi[1] * h)
        return x0, y0, max(x0 + 1, int(roi[2] * w)), max(y0 + 1, int(roi[3] * h))

    def _detect_in(self, image: np.ndarray, part: Region) -> list[Detection]:
        self.detector_calls += 1
        x0, y0, x1, y1 = part
        return [shift_detection(d, x0, y0) for d in self.detector.detect(image[y0:y1, x0:x1])]

    def _detect(self, image: np.ndarray) -> list[Detection]:
        self.detector_runs += 1
        region = self._region(image)
        faces: list[Detection] = []
        if self._known is not None:
            faces = self._keep(self._detect_in(image, window_around(self._known, region)), region)
        if not faces:  # no face known, or it left its window: search the frame and (some) tiles
            for part in [region, *self._tiles_this_round(region)]:
                faces.extend(self._detect_in(image, part))
            faces = self._keep(merge_duplicates(faces), region)
        return faces

    def _tiles_this_round(self, region: Region) -> list[Region]:
        tiles = tile_regions(region, self.config.search_tile_px)
        per_round = self.config.search_tiles_per_round
        if not per_round or len(tiles) <= per_round:
            return tiles
        start = self._tile_cursor % len(tiles)
        self._tile_cursor = start + per_round
        return [tiles[(start + k) % len(tiles)] for k in range(per_round)]

    def search_rounds(self, image: np.ndarray) -> int:
        """Detection rounds one full search of this frame's size takes (tiles in turn)."""
        tiles = len(tile_regions(self._region(image), self.config.search_tile_px))
        per_round = self.config.search_tiles_per_round
        return 1 if not per_round or tiles <= per_round else -(-tiles // per_round)

    def _keep(self, faces: list[Detection], region: Region) -> list[Detection]:
        x0, y0, x1, y1 = region
        # the patient's face must be centred inside the region, not merely overlap it
        return [d for d in faces if x0 <= d.center[0] < x1 and y0 <= d.center[1] < y1
                and d.width >= self.config.min_face_px]

    def locate(self, image: np.ndarray, gray: np.ndarray) -> tuple[Detection | None, bool, int]:
        """The patient's face, whether it was tracked (not detected), and how many faces were found."""
        due = self._since_detect % self.config.detect_every == 0
        self._since_detect += 1
        if not due:
            tracked = self.tracker.track(gray)
            if tracked is not None:
                self._known = tracked
                return tracked, True, 1
            if self._known is None:  # nobody in view: search at the detector's cadence only
                return None, False, 0
        faces = self._detect(image)
        self._since_detect = 1
        if not faces:
            self.tracker.reset()
            self._known = None
            return None, False, 0
        patient = max(faces, key=lambda d: d.area)
        self._known = patient
        if self.config.detect_every > 1:
            self.tracker.start(gray, patient)
        return patient, False, len(faces)

    def process(self, frame: Frame) -> Observation:
        self.frames += 1
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY) if frame.image.ndim == 3 else frame.image
        image = frame.image if frame.image.ndim == 3 else cv2.cvtColor(frame.image, cv2.COLOR_GRAY2BGR)
        det, tracked, n_faces = self.locate(image, gray)
        if det is None:
            return Observation(frame.t, self.modality, None, 0.0, {"faces": 0})
        cfg = self.config
        geom = crop_geometry(det, cfg.crop_scale, cfg.crop_shift_y, cfg.align)
        probs, _ = self.classifier.classify(cut_face(gray, geom))
        quality = float(np.clip(det.score, 0.0, 1.0)) * size_quality(det.width)
        features = {
            "faces": n_faces,
            "box": [round(det.x0, 1), round(det.y0, 1), round(det.x1, 1), round(det.y1, 1)],
            "score": round(det.score, 4),
            "tracked": tracked,
            "roll_deg": round(geom.angle, 1),
        }
        return Observation(frame.t, self.modality, probs, quality, features)
