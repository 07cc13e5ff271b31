"""Decoding video files to frames.

Output frame ``k`` shows what is on screen at ``start + k / fps`` by the frames' presentation timestamps, so a
variable-frame-rate file keeps its timing; frames are scaled to the requested size by FFmpeg as they are decoded,
so a large file never sits in memory at full size.
"""

from __future__ import annotations

import math
import os

import av
import torch

from ..errors import InputError
from .audio_reader import _read_audio_file
from .clips import VideoClip
from .conform import _EPS, _cover_size
from .probe import _open, _stream_origin, _video_stream
from .validation import _check_file, _check_fps, _check_window, _is_pos_int


def read_video(
    path: str | os.PathLike,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    start: float = 0.0,
    duration: float | None = None,
    with_audio: bool = True,
) -> VideoClip:
    """Decode ``path`` to frames (T, H, W, 3) float32 in [0, 1].

    ``fps``: output frame ``k`` shows what is on screen at ``start + k / fps`` (by the frames' real timestamps);
    None keeps the file's frames. ``size=(H, W)`` scales the short side to cover H x W and center-crops.
    ``start`` / ``duration`` (seconds) pick a window. The file's audio over the same window comes along as
    ``VideoClip.audio`` (at its own sample rate) when ``with_audio`` and the file has an audio stream.
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
        try:
            frames, out_fps, origin = _decode_video(c, stream, fps, size, start, duration)
        except av.error.FFmpegError as e:
            raise InputError(f"video {str(p)!r} could not be decoded ({e})") from e
    if not frames:
        raise InputError(f"video {str(p)!r} has no frames from start={start:g} s on")
    video = torch.stack(frames).float().div_(255)
    audio = None
    if with_audio and has_audio:
        audio = _read_audio_file(p, start, video.shape[0] / out_fps, origin)
    return VideoClip(video, out_fps, audio)


def _decode_video(c, stream, fps, size, start, duration):
    """Upright (H, W, 3) uint8 frames in the window (already resized when ``size`` is set), the output fps, and the
    stream's time origin in seconds."""
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate
    frame_dur = float(1 / rate) if rate else 0.0
    origin = _stream_origin(stream)
    if start > 1.0 and origin is not None:
        c.seek(int((start + origin - 1.0) / stream.time_base), stream=stream, backward=True)
    end = math.inf if duration is None else start + duration
    out = []
    k, prev, prev_t, index = 0, None, None, 0  # prev: [frame, its picture once converted]

    def prev_picture():
        if prev[1] is None:  # converted only when shown: frames dropped by a lower fps cost no conversion
            prev[1] = _picture(prev[0], size)
        return prev[1]

    for frame in c.decode(stream):
        if origin is None:
            origin = float(frame.time) if frame.time is not None else 0.0
        t = float(frame.time) - origin if frame.time is not None else index * frame_dur
        index += 1
        if fps is None:
            if t >= end - _EPS:
                break
            if t >= start - _EPS:
                out.append(_picture(frame, size))
            continue
        # every output time before this frame starts shows the previous frame (or this one, if none came earlier)
        while prev is not None and (tk := start + k / fps) < end - _EPS and t > tk + _EPS:
            out.append(prev_picture())
            k += 1
        if start + k / fps >= end - _EPS:
            prev = None
            break
        prev, prev_t = [frame, None], t
    if fps is not None and prev is not None:
        stop = min(end, prev_t + max(frame_dur, _EPS))
        while start + k / fps < stop - _EPS:
            out.append(prev_picture())
            k += 1
    if fps is None:
        fps = float(rate) if rate else (len(out) / duration if duration else 1.0)
    return out, fps, origin or 0.0


def _picture(frame, size: tuple[int, int] | None) -> torch.Tensor:
    """(H, W, 3) uint8 as the picture is meant to be shown (phones store portrait video sideways plus a rotation),
    scaled by FFmpeg to cover ``size`` and center-cropped when ``size`` is given."""
    turns = round(getattr(frame, "rotation", 0) / 90) % 4  # counterclockwise quarter turns
    h, w = (frame.width, frame.height) if turns % 2 else (frame.height, frame.width)  # as shown
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
