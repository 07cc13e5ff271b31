"""Conversion between media clips and ComfyUI's AUDIO and VIDEO types."""

from __future__ import annotations

import torch

from ..errors import InputError
from .clips import AudioClip, VideoClip
from .validation import _check_frames, _check_rate, _check_waveform, _describe


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
