"""What a media file holds (video stream, audio stream, duration), decided before analysis starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from device.errors import MediaError


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    has_video: bool
    has_audio: bool
    duration: float  # seconds, 0 when the container does not say


def check_media_path(path: Path) -> None:
    """One-line MediaError unless `path` is an existing, non-empty regular file."""
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")


def probe_media(path: str | Path) -> MediaInfo:
    path = Path(path)
    check_media_path(path)
    try:
        with av.open(str(path)) as container:
            duration = container.duration / av.time_base if container.duration else 0.0
            return MediaInfo(path, bool(container.streams.video), bool(container.streams.audio), duration)
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        reason = " ".join(str(getattr(exc, "strerror", None) or exc).split())
        raise MediaError(f"{path}: not a video or audio file that can be decoded ({reason})") from None
