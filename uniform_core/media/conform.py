"""Conforming frames and waveforms to what the model needs: frame rate, picture size, sample rate, channels and
length. Every change ``conform_video`` / ``conform_audio`` make is described in the returned notes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from ..errors import InputError
from .validation import _check_fps, _check_frames, _check_rate, _check_waveform, _is_pos_int

_EPS = 1e-6  # seconds; absorbs float error when a frame time equals an output time exactly


def _seconds(x: float) -> str:
    return f"{round(x, 3):g} s"


def _cover_size(h: int, w: int, height: int, width: int) -> tuple[int, int]:
    """The size an (h, w) picture is scaled to so that it covers (height, width) with its aspect ratio kept."""
    scale = max(height / h, width / w)
    return max(height, round(h * scale)), max(width, round(w * scale))


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
