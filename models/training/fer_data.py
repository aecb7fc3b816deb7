"""Load a FER2013-layout folder (`<class>/<image>`) into numpy arrays in the project's label order.

The decoded arrays are cached next to nothing in the dataset (which is read-only): under
`$AFFECTBOX_CACHE` or `~/.cache/affectbox`, keyed by the folder's path and file count.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

# The project's label order (FER2013's original integer order); folders are named in lower case.
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def _cache_dir() -> Path:
    root = os.environ.get("AFFECTBOX_CACHE") or os.path.join(Path.home(), ".cache", "affectbox")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_images(folder: Path) -> list[tuple[Path, int]]:
    """Return (path, label index) for every image under `folder/<class>/`."""
    items: list[tuple[Path, int]] = []
    for index, label in enumerate(LABELS):
        class_dir = folder / label
        if not class_dir.is_dir():
            raise FileNotFoundError(f"{class_dir}: class folder missing")
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                items.append((path, index))
    return items


def load_split(folder: str | os.PathLike[str], size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N, size, size], labels int32 [N]) for one split folder, cached."""
    folder = Path(folder).resolve()
    items = list_images(folder)
    key = hashlib.sha256(f"{folder}|{len(items)}|{size}".encode()).hexdigest()[:16]
    cache = _cache_dir() / f"fer_{folder.name}_{key}.npz"
    if cache.exists():
        with np.load(cache) as data:
            return data["images"], data["labels"]
    images = np.empty((len(items), size, size), dtype=np.uint8)
    labels = np.empty(len(items), dtype=np.int32)
    for i, (path, label) in enumerate(items):
        with Image.open(path) as im:
            im = im.convert("L")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            images[i] = np.asarray(im)
        labels[i] = label
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, labels=labels)
    os.replace(tmp, cache)
    return images, labels
