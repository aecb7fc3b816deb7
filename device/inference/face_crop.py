"""Crop geometry: from a detection to the 48x48 grayscale face the expression model expects.

FER2013's faces are tighter than a generous head crop. The defaults (`crop_scale` 1.18,
`crop_shift_y` -0.10) were measured by running this detector on FER2013 val images padded
into a larger canvas: the image side is a median 1.186x the detector's box side, and the
image centre sits 0.103 box heights above the box centre (1,463 of 1,500 val images detected;
`models/training/calibrate_crop.py` reproduces it).
With `align`, the crop is rotated so the eyes are level, as FER2013's faces mostly are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from device.inference.blazeface import LEFT_EYE, RIGHT_EYE, Detection

CROP_SIZE = 48


@dataclass(frozen=True)
class CropGeometry:
    """Square crop in frame pixels: centre, side and roll angle (degrees, counter-clockwise)."""

    cx: float
    cy: float
    side: float
    angle: float


def crop_geometry(det: Detection, scale: float, shift_y: float, align: bool) -> CropGeometry:
    """Where to cut the face from the frame for the expression model."""
    side = scale * max(det.width, det.height)
    cx, cy = det.center
    angle = 0.0
    if align:
        right_eye, left_eye = det.keypoints[RIGHT_EYE], det.keypoints[LEFT_EYE]
        dx, dy = float(left_eye[0] - right_eye[0]), float(left_eye[1] - right_eye[1])
        if dx > 0:  # a sane, roughly frontal pair of eyes; otherwise leave the face unrotated
            angle = math.degrees(math.atan2(dy, dx))
    # shift along the face's own vertical axis (matters once the crop is rotated)
    rad = math.radians(angle)
    offset = shift_y * det.height
    cx -= offset * math.sin(rad)
    cy += offset * math.cos(rad)
    return CropGeometry(cx, cy, side, angle)


def crop_affine(geom: CropGeometry, size: int = CROP_SIZE) -> np.ndarray:
    """2x3 affine matrix mapping frame pixels to crop pixels."""
    scale = size / geom.side
    matrix = cv2.getRotationMatrix2D((geom.cx, geom.cy), geom.angle, scale)
    matrix[0, 2] += size / 2 - geom.cx
    matrix[1, 2] += size / 2 - geom.cy
    return matrix


def cut_face(frame_gray: np.ndarray, geom: CropGeometry, size: int = CROP_SIZE) -> np.ndarray:
    """The size x size uint8 grayscale crop; outside the frame is filled by edge replication.

    Large faces are warped at up to 4x the target size and then area-averaged down, because
    warpAffine only point-samples and would alias a 200-pixel face into a 48-pixel crop.
    """
    inter = int(min(max(size, round(geom.side)), 4 * size))
    patch = cv2.warpAffine(
        frame_gray, crop_affine(geom, inter), (inter, inter),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    )
    if inter != size:
        patch = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return patch
