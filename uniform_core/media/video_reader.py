"""Decoding video files to frames.

Output frame ``k`` shows what is on screen at ``start + k / fps`` by the frames' presentation timestamps, so a
variable-frame-rate file keeps its timing; frames are scaled to the requested size by FFmpeg as they are decoded,
so a large file never sits in memory at full size.
"""

from __future__ import annotations

import logging
import math
import os

import av
import torch

from ..errors import InputError
from .audio_reader import _read_audio_file
from .clips import VideoClip
from .conform import _EPS, _cover_size, _seconds
from .in_memory import MediaBytes
from .probe import _nominal_rate, _open, _stream_origin, _video_stream
from .validation import _check_file, _check_fps, _check_window, _is_pos_int

logger = logging.getLogger(__name__)


def read_video(
    path: str | os.PathLike | MediaBytes,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    start: float = 0.0,
    duration: float | None = None,
    with_audio: bool = True,
) -> VideoClip:
    """Decode ``path`` (a file, or :class:`MediaBytes`) to frames (T, H, W, 3) float32 in [0, 1].

    ``fps``: output frame ``k`` is the source frame whose presentation interval contains ``start + k / fps``, so a
    variable-frame-rate file keeps its timing and its length; None means the file's nominal rate (FFmpeg's
    r_frame_rate: every frame of a constant-rate file comes out once). ``size=(H, W)`` scales each frame as it is
    decoded so the short side covers H x W, then center-crops. ``start`` / ``duration`` (seconds) pick a window.
    The file's audio over the same window comes along as ``VideoClip.audio`` (at its own sample rate) when
    ``with_audio`` and the file has an audio stream. A file that ends before its header says is read as far as it
    goes, with a note (``VideoClip.notes``) and a logged warning.
    """
    p = _check_file(path, "video")
    start, duration = _check_window(start, duration)
    if fps is not None:
        fps = _check_fps(fps, "fps")
    if size is not None:
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(_is_pos_int(s) for s in size)):
            raise InputError(f"size must be (height, width) in positive pixels; got {size!r}")
        size = (int(size[0]), int(size[1]))
    with _open(p, "video") as c:
        stream = _video_stream(c)
        if stream is None:
            kinds = "audio only" if c.streams.audio else "no video stream"
            raise InputError(f"video {str(p)!r} has no video stream ({kinds}); pass a video file, or read it as audio")
        has_audio = bool(c.streams.audio)
        nominal = _nominal_rate(stream)
        fps = fps or nominal
        try:
            frames, origin, decoded_end, source_size = _decode_video(c, stream, fps, size, start, duration)
        except av.error.FFmpegError as e:
            raise InputError(f"video {str(p)!r} could not be decoded ({e})") from e
        header_end = _header_end(c, stream, origin)
    notes = []
    if fps != nominal:
        notes.append(f"video resampled {nominal:g} -> {fps:g} fps by its timestamps ({len(frames)} frames)")
    if size is not None and source_size != size:
        notes.append(
            f"video resized from {source_size[1]}x{source_size[0]} to {size[1]}x{size[0]} while decoding "
            "(short side scaled, center-cropped)"
        )
    truncated = (
        header_end is not None and decoded_end < min(header_end, start + (duration or math.inf)) - 2 / fps - 0.05
    )
    if truncated:
        notes.append(
            f"video {str(p)!r} is truncated: its header says {_seconds(header_end)}, but frames end at "
            f"{_seconds(decoded_end)}; read {_seconds(len(frames) / fps)} from {_seconds(start)}"
        )
        logger.warning(notes[-1])
    if not frames:
        cut = f" (it is truncated at {_seconds(decoded_end)})" if truncated else ""
        raise InputError(f"video {str(p)!r} has no frames from start={start:g} s on{cut}")
    video = torch.empty((len(frames), *frames[0].shape), dtype=torch.float32)
    for i, picture in enumerate(frames):
        torch.div(picture, 255, out=video[i])
    audio = None
    if with_audio and has_audio:
        audio = _read_audio_file(p, start, video.shape[0] / fps, origin)
    return VideoClip(video, fps, audio, notes)


def picture_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of ``path``'s video as shown (after the rotation phones record), from its first frame."""
    p = _check_file(path, "video")
    with _open(p, "video") as c:
        stream = _video_stream(c)
        if stream is None:
            raise InputError(f"video {str(p)!r} has no video stream; pass a video file")
        try:
            frame = next(c.decode(stream), None)
        except av.error.FFmpegError as e:
            raise InputError(f"video {str(p)!r} could not be decoded ({e})") from e
    if frame is None:
        raise InputError(f"video {str(p)!r} has no frames")
    return _shown_size(frame)


def _header_end(c, stream, origin: float) -> float | None:
    """Where the container says the video ends, in seconds from ``origin``; None when it does not say."""
    if stream.duration:
        return float((stream.start_time or 0) * stream.time_base) + float(stream.duration * stream.time_base) - origin
    return c.duration / av.time_base if c.duration else None


def _decode_video(c, stream, fps: float, size, start: float, duration: float | None):
    """Upright (H, W, 3) uint8 pictures for the output times ``start + k / fps`` in the window (resized as decoded
    when ``size`` is set), the stream's time origin, where its decoded frames end (seconds from the origin), and the
    source picture size as shown."""
    stream.thread_type = "AUTO"
    origin = _stream_origin(stream)
    if start > 1.0 and origin is not None:
        c.seek(int((start + origin - 1.0) / stream.time_base), stream=stream, backward=True)
    end = math.inf if duration is None else start + duration
    # timestamps are rounded to the time base: a frame that starts within half a tick of an output time starts at it
    tol = _EPS + min(0.5 * float(stream.time_base), 0.25 / fps)
    out, k = [], 0
    shown = None  # the frame on screen: [frame, its picture once converted, its start time]

    def picture():
        if shown[1] is None:  # converted only when shown: frames that no output time falls on cost nothing
            shown[1] = _picture(shown[0], size)
        return shown[1]

    try:
        for frame in c.decode(stream):
            t = float(frame.time) if frame.time is not None else (shown[2] + 1 / fps if shown else 0.0)
            if origin is None:
                origin = t
            t -= origin
            # every output time before this frame starts shows the frame on screen (or this one, if none came earlier)
            while shown is not None and (tk := start + k / fps) < end - _EPS and tk < t - tol:
                out.append(picture())
                k += 1
            if start + k / fps >= end - _EPS:
                return out, origin, t, _shown_size(shown[0])
            shown = [frame, None, t]
    except av.error.FFmpegError as e:
        if shown is None:
            raise
        logger.info("video stops decoding after %s: %s", _seconds(shown[2]), e)  # cut mid-packet: keep what came
    if shown is None:
        return out, origin or 0.0, 0.0, None
    last = shown[0]
    shown_for = float(last.duration * last.time_base) if last.duration and last.time_base else 1 / fps
    decoded_end = shown[2] + shown_for
    header_end = _header_end(c, stream, origin)
    if header_end is not None and shown[2] + tol < header_end:  # MP4 records the last frame's length only there
        decoded_end = min(decoded_end, header_end)
    while (tk := start + k / fps) < min(end, decoded_end) - tol:
        out.append(picture())
        k += 1
    return out, origin, decoded_end, _shown_size(last)


def _quarter_turns(frame) -> int:
    """Counterclockwise quarter turns that make ``frame`` upright (phones store portrait video sideways)."""
    return round(getattr(frame, "rotation", 0) / 90) % 4


def _shown_size(frame) -> tuple[int, int]:
    return (frame.width, frame.height) if _quarter_turns(frame) % 2 else (frame.height, frame.width)


def _picture(frame, size: tuple[int, int] | None) -> torch.Tensor:
    """(H, W, 3) uint8 as the picture is meant to be shown (phones store portrait video sideways plus a rotation),
    scaled by FFmpeg to cover ``size`` and center-cropped when ``size`` is given."""
    turns = _quarter_turns(frame)
    h, w = _shown_size(frame)
    if size is None or (h, w) == size:
        array = frame.to_ndarray(format="rgb24")
    else:
        new_h, new_w = _cover_size(h, w, *size)
        coded_h, coded_w = (new_w, new_h) if turns % 2 else (new_h, new_w)
        interpolation = "AREA" if new_h < h else "BICUBIC"
        array = frame.to_ndarray(format="rgb24", width=coded_w, height=coded_h, interpolation=interpolation)
    picture = torch.from_numpy(array)
    if turns:
        picture = torch.rot90(picture, turns, dims=(0, 1))
    if size is not None:
        top, left = (picture.shape[0] - size[0]) // 2, (picture.shape[1] - size[1]) // 2
        picture = picture[top : top + size[0], left : left + size[1]]
    return picture.contiguous()
