"""The clip types media functions pass around: video frames with their rate, audio with its rate, and what a
file holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError
from .validation import _check_fps, _check_frames, _check_rate, _describe


@dataclass
class AudioClip:
    """``waveform``: (C, N) float32 in [-1, 1]; ``sample_rate`` in Hz; ``notes``: what reading the file found wrong
    with it (e.g. truncated), for the caller to pass on."""

    waveform: torch.Tensor
    sample_rate: int
    notes: list[str] = field(default_factory=list)

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
    """``frames``: (T, H, W, 3) float32 in [0, 1] (ComfyUI IMAGE); ``fps`` frames per second; optional audio;
    ``notes`` as for AudioClip."""

    frames: torch.Tensor
    fps: float
    audio: AudioClip | None = None
    notes: list[str] = field(default_factory=list)

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
    fps: float | None  # the nominal rate read_video uses when given none (r_frame_rate)
    num_frames: int | None
    width: int | None
    height: int | None
    sample_rate: int | None
    channels: int | None
    audio_samples: int | None
    video_codec: str | None = None
    audio_codec: str | None = None
