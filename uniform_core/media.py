"""Reading and writing video and audio with PyAV, and conforming them to what the model needs.

Time is counted in seconds from the first frame of the stream that is read. Resampling a video to another frame
rate picks, for output frame ``k`` at time ``k / fps``, the source frame that is on screen at that time (the last
one whose real timestamp is not later), so motion keeps its speed and audio stays in sync. Every change that
``conform_video`` / ``conform_audio`` make is described in the returned notes, never done silently.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from .errors import InputError

logger = logging.getLogger(__name__)

AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
_EPS = 1e-6  # seconds; absorbs float error when a frame time equals an output time exactly
_SAMPLE_SCALE = {"s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63, "flt": 1.0, "dbl": 1.0}


@dataclass
class AudioClip:
    """``waveform``: (C, N) float32 in [-1, 1]; ``sample_rate`` in Hz."""

    waveform: torch.Tensor
    sample_rate: int

    def __post_init__(self):
        if not isinstance(self.waveform, torch.Tensor) or self.waveform.dim() != 2:
            raise InputError(
                f"AudioClip.waveform must be a (channels, samples) tensor; got {_describe(self.waveform)}"
            )
        self.sample_rate = _check_rate(self.sample_rate, "AudioClip.sample_rate")

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.waveform.shape[-1] / self.sample_rate


@dataclass
class VideoClip:
    """``frames``: (T, H, W, 3) float32 in [0, 1] (ComfyUI IMAGE); ``fps`` frames per second; optional audio."""

    frames: torch.Tensor
    fps: float
    audio: AudioClip | None = None

    def __post_init__(self):
        _check_frames(self.frames, "VideoClip.frames")
        self.fps = _check_fps(self.fps, "VideoClip.fps")

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def duration(self) -> float:
        """Seconds (frames / fps)."""
        return self.num_frames / self.fps


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds, read from the container headers without decoding. Unknown values are None."""

    path: Path
    has_video: bool
    has_audio: bool
    duration: float | None  # seconds
    fps: float | None
    num_frames: int | None
    width: int | None
    height: int | None
    sample_rate: int | None
    channels: int | None
    audio_samples: int | None
    video_codec: str | None = None
    audio_codec: str | None = None


# ---- input checks ----------------------------------------------------------------------------------------------


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} ({x.dtype})"
    return type(x).__name__


def _check_fps(fps, name: str) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"{name} must be a positive number of frames per second; got {fps!r}")
    return float(fps)


def _check_rate(rate, name: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise InputError(f"{name} must be a positive whole number of Hz; got {rate!r}")
    if rate != int(rate):
        raise InputError(f"{name} must be a whole number of Hz; got {rate!r}")
    return int(rate)


def _check_frames(frames, name: str) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[-1] != 3:
        raise InputError(f"{name} must be a (T, H, W, 3) tensor (ComfyUI IMAGE); got {_describe(frames)}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise InputError(f"{name} is empty: shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise InputError(f"{name} must be float in [0, 1] or uint8; got {frames.dtype}")
    if frames.is_floating_point() and not torch.isfinite(frames).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return frames


def _check_waveform(waveform, name: str) -> torch.Tensor:
    """(C, N) float, non-empty and finite; a 1-D tensor is taken as mono."""
    if not isinstance(waveform, torch.Tensor) or waveform.dim() not in (1, 2):
        raise InputError(f"{name} must be a (channels, samples) tensor; got {_describe(waveform)}")
    if not waveform.is_floating_point():
        raise InputError(f"{name} must be float in [-1, 1]; got {waveform.dtype}")
    waveform = waveform if waveform.dim() == 2 else waveform.unsqueeze(0)
    if waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise InputError(f"{name} is zero-length: shape {tuple(waveform.shape)}; audio needs at least one sample")
    if not torch.isfinite(waveform).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return waveform


def _check_file(path, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{what} must be a file path; got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} file not found: {str(p)!r}")
    if p.stat().st_size == 0:
        raise InputError(f"{what} file is empty (0 bytes): {str(p)!r}")
    return p


def _video_stream(c):
    """The first real video stream; cover art embedded in audio files (mp3, m4a) is not one."""
    cover = getattr(getattr(av.stream, "Disposition", None), "attached_pic", 0)
    return next((s for s in c.streams.video if not (cover and s.disposition & cover)), None)


def _open(p: Path, what: str):
    try:
        return av.open(str(p))
    except av.error.FFmpegError as e:
        raise InputError(f"{what} {str(p)!r} is not a media file FFmpeg can read ({e})") from e


def _seconds(x: float) -> str:
    return f"{round(x, 2):g} s"


# ---- probing ---------------------------------------------------------------------------------------------------


def probe(path: str | os.PathLike) -> MediaInfo:
    """Describe a video or audio file from its headers (nothing is decoded)."""
    p = _check_file(path, "media")
    with _open(p, "media") as c:
        v = _video_stream(c)
        a = c.streams.audio[0] if c.streams.audio else None
        durations = [float(s.duration * s.time_base) for s in (v, a) if s is not None and s.duration]
        duration = c.duration / av.time_base if c.duration else (max(durations) if durations else None)
        fps = float(v.average_rate or v.guessed_rate) if v is not None and (v.average_rate or v.guessed_rate) else None
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


# ---- reading ---------------------------------------------------------------------------------------------------


def _check_window(start, duration) -> tuple[float, float | None]:
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start) or start < 0:
        raise InputError(f"start must be a number of seconds >= 0; got {start!r}")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0
    ):
        raise InputError(f"duration must be a positive number of seconds or None (to the end); got {duration!r}")
    return float(start), None if duration is None else float(duration)


def _stream_origin(stream) -> float | None:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else None


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


def _is_pos_int(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, np.integer)) and x > 0


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


def _cover_size(h: int, w: int, height: int, width: int) -> tuple[int, int]:
    """The size an (h, w) picture is scaled to so that it covers (height, width) with its aspect ratio kept."""
    scale = max(height / h, width / w)
    return max(height, round(h * scale)), max(width, round(w * scale))


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


def read_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    mono: bool = False,
    start: float = 0.0,
    duration: float | None = None,
) -> AudioClip:
    """Decode the first audio stream of ``path`` (an audio file, or a video file's sound) to (C, N) float32 in
    [-1, 1]. ``sample_rate`` resamples (None keeps the file's rate); ``mono`` averages the channels;
    ``start`` / ``duration`` (seconds) pick a window."""
    p = _check_file(path, "audio")
    start, duration = _check_window(start, duration)
    if sample_rate is not None:
        sample_rate = _check_rate(sample_rate, "sample_rate")
    clip = _read_audio_file(p, start, duration, None)
    waveform = clip.waveform
    if mono:
        waveform = to_mono(waveform)
    if sample_rate is not None and sample_rate != clip.sample_rate:
        waveform = resample_audio(waveform, clip.sample_rate, sample_rate)
    return AudioClip(waveform, sample_rate or clip.sample_rate)


def _read_audio_file(p: Path, start: float, duration: float | None, origin: float | None) -> AudioClip:
    """Samples of ``p``'s audio from ``start`` s for ``duration`` s, with time measured from ``origin`` (the
    video's first frame when read along with a video; the audio's own first sample when None)."""
    with _open(p, "audio") as c:
        if not c.streams.audio:
            raise InputError(f"audio {str(p)!r} has no audio stream; pass a file with sound (wav, flac, mp3, m4a...)")
        stream = c.streams.audio[0]
        stream.thread_type = "AUTO"
        if origin is None:
            origin = _stream_origin(stream)
        sought = start > 1.0 and origin is not None
        if sought:
            c.seek(int((start + origin - 1.0) / stream.time_base), stream=stream, backward=True)
        chunks, first_t, rate, last_samples, have = [], None, stream.rate, 0, 0
        end = math.inf if duration is None else start + duration
        try:
            for frame in c.decode(stream):
                if first_t is None:
                    first_t = float(frame.time) if frame.time is not None else (origin or 0.0)
                    rate = frame.sample_rate
                    origin = first_t if origin is None else origin
                if first_t - origin + have / rate > end:
                    break
                chunks.append(_frame_to_float(frame))
                last_samples = frame.samples
                have += frame.samples
        except av.error.FFmpegError as e:
            raise InputError(f"audio {str(p)!r} could not be decoded ({e})") from e
        total = round(stream.duration * stream.time_base * rate) if stream.duration and rate else None
    if not chunks or sum(x.shape[1] for x in chunks) == 0:
        raise InputError(f"audio {str(p)!r} is zero-length: its audio stream has no samples")
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1))
    if not sought and total is not None and 0 < waveform.shape[1] - total <= last_samples:
        waveform = waveform[:, :total]  # drop the encoder's padding of the last frame (AAC: up to 1024 samples)
    # place the first decoded sample on the timeline, then cut the window
    offset = round((first_t - origin - start) * rate)
    if offset > 0:
        waveform = F.pad(waveform, (offset, 0))
    elif offset < 0:
        waveform = waveform[:, -offset:]
    if duration is not None:
        waveform = waveform[:, : round(duration * rate)]
    if waveform.shape[1] == 0:
        raise InputError(f"audio {str(p)!r} has no samples from start={start:g} s on")
    return AudioClip(waveform.contiguous(), rate)


def _frame_to_float(frame) -> np.ndarray:
    """(C, n) float32 in [-1, 1] from any PyAV sample format, planar or packed."""
    channels = len(frame.layout.channels)
    array = frame.to_ndarray()
    if not frame.format.is_planar:
        array = array.reshape(-1, channels).T
    name = frame.format.name.rstrip("p")
    if name == "u8":
        return (array.astype(np.float32) - 128.0) / 128.0
    if name not in _SAMPLE_SCALE:
        raise InputError(f"audio sample format {frame.format.name!r} is not supported")
    return (array.astype(np.float32) / np.float32(_SAMPLE_SCALE[name])).astype(np.float32, copy=False)


# ---- transforms ------------------------------------------------------------------------------------------------


def resample_audio(waveform: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """(C, N) at ``from_rate`` Hz -> (C, ceil(N * to_rate / from_rate)) at ``to_rate`` Hz (band-limited sinc)."""
    waveform = _check_waveform(waveform, "waveform")
    from_rate, to_rate = _check_rate(from_rate, "from_rate"), _check_rate(to_rate, "to_rate")
    if from_rate == to_rate:
        return waveform
    return AF.resample(waveform.float(), from_rate, to_rate)


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """(C, N) with any number of channels -> (1, N), the mean of the channels."""
    waveform = _check_waveform(waveform, "waveform")
    return waveform.mean(dim=0, keepdim=True)


def resize_center_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(T, H, W, 3) -> (T, height, width, 3) float32: scale so the picture covers the target (short side first,
    aspect kept, antialiased bilinear), then cut the middle."""
    frames = _check_frames(frames, "frames")
    if not (_is_pos_int(height) and _is_pos_int(width)):
        raise InputError(f"height and width must be positive pixel counts; got {height!r} x {width!r}")
    frames = frames.float().div_(255) if frames.dtype == torch.uint8 else frames.float()
    h, w = frames.shape[1:3]
    if (h, w) == (height, width):
        return frames
    new_h, new_w = _cover_size(h, w, height, width)
    if (new_h, new_w) != (h, w):
        x = frames.permute(0, 3, 1, 2)  # (T, 3, H, W) for interpolate
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        frames = x.clamp_(0, 1).permute(0, 2, 3, 1)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return frames[:, top : top + height, left : left + width].contiguous()


def resample_fps(frames: torch.Tensor, from_fps: float, to_fps: float) -> torch.Tensor:
    """Frames at ``from_fps`` -> frames at ``to_fps`` covering the same time: output frame ``k`` is the source frame
    on screen at ``k / to_fps``, i.e. index ``floor(k * from_fps / to_fps)``."""
    frames = _check_frames(frames, "frames")
    from_fps, to_fps = _check_fps(from_fps, "from_fps"), _check_fps(to_fps, "to_fps")
    if from_fps == to_fps:
        return frames
    count = max(1, math.ceil(frames.shape[0] * to_fps / from_fps - _EPS))
    index = torch.floor(torch.arange(count, dtype=torch.float64) * (from_fps / to_fps) + _EPS).long()
    return frames[index.clamp_(max=frames.shape[0] - 1)]


# ---- conforming to the model -----------------------------------------------------------------------------------


def conform_video(
    frames: torch.Tensor,
    fps: float,
    target_fps: float,
    num_frames: int,
    height: int,
    width: int,
    min_frames: int = 2,
) -> tuple[torch.Tensor, list[str]]:
    """Frames (T, H, W, 3) at ``fps`` -> exactly (num_frames, height, width, 3) float32 at ``target_fps``:
    time-resampled, resized + center-cropped, then trimmed or padded by repeating the last frame.
    Returns the frames and one human-readable note per change. Fewer than ``min_frames`` input frames is an error."""
    frames = _check_frames(frames, "video frames")
    fps, target_fps = _check_fps(fps, "video fps"), _check_fps(target_fps, "target fps")
    if not _is_pos_int(num_frames):
        raise InputError(f"num_frames must be a positive whole number; got {num_frames!r}")
    if frames.shape[0] < min_frames:
        raise InputError(
            f"video has {frames.shape[0]} frame(s); at least {min_frames} are needed (a still image is not a video)"
        )
    notes = []
    t, h, w = frames.shape[:3]
    if fps != target_fps:
        frames = resample_fps(frames, fps, target_fps)
        notes.append(f"video resampled {fps:g} -> {target_fps:g} fps ({t} -> {frames.shape[0]} frames)")
    if (h, w) != (height, width):
        frames = resize_center_crop(frames, height, width)
        notes.append(f"video resized from {w}x{h} to {width}x{height} (short side scaled, center-cropped)")
    frames = frames.float().div_(255) if frames.dtype == torch.uint8 else frames.float()
    have, want = frames.shape[0] / target_fps, num_frames / target_fps
    if frames.shape[0] > num_frames:
        notes.append(
            f"video trimmed from {_seconds(have)} to {_seconds(want)} ({frames.shape[0]} -> {num_frames} frames)"
        )
        frames = frames[:num_frames]
    elif frames.shape[0] < num_frames:
        notes.append(
            f"video padded from {_seconds(have)} to {_seconds(want)} by holding the last frame "
            f"for {num_frames - frames.shape[0]} frames"
        )
        frames = torch.cat([frames, frames[-1:].expand(num_frames - frames.shape[0], -1, -1, -1)])
    return frames.contiguous(), notes


def conform_audio(
    waveform: torch.Tensor, sample_rate: int, target_rate: int, num_samples: int
) -> tuple[torch.Tensor, list[str]]:
    """Waveform (C, N) at ``sample_rate`` -> exactly (num_samples,) mono float32 at ``target_rate``: down-mixed
    (mean of channels), resampled, then trimmed or padded with silence. Returns it and one note per change."""
    waveform = _check_waveform(waveform, "audio waveform")
    sample_rate, target_rate = _check_rate(sample_rate, "audio sample_rate"), _check_rate(target_rate, "target rate")
    if not _is_pos_int(num_samples):
        raise InputError(f"num_samples must be a positive whole number; got {num_samples!r}")
    notes = []
    if waveform.shape[0] > 1:
        notes.append(f"audio down-mixed from {waveform.shape[0]} channels to mono")
        waveform = to_mono(waveform)
    if sample_rate != target_rate:
        waveform = resample_audio(waveform, sample_rate, target_rate)
        notes.append(f"audio resampled {sample_rate} -> {target_rate} Hz")
    mono = waveform[0].float()
    have, want = mono.shape[0] / target_rate, num_samples / target_rate
    if mono.shape[0] > num_samples:
        notes.append(f"audio trimmed from {_seconds(have)} to {_seconds(want)}")
        mono = mono[:num_samples]
    elif mono.shape[0] < num_samples:
        notes.append(f"audio padded from {_seconds(have)} to {_seconds(want)} with {_seconds(want - have)} of silence")
        mono = F.pad(mono, (0, num_samples - mono.shape[0]))
    return mono.contiguous(), notes


# ---- writing ---------------------------------------------------------------------------------------------------


def write_mp4(
    path: str | os.PathLike,
    frames: torch.Tensor,
    fps: float,
    audio: AudioClip | None = None,
    crf: int = 18,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write frames (T, H, W, 3) float in [0, 1] or uint8 at ``fps`` as H.264 (yuv420p) MP4, with ``audio`` as
    AAC trimmed or padded to exactly T / fps seconds. H and W must be even (yuv420p). The file appears at
    ``path`` only when complete. ``metadata``: container tags (ComfyUI stores its prompt and workflow JSON this
    way, so dropping the file on the canvas restores the graph). Returns the path."""
    frames = _check_frames(frames, "frames").detach().cpu()
    fps = _check_fps(fps, "fps")
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise InputError(f"crf must be a whole number from 0 (lossless) to 51 (worst); got {crf!r}")
    t, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        raise InputError(f"frames size {w}x{h} (width x height) must be even on both sides for H.264 yuv420p")
    if audio is not None and not isinstance(audio, AudioClip):
        raise InputError(f"audio must be an AudioClip or None; got {type(audio).__name__}")
    samples = _mp4_audio(audio, t / fps) if audio is not None else None
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"path must be a file path; got {type(path).__name__}")
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"path {str(path)!r} is a folder; give the MP4 file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".mp4", prefix=f".{path.stem}-", dir=path.parent)
    os.close(fd)
    try:
        _mux(tmp, frames, fps, samples, crf, metadata or {})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _mp4_audio(audio: AudioClip, seconds: float) -> tuple[np.ndarray, int]:
    """(C, n) float32 at an AAC rate, C in (1, 2), with exactly ``seconds`` of samples."""
    waveform = _check_waveform(audio.waveform, "audio waveform").detach().cpu().float()
    rate = audio.sample_rate
    if waveform.shape[0] > 2:
        logger.info("audio down-mixed from %d channels to mono for AAC", waveform.shape[0])
        waveform = to_mono(waveform)
    if rate not in AAC_SAMPLE_RATES:
        new = next((r for r in AAC_SAMPLE_RATES if r >= rate), AAC_SAMPLE_RATES[-1])
        logger.info("audio resampled %d -> %d Hz for AAC", rate, new)
        waveform, rate = resample_audio(waveform, rate, new), new
    n = round(seconds * rate)
    if abs(waveform.shape[1] - n) > rate // 100:
        verb = "trimmed" if waveform.shape[1] > n else "padded with silence"
        logger.info(
            "audio %s from %s to %s to match the video", verb, _seconds(waveform.shape[1] / rate), _seconds(n / rate)
        )
    waveform = waveform[:, :n] if waveform.shape[1] >= n else F.pad(waveform, (0, n - waveform.shape[1]))
    return waveform.clamp(-1, 1).contiguous().numpy(), rate


def _mux(path: str, frames: torch.Tensor, fps: float, audio: tuple[np.ndarray, int] | None, crf: int, metadata: dict):
    rate = Fraction(fps).limit_denominator(1001)
    # use_metadata_tags keeps custom keys (the MP4 muxer otherwise drops all but a few standard ones)
    with av.open(path, "w", format="mp4", options={"movflags": "+faststart+use_metadata_tags"}) as c:
        c.metadata.update(metadata)
        v = c.add_stream("libx264", rate=rate, options={"crf": str(crf)})
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        a = None
        if audio is not None:
            a = c.add_stream("aac", rate=audio[1])
            a.layout = "mono" if audio[0].shape[0] == 1 else "stereo"
        for i in range(frames.shape[0]):
            f = frames[i]
            pixels = f if f.dtype == torch.uint8 else (f.float().clamp(0, 1) * 255).round().to(torch.uint8)
            frame = av.VideoFrame.from_ndarray(pixels.contiguous().numpy(), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            c.mux(v.encode(frame))
        c.mux(v.encode())
        if a is not None:
            samples, sr = audio
            for s in range(0, samples.shape[1], 1024):  # AAC frame size
                frame = av.AudioFrame.from_ndarray(samples[:, s : s + 1024], format="fltp", layout=a.layout.name)
                frame.sample_rate, frame.pts, frame.time_base = sr, s, Fraction(1, sr)
                c.mux(a.encode(frame))
            c.mux(a.encode())


# ---- ComfyUI interop -------------------------------------------------------------------------------------------


def to_comfy_audio(clip: AudioClip) -> dict:
    """AudioClip -> ComfyUI AUDIO ``{"waveform": (1, C, N), "sample_rate": int}``."""
    if not isinstance(clip, AudioClip):
        raise InputError(f"expected an AudioClip; got {type(clip).__name__}")
    return {"waveform": clip.waveform.unsqueeze(0), "sample_rate": int(clip.sample_rate)}


def from_comfy_audio(audio: dict) -> AudioClip:
    """ComfyUI AUDIO ``{"waveform": (1, C, N) or (C, N), "sample_rate": int}`` -> AudioClip."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        got = sorted(audio) if isinstance(audio, dict) else type(audio).__name__
        raise InputError(f"AUDIO must be a dict with 'waveform' and 'sample_rate'; got {got}")
    waveform = audio["waveform"]
    if isinstance(waveform, torch.Tensor) and waveform.dim() == 3:
        if waveform.shape[0] != 1:
            raise InputError(f"AUDIO holds a batch of {waveform.shape[0]} clips; one clip (batch 1) is expected")
        waveform = waveform[0]
    if not isinstance(waveform, torch.Tensor) or waveform.dim() != 2:
        raise InputError(f"AUDIO waveform must be (1, C, N) or (C, N); got {_describe(waveform)}")
    waveform = _check_waveform(waveform, "AUDIO waveform")
    return AudioClip(waveform.float(), _check_rate(audio["sample_rate"], "AUDIO sample_rate"))


def from_comfy_video(video) -> VideoClip:
    """A ComfyUI VIDEO object (anything with ``get_components()``: images, frame_rate, audio) -> VideoClip."""
    if not callable(getattr(video, "get_components", None)):
        raise InputError(f"VIDEO must be a ComfyUI video object with get_components(); got {type(video).__name__}")
    parts = video.get_components()
    audio = from_comfy_audio(parts.audio) if getattr(parts, "audio", None) is not None else None
    return VideoClip(_check_frames(parts.images, "VIDEO images").float(), float(parts.frame_rate), audio)
