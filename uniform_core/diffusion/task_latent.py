"""Task latents: the audio-video latent pair of one task, and the flat layout the samplers work on.

The samplers see one vector per item, ``pack(video, audio)`` = [video entries | audio entries]. The task decides
which entries are the clean condition (paper III-A): T2AV keeps none, A2V keeps the audio entries, V2A the video
entries. Kept entries are never noised: their noise is zero at every step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .. import checks
from ..errors import InputError
from ..tasks import AUDIO_STEPS_PER_LATENT_FRAME, generates_audio, generates_video, task_index


def _item_shape(shape, ndim: int, name: str) -> tuple[int, ...]:
    """Per-item shape from ``shape`` given with ([B, ...]) or without the batch dimension."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == ndim + 1:
        shape = shape[1:]
    if len(shape) != ndim:
        raise InputError(f"{name} must have {ndim} dims per item (optionally with a batch dim first); got {shape}")
    return shape


def pack(video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """video [B, Cv, T, H, W] and audio [B, Ca, L, F] -> x [B, D], D = Cv*T*H*W + Ca*L*F (video first)."""
    if video.ndim != 5 or audio.ndim != 4:
        raise InputError(
            f"pack needs video [B,C,T,H,W] and audio [B,C,L,F]; got {tuple(video.shape)} and {tuple(audio.shape)}"
        )
    if video.shape[0] != audio.shape[0]:
        raise InputError(f"video and audio batch sizes differ: {video.shape[0]} vs {audio.shape[0]}")
    # (b c t h w) and (b c l f) flattened per item; flatten, not einops: the sampler packs twice a step
    return torch.cat([video.flatten(1), audio.flatten(1)], dim=1)


def unpack(x: torch.Tensor, video_shape, audio_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, D] -> (video [B, *video_shape], audio [B, *audio_shape]); the inverse of :func:`pack`.

    Shapes may be given with or without the batch dim; the batch is taken from ``x``.
    """
    video_shape = _item_shape(video_shape, 4, "video_shape")
    audio_shape = _item_shape(audio_shape, 3, "audio_shape")
    n_video, n_audio = math.prod(video_shape), math.prod(audio_shape)
    if x.ndim != 2 or x.shape[1] != n_video + n_audio:
        raise InputError(
            f"x must be [B, {n_video + n_audio}] for video {video_shape} + audio {audio_shape}; got {tuple(x.shape)}"
        )
    return x[:, :n_video].reshape(-1, *video_shape), x[:, n_video:].reshape(-1, *audio_shape)


def keep_mask(task: str, video_shape, audio_shape) -> torch.Tensor:
    """[D] bool over the packed layout: True where ``task`` keeps the clean condition (A2V: audio, V2A: video)."""
    video_shape = _item_shape(video_shape, 4, "video_shape")
    audio_shape = _item_shape(audio_shape, 3, "audio_shape")
    keep_video = torch.full((math.prod(video_shape),), not generates_video(task), dtype=torch.bool)
    keep_audio = torch.full((math.prod(audio_shape),), not generates_audio(task), dtype=torch.bool)
    return torch.cat([keep_video, keep_audio])


def _positive(name: str, value, kind=(int, float)) -> None:
    if kind is int:
        checks.integer(value, name, 1)
    else:
        checks.number(value, name, 0.0, above=True)


@dataclass(frozen=True, eq=False)
class TaskLatent:
    """One task's latents plus the timing decoders need, so no stage downstream asks the user again.

    video: [B, 4, T, H/8, W/8] and audio: [B, 8, 5T, F] hold the clean condition for the conditioning modality
    and zeros for the generated one (until :meth:`with_latents` fills in the sampler's result). fps: video frame
    rate; num_frames: pixel frames; sample_rate: Hz; duration: seconds; height, width: pixels.
    """

    task: str
    video: torch.Tensor
    audio: torch.Tensor
    fps: float
    num_frames: int
    sample_rate: int
    duration: float
    height: int
    width: int

    def __post_init__(self):
        task_index(self.task)
        if not isinstance(self.video, torch.Tensor) or self.video.ndim != 5:
            raise InputError(
                f"TaskLatent video must be a [B,C,T,H,W] tensor; got {getattr(self.video, 'shape', self.video)!r}"
            )
        if not isinstance(self.audio, torch.Tensor) or self.audio.ndim != 4:
            raise InputError(
                f"TaskLatent audio must be a [B,C,L,F] tensor; got {getattr(self.audio, 'shape', self.audio)!r}"
            )
        if self.video.shape[0] != self.audio.shape[0]:
            raise InputError(
                f"TaskLatent video and audio batch sizes differ: {self.video.shape[0]} vs {self.audio.shape[0]}"
            )
        frames, steps = self.video.shape[2], self.audio.shape[2]
        if steps != AUDIO_STEPS_PER_LATENT_FRAME * frames:
            raise InputError(
                f"TaskLatent audio must have {AUDIO_STEPS_PER_LATENT_FRAME} latent steps per video latent frame "
                f"({AUDIO_STEPS_PER_LATENT_FRAME * frames} for {frames} frames); got {steps}"
            )
        _positive("fps", self.fps)
        _positive("num_frames", self.num_frames, int)
        _positive("sample_rate", self.sample_rate, int)
        _positive("duration", self.duration)
        _positive("height", self.height, int)
        _positive("width", self.width, int)

    @property
    def batch_size(self) -> int:
        return self.video.shape[0]

    def generated_mask(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(video [1,1,1,1,1], audio [1,1,1,1]) float: 1 where the task generates that modality, 0 if it is kept.

        Broadcasts against the modality's latent, e.g. as ``generated_mask`` of ``NoiseSchedule.training_loss``.
        """
        kw = {"dtype": torch.float32, "device": self.video.device}
        return (
            torch.full((1, 1, 1, 1, 1), float(generates_video(self.task)), **kw),
            torch.full((1, 1, 1, 1), float(generates_audio(self.task)), **kw),
        )

    def pack(self) -> torch.Tensor:
        """The clean latents in the sampler layout, [B, D]."""
        return pack(self.video, self.audio)

    def keep_mask(self) -> torch.Tensor:
        """[D] bool, True on the entries this task keeps clean."""
        return keep_mask(self.task, self.video.shape, self.audio.shape).to(self.video.device)

    def unpack(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, D] -> (video, audio) shaped like this latent's."""
        return unpack(x, self.video.shape, self.audio.shape)

    def with_latents(self, video: torch.Tensor, audio: torch.Tensor) -> TaskLatent:
        """A copy holding new latents of the same per-item shapes (e.g. the sampler's output)."""
        if video.shape[1:] != self.video.shape[1:] or audio.shape[1:] != self.audio.shape[1:]:
            raise InputError(
                f"with_latents needs video [*, {', '.join(map(str, self.video.shape[1:]))}] and audio "
                f"[*, {', '.join(map(str, self.audio.shape[1:]))}]; got {tuple(video.shape)} and {tuple(audio.shape)}"
            )
        return dataclasses.replace(self, video=video, audio=audio)
