"""Audio from a recorded file at media time, as fixed-length 16 kHz mono int16 blocks.

Used by `affectbox analyze` for audio files (WAV, FLAC, ...) and for the audio track of recorded
videos (mp4, mkv, avi, mov, webm). Decoding and resampling are FFmpeg's, through PyAV: any sample
rate, sample format and channel layout becomes 16 kHz mono int16 (`av.AudioResampler`, which
downmixes by averaging channels). The live microphone source yields the same `AudioBlock`s, so
everything downstream is the same for files and live sessions.

Every bad input ends in a one-line `MediaError` naming the file, never a traceback.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from device.capture.probe import check_audio_header, check_duration, check_media_path
from device.errors import MediaError
from device.observation import SAMPLE_RATE, AudioBlock

# What PyAV raises for unreadable or corrupt input: FFmpegError (InvalidDataError and friends,
# all ValueError subclasses), plus OSError for files that vanish or cannot be read, and
# ValueError when a stream changes its layout mid-file in a way the resampler rejects.
_AV_ERRORS = (av.FFmpegError, OSError, ValueError)


def _reason(exc: Exception) -> str:
    """The error's text on one line, without the file name PyAV appends."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except _AV_ERRORS as exc:
        raise MediaError(f"{path}: not an audio or video file FFmpeg can decode ({_reason(exc)})") from None


def _wav_truncation(path: Path) -> str | None:
    """Describe how a RIFF/WAVE file is cut short, or None when it is whole (or not a WAV).

    FFmpeg silently decodes whatever part of a truncated WAV is there; a recording cut off by a
    power loss would then be analysed as if it were complete, so the header's data size is
    checked against the bytes present. Sizes of 0 and 0xFFFFFFFF are what streaming writers put
    before they know the length, and are accepted.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        byte_rate = 0
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None  # no data chunk header at all: FFmpeg reports that itself
            tag, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if tag == b"fmt " and length >= 16:
                fmt = fh.read(16)
                if len(fmt) == 16:
                    byte_rate = struct.unpack("<I", fmt[8:12])[0]
            if tag == b"data":
                if length in (0, 0xFFFFFFFF):
                    return None
                present = size - (offset + 8)
                if present >= length:
                    return None
                if byte_rate:
                    return (f"header declares {length / byte_rate:.2f} s of audio, "
                            f"the file holds {max(present, 0) / byte_rate:.2f} s")
                return f"header declares {length} bytes of audio, the file holds {max(present, 0)}"
            offset += 8 + length + (length & 1)  # chunks are padded to an even length
            if offset >= size:
                return None
            fh.seek(offset)


def has_audio_track(path: str | Path) -> bool:
    """Whether a media file holds an audio stream; MediaError when it is missing or not media."""
    path = Path(path)
    check_media_path(path)
    with _open(path) as container:
        return len(container.streams.audio) > 0


class AudioFileSource:
    """Iterate a media file's first audio track as `AudioBlock`s of exactly `block_ms`.

    Block times are media time: the first block starts at the first decoded audio frame's
    timestamp (0 for audio files; a video's audio track may start a little later), and each
    further block follows on by sample count, so times never drift from the samples delivered.
    The last block is zero-padded and carries `valid` < its length.
    """

    def __init__(self, path: str | Path, block_ms: int = 30) -> None:
        self.path = Path(path)
        if not (1 <= block_ms <= 1000):
            raise ValueError(f"block_ms must be between 1 and 1000 (got {block_ms})")
        self.block_ms = block_ms
        self.block_samples = SAMPLE_RATE * block_ms // 1000
        check_media_path(self.path)
        truncated = _wav_truncation(self.path)
        if truncated:
            raise MediaError(f"{self.path}: truncated WAV file ({truncated})")
        # Open once here so that a bad file fails at construction, like VideoFileSource.
        with _open(self.path) as container:
            streams = container.streams.audio
            if not streams:
                raise MediaError(f"{self.path}: has no audio track")
            stream = streams[0]
            self.source_rate = int(stream.rate or 0)
            self.source_channels = int(stream.channels or 0)
            self.codec = stream.codec_context.name if stream.codec_context else "unknown"
            check_audio_header(self.path, self.source_rate, self.source_channels)
            check_duration(self.path, container.duration / av.time_base if container.duration else 0.0)
        self.samples_read = 0  # 16 kHz samples delivered so far, padding excluded

    @property
    def duration(self) -> float:
        """Seconds of audio delivered so far (the whole file once iteration has finished)."""
        return self.samples_read / SAMPLE_RATE

    def _decoded(self) -> Iterator[tuple[float | None, np.ndarray]]:
        """(media time of the source frame or None, 16 kHz mono int16 samples) per resampled chunk."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        container = _open(self.path)
        position = "the start"
        try:
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                position = f"{frame.time:.2f} s" if frame.time is not None else position
                for out in resampler.resample(frame):
                    yield frame.time, out.to_ndarray().reshape(-1)
            # the resampler holds back a few samples for its filter; drain them
            for out in resampler.resample(None):
                yield None, out.to_ndarray().reshape(-1)
        except _AV_ERRORS as exc:
            message = f"audio cannot be decoded after {position} ({_reason(exc)})"
            raise MediaError(f"{self.path}: {message}") from None
        finally:
            container.close()

    def __iter__(self) -> Iterator[AudioBlock]:
        n = self.block_samples
        pending = np.zeros(0, dtype=np.int16)  # fewer than n samples carried to the next chunk
        t0: float | None = None
        emitted = 0  # blocks yielded
        self.samples_read = 0
        for frame_time, pcm in self._decoded():
            if t0 is None:
                t0 = max(0.0, frame_time or 0.0)
            self.samples_read += len(pcm)
            pending = np.concatenate([pending, pcm]) if len(pending) else pcm
            whole = len(pending) // n * n
            for start in range(0, whole, n):
                yield AudioBlock(t0 + emitted * n / SAMPLE_RATE, pending[start : start + n].copy())
                emitted += 1
            pending = pending[whole:]
        if self.samples_read == 0:
            raise MediaError(f"{self.path}: the audio track is empty (zero length)")
        if len(pending):
            valid = len(pending)
            block = np.zeros(n, dtype=np.int16)
            block[:valid] = pending
            yield AudioBlock((t0 or 0.0) + emitted * n / SAMPLE_RATE, block, valid=valid)


def read_audio(path: str | Path) -> tuple[np.ndarray, float]:
    """The whole first audio track as 16 kHz mono int16 and its duration in seconds."""
    source = AudioFileSource(path, block_ms=1000)
    parts = [block.samples for block in source]
    pcm = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    return pcm, len(pcm) / SAMPLE_RATE
