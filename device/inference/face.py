"""The face pathway: detect (or track) the patient's face, crop it, recognise the expression.

One `FaceAnalyzer` owns the detector and the expression model (one interpreter each). It is
what `affectbox analyze` and the live daemon both call, one frame at a time:
`process(frame) -> Observation`.

Patient selection: the largest face, or, when a region of interest is configured, the largest
face whose centre lies inside it (a clinician may sit in the frame too). With a region, the
detector runs on that part of the frame only, which also makes small faces larger for it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from device.assets import third_party_entry
from device.config import Config, FaceConfig
from device.inference.blazeface import BlazeFaceDetector, Detection
from device.inference.expression import ExpressionClassifier
from device.inference.face_crop import crop_geometry, cut_face
from device.inference.runtime import ModelSpec, load_model, resolve_models_dir
from device.inference.tracker import FaceTracker
from device.observation import Frame, Observation

DETECTOR_NAME = "blazeface_short_range"
MODEL_INPUT_PX = 48  # faces smaller than the model's input carry less than it can use


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
        self.detector_runs = 0
        self.frames = 0

    @classmethod
    def from_config(cls, config: Config) -> FaceAnalyzer:
        models_dir = resolve_models_dir(config.runtime.models_dir)
        threads = config.runtime.num_threads
        spec = ModelSpec.from_manifest(third_party_entry(DETECTOR_NAME, models_dir))
        detector = BlazeFaceDetector(load_model(spec, models_dir, threads), config.face.min_score,
                                     config.face.nms_iou)
        classifier = ExpressionClassifier.from_models_dir(models_dir, threads, config.face.flip_average)
        return cls(detector, classifier, config.face)

    @property
    def model_paths(self) -> list[Path]:
        return [self.detector.model.path, self.classifier.model.path]

    def _detect(self, image: np.ndarray) -> list[Detection]:
        self.detector_runs += 1
        roi = self.config.roi
        if roi is None:
            faces = self.detector.detect(image)
        else:
            h, w = image.shape[:2]
            x0, y0 = int(roi[0] * w), int(roi[1] * h)
            x1, y1 = max(x0 + 1, int(roi[2] * w)), max(y0 + 1, int(roi[3] * h))
            faces = [shift_detection(d, x0, y0) for d in self.detector.detect(image[y0:y1, x0:x1])]
            # the patient's face must be centred inside the region, not merely overlap it
            faces = [d for d in faces if x0 <= d.center[0] < x1 and y0 <= d.center[1] < y1]
        return [d for d in faces if d.width >= self.config.min_face_px]

    def locate(self, image: np.ndarray, gray: np.ndarray) -> tuple[Detection | None, bool, int]:
        """The patient's face, whether it was tracked (not detected), and how many faces were found."""
        due = self._since_detect % self.config.detect_every == 0
        self._since_detect += 1
        if not due:
            tracked = self.tracker.track(gray)
            if tracked is not None:
                return tracked, True, 1
        faces = self._detect(image)
        self._since_detect = 1
        if not faces:
            self.tracker.reset()
            return None, False, 0
        patient = max(faces, key=lambda d: d.area)
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
        quality = float(np.clip(det.score, 0.0, 1.0)) * min(1.0, det.width / MODEL_INPUT_PX)
        features = {
            "faces": n_faces,
            "box": [round(det.x0, 1), round(det.y0, 1), round(det.x1, 1), round(det.y1, 1)],
            "score": round(det.score, 4),
            "tracked": tracked,
            "roll_deg": round(geom.angle, 1),
        }
        return Observation(frame.t, self.modality, probs, quality, features)
