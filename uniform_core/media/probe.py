"""Opening media files and describing them from their headers."""

from __future__ import annotations

import io
import os
from pathlib import Path

import av

from ..errors import InputError
from .clips import MediaInfo
from .in_memory import MediaBytes
from .validation import _check_file


def _video_stream(c):
    """The first real video stream; cover art embedded in audio files (mp3, m4a) is not one."""
    cover = getattr(getattr(av.stream, "Disposition", None), "attached_pic", 0)
    return next((s for s in c.streams.video if not (cover and s.disposition & cover)), None)


def _open(p: Path | MediaBytes, what: str):
    try:
        return av.open(io.BytesIO(p.data) if isinstance(p, MediaBytes) else str(p))
    except av.error.FFmpegError as e:
        raise InputError(f"{what} {str(p)!r} is not a media file FFmpeg can read ({e})") from e


def probe(path: str | os.PathLike) -> MediaInfo:
    """Describe a video or audio file from its headers (nothing is decoded)."""
    p = _check_file(path, "media")
    with _open(p, "media") as c:
        v = _video_stream(c)
        a = c.streams.audio[0] if c.streams.audio else None
        durations = [float(s.duration * s.time_base) for s in (v, a) if s is not None and s.duration]
        duration = c.duration / av.time_base if c.duration else (max(durations) if durations else None)
        fps = _nominal_rate(v) if v is not None and (v.average_rate or v.guessed_rate) else None
        rate = a.rate if a is not None else None
        samples = round(a.duration * a.time_base * rate) if a is not None and a.duration and rate else None
        return MediaInfo(
            path=p,
            has_video=v is not None,
            has_audio=a is not None,
            duration=duration,
            fps=fps,
            num_frames=(v.frames or None) if v is not None else None,
            width=v.width if v is not None else None,
            height=v.height if v is not None else None,
            sample_rate=rate,
            channels=a.channels if a is not None else None,
            audio_samples=samples,
            video_codec=v.codec_context.name if v is not None else None,
            audio_codec=a.codec_context.name if a is not None else None,
        )


def _stream_origin(stream) -> float | None:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else None


def _nominal_rate(stream) -> float:
    """The rate a file's frames are shown at when the caller names none: r_frame_rate (the lowest rate at which
    every timestamp falls on a frame) unless it is missing or far above the average (millisecond time bases)."""
    guessed, average = stream.guessed_rate, stream.average_rate
    if guessed and (not average or guessed <= 4 * average):
        return float(guessed)
    return float(average) if average else 25.0  # FFmpeg's own default when a stream states no rate
