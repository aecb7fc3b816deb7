"""Scenes with a face at a controlled width, position and lighting, and face-free frames.

Shared by the far-face tests and `bench/bench_far_face.py`; everything comes from photos shipped
in scikit-image's wheel, nothing from datasets:
- the astronaut photo (a frontal face with hair, collar and shoulders around it);
- `lfw_subset`: its first 100 images are 25x25 grey face crops of real people (Labeled Faces in
  the Wild), its last 100 are face-free crops;
- face-free backgrounds: the other photos of the package (coffee, a cat, a rocket, bricks,
  gravel, text, a motorbike, ...), cut and scaled to the frame.

A face "of width W" is one whose detector box (cheek to cheek, about 15 cm of a real face) is W
pixels wide: the astronaut's face box in the 512x512 photo is ASTRONAUT_FACE; an LFW crop's face
spans about LFW_FACE_SHARE of the crop's side (both measured with the BlazeFace models).
The face is scaled down from its source with area averaging (as optics and a sensor do), pasted
with a feathered edge, then the frame is dimmed and gets sensor noise that grows as light falls.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import skimage.data

FRAME_SIZE = (640, 480)
ASTRONAUT_FACE = (175, 75, 277, 177)  # x0, y0, x1, y1 of the face box in the 512x512 photo
LFW_FACE_SHARE = 0.85
# where the face's centre goes, as fractions of the frame (centre, thirds, higher, lower)
POSITIONS = ((0.5, 0.45), (0.3, 0.4), (0.7, 0.4), (0.5, 0.3), (0.4, 0.6))
# (name, brightness factor, noise sigma in grey levels): office light, a dim room, a dark one
LIGHTING = (("bright", 1.0, 2.0), ("dim", 0.55, 4.0), ("dark", 0.3, 6.0))
BACKGROUND_NAMES = ("coffee", "chelsea", "rocket", "brick", "gravel", "grass", "text", "page",
                    "coins", "hubble_deep_field", "immunohistochemistry", "horse", "moon")


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # BGR uint8
    face_box: tuple[float, float, float, float] | None  # true face box, None in a face-free frame
    source: str
    lighting: str


def _bgr(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        image = image[:, :, :3]
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


def backgrounds(size: tuple[int, int] = FRAME_SIZE) -> list[np.ndarray]:
    """Face-free photos of the package, each scaled to cover the frame and cut to it."""
    width, height = size
    out = []
    for name in BACKGROUND_NAMES:
        image = _bgr(getattr(skimage.data, name)())
        scale = max(width / image.shape[1], height / image.shape[0])
        resized = cv2.resize(image, (max(width, round(image.shape[1] * scale)),
                                     max(height, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        y0 = (resized.shape[0] - height) // 2
        x0 = (resized.shape[1] - width) // 2
        out.append(resized[y0 : y0 + height, x0 : x0 + width].copy())
    return out


def face_sources() -> list[tuple[str, np.ndarray, tuple[float, float, float, float]]]:
    """(name, BGR photo, face box in it): the astronaut, then the 100 LFW faces."""
    sources = [("astronaut", _bgr(skimage.data.astronaut()), tuple(float(v) for v in ASTRONAUT_FACE))]
    lfw = skimage.data.lfw_subset()
    for i in range(100):
        crop = _bgr(lfw[i])
        side = crop.shape[1]
        margin = side * (1 - LFW_FACE_SHARE) / 2
        sources.append((f"lfw{i:02d}", crop, (margin, margin, side - margin, side - margin)))
    return sources


def lfw_non_faces() -> list[np.ndarray]:
    return [_bgr(image) for image in skimage.data.lfw_subset()[100:]]


def _feather_mask(height: int, width: int) -> np.ndarray:
    """1 inside, falling to 0 over the outer sixth of each side (an ellipse), so no hard edge."""
    ys = (np.arange(height) + 0.5) / height * 2 - 1
    xs = (np.arange(width) + 0.5) / width * 2 - 1
    r = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
    return np.clip((1.0 - r) / 0.3, 0.0, 1.0)[..., None].astype(np.float32)


def paste_face(background: np.ndarray, photo: np.ndarray, face: tuple[float, float, float, float],
               width_px: float, centre: tuple[float, float]) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """`photo` scaled so its face is `width_px` wide, pasted with its face centred at `centre`
    (fractions of the frame); returns the frame and the true face box in it."""
    fx0, fy0, fx1, fy1 = face
    scale = width_px / (fx1 - fx0)
    # keep about one face width of context around the face (hair, collar), where the photo has it
    pad = fx1 - fx0
    sx0, sy0 = max(0, int(fx0 - pad)), max(0, int(fy0 - pad))
    sx1, sy1 = min(photo.shape[1], int(np.ceil(fx1 + pad))), min(photo.shape[0], int(np.ceil(fy1 + pad * 1.5)))
    patch = photo[sy0:sy1, sx0:sx1]
    out_w, out_h = max(1, round(patch.shape[1] * scale)), max(1, round(patch.shape[0] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    small = cv2.resize(patch, (out_w, out_h), interpolation=interp).astype(np.float32)
    frame = background.astype(np.float32).copy()
    height, width = frame.shape[:2]
    cx, cy = centre[0] * width, centre[1] * height
    # the face centre inside the scaled patch
    pcx = ((fx0 + fx1) / 2 - sx0) * scale
    pcy = ((fy0 + fy1) / 2 - sy0) * scale
    left, top = int(round(cx - pcx)), int(round(cy - pcy))
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(width, left + out_w), min(height, top + out_h)
    mask = _feather_mask(out_h, out_w)[y0 - top : y1 - top, x0 - left : x1 - left]
    region = small[y0 - top : y1 - top, x0 - left : x1 - left]
    frame[y0:y1, x0:x1] = region * mask + frame[y0:y1, x0:x1] * (1 - mask)
    half_w, half_h = width_px / 2, (fy1 - fy0) * scale / 2
    return frame.clip(0, 255).astype(np.uint8), (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def light(frame: np.ndarray, brightness: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    out = frame.astype(np.float32) * brightness + rng.normal(0.0, noise, frame.shape)
    return out.clip(0, 255).astype(np.uint8)


def face_scenes(width_px: float, sources: list[tuple[str, np.ndarray, tuple[float, float, float, float]]],
                size: tuple[int, int] = FRAME_SIZE, seed: int = 0,
                positions: tuple[tuple[float, float], ...] = POSITIONS,
                lighting: tuple[tuple[str, float, float], ...] = LIGHTING) -> Iterator[Scene]:
    """Every source at every position, under every lighting, on a background taken in turn."""
    rng = np.random.default_rng(seed)
    scenes_bg = backgrounds(size)
    k = 0
    for name, photo, face in sources:
        for centre in positions:
            for light_name, brightness, noise in lighting:
                background = scenes_bg[k % len(scenes_bg)]
                k += 1
                frame, box = paste_face(background, photo, face, width_px, centre)
                yield Scene(light(frame, brightness, noise, rng), box, name, light_name)


def face_free_scenes(size: tuple[int, int] = FRAME_SIZE, seed: int = 1, count: int = 200) -> Iterator[Scene]:
    """Face-free frames: the backgrounds, shifted and zoomed, some with LFW's non-face crops pasted
    in at face-like sizes (textures a detector might mistake), under the same lighting levels."""
    rng = np.random.default_rng(seed)
    width, height = size
    bgs = backgrounds((width * 2, height * 2))
    non_faces = lfw_non_faces()
    for i in range(count):
        big = bgs[i % len(bgs)]
        zoom = rng.uniform(0.5, 1.0)
        w, h = int(width * 2 * zoom), int(height * 2 * zoom)
        x0, y0 = rng.integers(0, width * 2 - w + 1), rng.integers(0, height * 2 - h + 1)
        frame = cv2.resize(big[y0 : y0 + h, x0 : x0 + w], size, interpolation=cv2.INTER_AREA)
        if i % 2:
            patch = non_faces[i % len(non_faces)]
            side = float(rng.uniform(32, 120))
            centre = (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8)))
            frame, _ = paste_face(frame, patch, (0.0, 0.0, 25.0, 25.0), side, centre)
        light_name, brightness, noise = LIGHTING[i % len(LIGHTING)]
        yield Scene(light(frame, brightness, noise, rng), None, "face-free", light_name)


def is_hit(box: tuple[float, float, float, float], truth: tuple[float, float, float, float]) -> bool:
    """A detection finds the face when its centre lies inside the true face box and its width is
    within a factor of two of the true width."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    width, true_width = box[2] - box[0], truth[2] - truth[0]
    inside = truth[0] <= cx <= truth[2] and truth[1] <= cy <= truth[3]
    return inside and 0.5 * true_width <= width <= 2.0 * true_width
