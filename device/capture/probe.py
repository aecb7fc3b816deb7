"""What a media file holds (video stream, audio stream, duration), decided before analysis starts,
and the bounds on what its headers may declare.

Headers are written by whoever made the file: a few hundred kilobytes can declare 16000x16000
frames (gigabytes once decoded), a 1 Hz sample rate (hours of "audio" from a few samples) or a
duration of years. Every file reader checks the declared numbers against what a camera or a
microphone produces (`check_video_header`, `check_audio_header`, `check_duration`) before it
decodes anything, and refuses with one line naming the number and the limit.
"""

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


MAX_FRAME_SIDE = 4096  # DCI 4K; larger frames are refused (a 16000x16000 frame is 768 MB as BGR)
MAX_FRAME_PIXELS = 4096 * 2304
ANALYSIS_MAX_SIDE = 1920  # larger frames are scaled down to this long side as they are decoded
MIN_SAMPLE_RATE = 8000  # telephone audio; no microphone records slower
MAX_SAMPLE_RATE = 384000
MAX_CHANNELS = 32
MAX_MEDIA_SECONDS = 12 * 3600.0  # the longest session is 12 h (session.max_duration_minutes)


def check_video_header(path: Path, width: int, height: int) -> None:
    """One-line MediaError for frame sizes no camera produces (0 = not declared, checked per frame)."""
    if width < 0 or height < 0 or max(width, height) > MAX_FRAME_SIDE or width * height > MAX_FRAME_PIXELS:
        raise MediaError(f"{path}: declares {width}x{height} video frames; at most {MAX_FRAME_SIDE} pixels a side "
                         f"and {MAX_FRAME_PIXELS / 1e6:.1f} megapixels are analysed")


def check_audio_header(path: Path, rate: int, channels: int) -> None:
    """One-line MediaError for sample rates or channel counts no microphone produces."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise MediaError(f"{path}: declares audio at {rate} Hz; only {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz "
                         "is accepted")
    if not 1 <= channels <= MAX_CHANNELS:
        raise MediaError(f"{path}: declares {channels} audio channels; 1 to {MAX_CHANNELS} are accepted")


def check_duration(path: Path, seconds: float) -> None:
    """One-line MediaError for a declared duration over MAX_MEDIA_SECONDS (0 = not declared)."""
    if not seconds == seconds or seconds < 0 or seconds > MAX_MEDIA_SECONDS:
        raise MediaError(f"{path}: declares a duration of {seconds / 3600:.1f} h; recordings of at most "
                         f"{MAX_MEDIA_SECONDS / 3600:.0f} h are analysed")


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
            check_duration(path, duration)
            for video in container.streams.video[:1]:
                check_video_header(path, int(video.codec_context.width or 0), int(video.codec_context.height or 0))
            for audio in container.streams.audio[:1]:
                check_audio_header(path, int(audio.rate or 0), int(audio.channels or 0))
            return MediaInfo(path, bool(container.streams.video), bool(container.streams.audio), duration)
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        reason = " ".join(str(getattr(exc, "strerror", None) or exc).split())
        raise MediaError(f"{path}: not a video or audio file that can be decoded ({reason})") from None
