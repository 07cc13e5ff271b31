"""Conversion between media clips and ComfyUI's AUDIO and VIDEO types."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import InputError
from .clips import AudioClip, VideoClip
from .conform import resample_fps, resize_center_crop
from .validation import _check_frames, _check_rate, _check_waveform, _describe
from .video_reader import read_video


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


def from_comfy_video(
    video, fps: float | None = None, size: tuple[int, int] | None = None, duration: float | None = None
) -> VideoClip:
    """A ComfyUI VIDEO object (anything with ``get_components()``: images, frame_rate, audio) -> VideoClip at
    ``fps`` and ``size`` (H, W) when given. One backed by a file (Load Video's: ``get_stream_source()`` gives its
    path) is decoded here by presentation timestamps and resized while decoding, at most ``duration`` seconds of it;
    ComfyUI's own decoding would place a variable-rate file's frames at its average rate and hold them at full size.
    Frames already in memory have only their one frame rate to go by."""
    if not callable(getattr(video, "get_components", None)):
        raise InputError(f"VIDEO must be a ComfyUI video object with get_components(); got {type(video).__name__}")
    source = file_source(video)
    if source is not None:
        return read_video(source, fps=fps, size=size, duration=duration)
    parts = video.get_components()
    audio = from_comfy_audio(parts.audio) if getattr(parts, "audio", None) is not None else None
    frames, frame_rate = _check_frames(parts.images, "VIDEO images").float(), float(parts.frame_rate)
    if fps is not None:
        frames, frame_rate = resample_fps(frames, frame_rate, fps), fps
    if size is not None:
        frames = resize_center_crop(frames, *size)
    return VideoClip(frames, frame_rate, audio)


def file_source(video) -> Path | None:
    """The file a ComfyUI VIDEO reads from (Load Video's ``VideoFromFile``), or None for frames held in memory."""
    source = video.get_stream_source() if callable(getattr(video, "get_stream_source", None)) else None
    return Path(source) if isinstance(source, (str, os.PathLike)) and Path(source).is_file() else None
