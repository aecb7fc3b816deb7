"""Crop geometry: scale, offset, eye levelling, and the pixels that come out."""

import math

import cv2
import numpy as np
import pytest

from device.inference.blazeface import LEFT_EYE, RIGHT_EYE, Detection
from device.inference.face_crop import CROP_SIZE, crop_affine, crop_geometry, cut_face


def make_detection(x0=100.0, y0=100.0, size=100.0, eye_dy=0.0) -> Detection:
    keypoints = np.zeros((6, 2), dtype=np.float32)
    keypoints[RIGHT_EYE] = [x0 + 0.3 * size, y0 + 0.35 * size]
    keypoints[LEFT_EYE] = [x0 + 0.7 * size, y0 + 0.35 * size + eye_dy]
    return Detection(x0, y0, x0 + size, y0 + size, 0.9, keypoints)


def test_geometry_scale_and_shift():
    geom = crop_geometry(make_detection(), scale=1.18, shift_y=-0.10, align=True)
    assert geom.side == pytest.approx(118.0)
    assert geom.cx == pytest.approx(150.0)
    assert geom.cy == pytest.approx(150.0 - 10.0)  # 0.10 box heights above the centre
    assert geom.angle == pytest.approx(0.0)


def test_geometry_roll_from_eyes():
    geom = crop_geometry(make_detection(eye_dy=40.0), scale=1.0, shift_y=0.0, align=True)
    assert geom.angle == pytest.approx(math.degrees(math.atan2(40.0, 40.0)))
    assert crop_geometry(make_detection(eye_dy=40.0), 1.0, 0.0, align=False).angle == 0.0


def test_mirrored_eyes_are_not_used_for_roll():
    det = make_detection()
    det.keypoints[[RIGHT_EYE, LEFT_EYE]] = det.keypoints[[LEFT_EYE, RIGHT_EYE]]
    assert crop_geometry(det, 1.0, 0.0, align=True).angle == 0.0


def test_affine_maps_centre_and_corners():
    geom = crop_geometry(make_detection(), scale=1.0, shift_y=0.0, align=False)
    matrix = crop_affine(geom)
    points = np.array([[150.0, 150.0, 1.0], [100.0, 100.0, 1.0], [200.0, 200.0, 1.0]])
    mapped = points @ matrix.T
    assert mapped == pytest.approx(np.array([[24, 24], [0, 0], [48, 48]]), abs=1e-6)


def test_cut_face_content_and_size():
    frame = np.zeros((400, 400), dtype=np.uint8)
    frame[100:200, 100:150] = 255  # left half of the box bright
    geom = crop_geometry(make_detection(), scale=1.0, shift_y=0.0, align=False)
    crop = cut_face(frame, geom)
    assert crop.shape == (CROP_SIZE, CROP_SIZE) and crop.dtype == np.uint8
    assert crop[:, :20].mean() > 240 and crop[:, 28:].mean() < 15


def test_rotated_face_is_levelled():
    # draw a horizontal bar, rotate the frame by 30 degrees: the levelled crop shows it horizontal again
    frame = np.zeros((400, 400), dtype=np.uint8)
    frame[195:205, 120:280] = 255
    rotation = cv2.getRotationMatrix2D((200, 200), -30, 1.0)
    rotated = cv2.warpAffine(frame, rotation, (400, 400))
    det = make_detection(x0=120, y0=120, size=160)
    eyes = np.array([[140.0, 200.0, 1.0], [260.0, 200.0, 1.0]]) @ rotation.T
    det.keypoints[RIGHT_EYE], det.keypoints[LEFT_EYE] = eyes[0], eyes[1]
    geom = crop_geometry(det, scale=1.0, shift_y=0.0, align=True)
    assert geom.angle == pytest.approx(30.0, abs=0.01)
    crop = cut_face(rotated, geom)
    rows = crop.mean(axis=1)
    assert rows[21:27].mean() > 100 and rows[:15].mean() < 10 and rows[33:].mean() < 10


def test_face_partly_outside_frame_is_padded_not_failed():
    frame = np.full((100, 100), 50, dtype=np.uint8)
    det = make_detection(x0=-40, y0=-40, size=100)
    crop = cut_face(frame, crop_geometry(det, 1.2, 0.0, True))
    assert crop.shape == (48, 48)
