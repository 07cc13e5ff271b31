"""One call per task: :class:`UniFormPipeline` chains the stages of :mod:`uniform_core.stages` (encode -> task
latent -> sample -> decode) and returns a :class:`GenerationResult` that saves each batch item as an MP4.

The stage functions and their types are re-exported here, so ``from uniform_core.pipeline import sample`` works.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checks, media, memory
from .bundle import Bundle, load_bundle
from .errors import InputError
from .model.compiled import compile_dit
from .offload import Offloader
from .precision import enable_tf32, part_dtype
from .stages import (
    AudioLatent,
    Cancel,
    Progress,
    SampleOutput,
    TextConditioning,
    VideoLatent,
    check_sampling_args,
    decode_audio,
    decode_video,
    encode_audio,
    encode_text,
    encode_video,
    make_task_latent,
    model_size,
    sample,
)
from .tasks import TASKS, VIDEO_FPS, generates_audio, generates_video

logger = logging.getLogger(__name__)


@dataclass
class GenerationResult:
    """What one ``generate`` call made; item ``i`` of the batch was made with ``seeds[i]``."""

    task: str
    frames: torch.Tensor  # (B, T, H, W, 3) float in [0, 1]
    fps: float
    waveform: torch.Tensor  # (B, 1, N) float at sample_rate
    sample_rate: int
    seeds: list[int]
    notes: list[str] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)  # input files by name, which no output may overwrite

    def save(self, path: str | os.PathLike, index: int = 0) -> Path:
        """Mux item ``index`` into an MP4 (H.264 + AAC) whose streams have the same duration. ``path`` must end in
        .mp4 and must not be one of the input files."""
        index = checks.index(index, len(self.seeds))
        path = checks.output_file(path, "path", inputs=self.sources)
        audio = media.AudioClip(self.waveform[index].float().cpu(), self.sample_rate)
        return media.write_mp4(path, self.frames[index].cpu(), self.fps, audio)


class UniFormPipeline:
    """DiT, video VAE, audio VAE + vocoder and text encoder, run as one ``generate`` call per task.

    With ``offload=True`` each component sits on the CPU (pinned on CUDA) and visits ``device`` when it runs
    (:mod:`uniform_core.offload`): one part at a time, so the text encoder and the VAEs are off the accelerator
    during sampling, or with ``offload_budget_mb`` as many recently used parts as fit in that much weight memory,
    so a second ``generate`` moves nothing when they all fit. ``precision`` (``uniform_core.precision``): the
    DiT's, and the other parts' by that module's rules; ``compile`` runs the DiT through ``torch.compile``.
    """

    def __init__(
        self,
        bundle: Bundle,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        offload: bool = False,
        compile: bool = False,
        offload_budget_mb: float | None = None,
    ):
        self.bundle = checks.instance(bundle, Bundle, "bundle", " (from load_bundle)")
        self.device = checks.device(device)
        self.offload = offload
        enable_tf32()
        for part, module in bundle.modules().items():
            module.to(dtype=part_dtype(part, precision, self.device)).eval().requires_grad_(False)
            if not offload:
                module.to(self.device)
        budget = None if offload_budget_mb is None else checks.number(offload_budget_mb, "offload_budget_mb", 0)
        parts = list(bundle.modules().values())
        self.offloader = (
            Offloader(parts, self.device, None if budget is None else int(budget * 2**20)) if offload else None
        )
        if compile:
            compile_dit(bundle.dit)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike | None = None, **kwargs) -> UniFormPipeline:
        """Load a bundle folder (``None`` = the embedded default ``uniform-tiny``)."""
        return cls(load_bundle(path), **kwargs)

    def _use(self, module: torch.nn.Module):
        """``module`` on the device for a ``with`` block (the offloader decides when it leaves)."""
        return contextlib.nullcontext(module) if self.offloader is None else self.offloader.use(module)

    def generate(
        self,
        task: str,
        prompt: str | None = None,
        video: str | os.PathLike | media.VideoClip | None = None,
        audio: str | os.PathLike | media.AudioClip | None = None,
        duration: int | None = None,
        seed: int = 0,
        steps: int = 30,
        cfg: float | None = None,
        sampler: str | None = None,
        negative_prompt: str = "",
        batch_size: int = 1,
        height: int | None = None,
        width: int | None = None,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        cfg_condition: float | None = None,
    ) -> GenerationResult:
        """Run ``task`` end to end. T2AV needs ``prompt``; A2V needs ``audio``; V2A needs ``video`` (file paths or
        clips); text is optional for A2V and V2A. ``cfg`` and ``sampler`` default to the bundle's
        (``bundle.cfg_for(task)``, ``bundle.sampler``), ``cfg_condition`` (guidance on the A2V/V2A condition) to
        the measured ``guidance.CONDITION_CFG[task]``. The conditioning modality is returned as given (conformed),
        the other one as generated. Every argument is checked before any work starts."""
        b = self.bundle
        checks.condition(task, video, audio)
        cfg = b.cfg_for(task) if cfg is None else cfg
        checks.cfg_condition(cfg_condition, task)
        sampler = b.sampler if sampler is None else sampler
        check_sampling_args(seed, steps, cfg, sampler, batch_size)
        if prompt is not None:
            checks.prompt(prompt, "prompt", required=task == "t2av")
        elif task == "t2av":
            raise InputError("task 't2av' (text to audio+video) needs a prompt; none was given")
        checks.prompt(negative_prompt, "negative_prompt")
        if duration is not None:
            checks.duration(duration)
        if task != "v2a":
            checks.size(b.height if height is None else height, b.width if width is None else width)
        sources = {
            name: Path(value)
            for name, value in (("video", video), ("audio", audio))
            if isinstance(value, (str, os.PathLike))
        }
        notes: list[str] = []
        text = None
        if prompt is not None and prompt.strip():
            with self._use(b.text_encoder):
                text = encode_text(b.text_encoder, prompt, negative_prompt)

        video_latent = audio_latent = None
        if task == "v2a":
            area = (
                b.height * b.width
            )  # without --height/--width, the input at its own aspect and the bundle's pixel count
            clip = (
                video if isinstance(video, media.VideoClip) else read_video_input(video, duration, height, width, area)
            )
            notes += clip.notes
            with self._use(b.video_vae):
                video_latent = encode_video(b.video_vae, clip.frames, clip.fps, duration, height, width, area)
            notes += video_latent.notes
        if task == "a2v":
            clip = audio if isinstance(audio, media.AudioClip) else media.read_audio(audio)
            with self._use(b.audio_codec):
                audio_latent = encode_audio(b.audio_codec, clip.waveform, clip.sample_rate, duration)
            notes += audio_latent.notes

        if task == "t2av" and duration is None:
            duration = b.duration
        latent = make_task_latent(
            task,
            duration=None if task != "t2av" else duration,
            height=None if task == "v2a" else (b.height if height is None else height),
            width=None if task == "v2a" else (b.width if width is None else width),
            video=video_latent,
            audio=audio_latent,
        )
        if generates_video(task):  # refused now rather than after sampling
            memory.check_decoding(b.video_vae, latent, batch_size, self.device)
        with self._use(b.dit):
            args = (b.dit, latent, text, seed, steps, cfg, sampler, batch_size, progress, cancel)
            out = sample(*args, cfg_condition=cfg_condition)

        if generates_video(task):
            with self._use(b.video_vae):
                frames, fps = decode_video(b.video_vae, out.latent)
        else:
            frames, fps = video_latent.frames.unsqueeze(0).expand(batch_size, -1, -1, -1, -1), video_latent.fps
        if generates_audio(task):
            with self._use(b.audio_codec):
                waveform, sample_rate = decode_audio(b.audio_codec, out.latent)
        else:
            waveform = audio_latent.waveform.view(1, 1, -1).expand(batch_size, -1, -1)
            sample_rate = audio_latent.sample_rate
        for note in notes:
            logger.info(note)
        return GenerationResult(task, frames, fps, waveform, sample_rate, out.seeds, notes, sources)


def read_video_input(
    path, duration: int | None, height: int | None, width: int | None, area: int, max_seconds: int = checks.MAX_SECONDS
) -> media.VideoClip:
    """A video file at the model's 17 fps by its timestamps and at the model size (checked first; ``model_size``
    with ``area``), resized while it is decoded, so a large file never sits in memory at full size; at most
    ``duration`` s (None: ``max_seconds``, the longest clip)."""
    own_h, own_w = model_size(*media.picture_size(path), area)
    size = checks.size(own_h if height is None else height, own_w if width is None else width)
    seconds = max_seconds if duration is None else checks.duration(duration, high=max_seconds)
    return media.read_video(path, fps=VIDEO_FPS, size=size, duration=seconds, with_audio=False)


__all__ = [
    "TASKS",
    "AudioLatent",
    "GenerationResult",
    "SampleOutput",
    "TextConditioning",
    "UniFormPipeline",
    "VideoLatent",
    "decode_audio",
    "decode_video",
    "encode_audio",
    "encode_text",
    "make_task_latent",
    "sample",
]
