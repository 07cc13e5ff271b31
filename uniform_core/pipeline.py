"""Encode -> task latent -> sample -> decode.

The stage functions below are what the ComfyUI nodes call one by one; :class:`UniFormPipeline` chains them into
one call per task. Inputs of any length, frame rate, sample rate or size are conformed to what the model needs,
and every change made to them is reported in ``notes``, never done silently.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import media
from .bundle import Bundle, load_bundle
from .codecs.audio import AudioCodec
from .codecs.text import TextEncoder
from .codecs.video_vae import VideoVAE
from .diffusion.continuation import continuation_keep_mask
from .diffusion.guidance import make_model_fn
from .diffusion.samplers import check_sampler
from .diffusion.samplers import sample as run_sampler
from .diffusion.task_latent import TaskLatent, keep_mask, pack, unpack
from .errors import InputError
from .model.compiled import compile_dit
from .model.uniform_dit import UniFormDiT
from .precision import enable_tf32, part_dtype
from .tasks import (
    AUDIO_LATENT_CHANNELS,
    AUDIO_LATENT_FREQ,
    AUDIO_LATENT_STEPS_PER_SECOND,
    FRAMES_PER_CHUNK,
    LATENT_FRAMES_PER_CHUNK,
    SAMPLE_RATE,
    TASKS,
    VIDEO_DOWNSAMPLE,
    VIDEO_FPS,
    VIDEO_LATENT_CHANNELS,
    check_duration,
    check_size,
    generates_audio,
    generates_video,
    task_index,
)

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


@dataclass
class TextConditioning:
    """Encoded prompt (and optional negative prompt), padded to one token length."""

    y: torch.Tensor  # (1, L, D)
    mask: torch.Tensor  # (1, L) bool
    prompt: str
    negative_y: torch.Tensor | None = None  # (1, L, D); None = the DiT's learned null caption
    negative_mask: torch.Tensor | None = None  # (1, L) bool
    negative_prompt: str = ""


@dataclass
class VideoLatent:
    """A conditioning video: its latent plus the conformed frames it came from."""

    latent: torch.Tensor  # (1, 4, 5 * seconds, H / 8, W / 8)
    frames: torch.Tensor  # (T, H, W, 3) float in [0, 1] at 17 fps, T = 17 * seconds
    fps: float
    notes: list[str] = field(default_factory=list)

    @property
    def duration(self) -> int:
        return self.frames.shape[0] // FRAMES_PER_CHUNK


@dataclass
class AudioLatent:
    """A conditioning sound: its latent plus the conformed waveform it came from."""

    latent: torch.Tensor  # (1, 8, 25 * seconds, 16)
    waveform: torch.Tensor  # (N,) mono float at 16 kHz, N = 16000 * seconds
    sample_rate: int = SAMPLE_RATE
    notes: list[str] = field(default_factory=list)

    @property
    def duration(self) -> int:
        return self.waveform.shape[-1] // self.sample_rate


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

    def save(self, path: str | os.PathLike, index: int = 0) -> Path:
        """Mux item ``index`` into an MP4 (H.264 + AAC) whose streams have the same duration."""
        audio = media.AudioClip(self.waveform[index].float().cpu(), self.sample_rate)
        return media.write_mp4(path, self.frames[index].cpu(), self.fps, audio)


# ---- stages -------------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_text(text_encoder: TextEncoder, prompt: str, negative_prompt: str = "") -> TextConditioning:
    """Encode ``prompt`` (and ``negative_prompt`` if given) with one shared token length."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"prompt must be a non-empty string; got {prompt!r} (leave text out for A2V/V2A instead)")
    if not isinstance(negative_prompt, str):
        raise InputError(f"negative_prompt must be a string; got {type(negative_prompt).__name__}")
    prompts = [prompt, negative_prompt] if negative_prompt.strip() else [prompt]
    y, mask = text_encoder.encode(prompts)
    return TextConditioning(
        y=y[:1],
        mask=mask[:1].bool(),
        prompt=prompt,
        negative_y=y[1:] if len(prompts) == 2 else None,
        negative_mask=mask[1:].bool() if len(prompts) == 2 else None,
        negative_prompt=negative_prompt,
    )


@torch.no_grad()
def encode_video(
    video_vae: VideoVAE,
    frames: torch.Tensor,
    fps: float,
    duration: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> VideoLatent:
    """Conform ``frames`` ((T, H, W, 3) float in [0, 1] at ``fps``) to 17 fps, whole seconds and a size that is a
    multiple of 16 px, then encode them with the posterior mean (so conditioning is reproducible)."""
    frames = _check_frames(frames, "frames")
    if duration is None:
        duration = max(1, min(16, int(frames.shape[0] / float(fps))))
    seconds = check_duration(duration)
    height = height if height is not None else _round_size(frames.shape[1])
    width = width if width is not None else _round_size(frames.shape[2])
    check_size(height, width)
    conformed, notes = media.conform_video(frames, fps, VIDEO_FPS, seconds * FRAMES_PER_CHUNK, height, width)
    device = _device_of(video_vae)
    pixels = conformed.permute(3, 0, 1, 2).unsqueeze(0).to(device) * 2 - 1  # (1, 3, T, H, W) in [-1, 1]
    latent = video_vae.encode(pixels.to(_dtype_of(video_vae)), deterministic=True).float()
    return VideoLatent(latent=latent, frames=conformed, fps=VIDEO_FPS, notes=notes)


@torch.no_grad()
def encode_audio(
    audio_codec: AudioCodec, waveform: torch.Tensor, sample_rate: int, duration: int | None = None
) -> AudioLatent:
    """Conform ``waveform`` ((C, N) float at ``sample_rate``) to mono 16 kHz and whole seconds, then encode it with
    the posterior mean. The VAE sees AudioLDM's mel of the whole mono 16 kHz sound (levelled over all of it, then
    padded or its spectrogram cut to ``duration``); the returned waveform is the trimmed or padded one."""
    if not isinstance(waveform, torch.Tensor) or waveform.dim() not in (1, 2):
        raise InputError(f"waveform must be a (channels, samples) tensor; got {_describe(waveform)}")
    waveform = waveform if waveform.dim() == 2 else waveform.unsqueeze(0)
    if duration is None:
        duration = max(1, min(16, int(waveform.shape[-1] / float(sample_rate))))
    seconds = check_duration(duration)
    mono, notes = media.conform_audio(waveform, sample_rate, SAMPLE_RATE, seconds * SAMPLE_RATE)
    whole = media.resample_audio(media.to_mono(waveform), sample_rate, SAMPLE_RATE)  # (1, N'), not yet cut
    num_frames = round(seconds * audio_codec.mel.config.frames_per_second)
    latent = audio_codec.encode(whole.to(_device_of(audio_codec)), deterministic=True, num_frames=num_frames)
    return AudioLatent(latent=latent.float(), waveform=mono, notes=notes)


def make_task_latent(
    task: str,
    duration: int | None = None,
    height: int | None = None,
    width: int | None = None,
    video: VideoLatent | None = None,
    audio: AudioLatent | None = None,
    max_seconds: int = 16,
) -> TaskLatent:
    """The latent a task starts from: zeros where it generates, the clean condition where it conditions.

    A2V needs ``audio``, V2A needs ``video``; T2AV uses neither. The duration and size follow the condition when
    one is given (and must agree with ``duration``/``height``/``width`` if those are given too). ``max_seconds``:
    the longest duration accepted (long clips, sampled in windows, pass ``tasks.LONG_MAX_SECONDS``).
    """
    task_index(task)
    if task == "a2v" and audio is None:
        raise InputError("task 'a2v' (audio to video) needs the audio input; none was given")
    if task == "v2a" and video is None:
        raise InputError("task 'v2a' (video to audio) needs the video input; none was given")
    condition = audio if task == "a2v" else video if task == "v2a" else None
    if condition is not None:
        if duration is not None and check_duration(duration, max_seconds) != condition.duration:
            raise InputError(
                f"duration {duration} s does not match the {condition.duration} s {task} condition; "
                "leave duration out or encode the condition with the same duration"
            )
        duration = condition.duration
    seconds = check_duration(duration if duration is not None else 4, max_seconds)
    if task == "v2a":
        h, w = video.frames.shape[1], video.frames.shape[2]
        if (height, width) not in ((None, None), (h, w)):
            raise InputError(f"size {height}x{width} does not match the {h}x{w} conditioning video")
        height, width = h, w
    height, width = check_size(height or 256, width or 256)

    t = seconds * LATENT_FRAMES_PER_CHUNK
    video_latent = torch.zeros(1, VIDEO_LATENT_CHANNELS, t, height // VIDEO_DOWNSAMPLE, width // VIDEO_DOWNSAMPLE)
    audio_latent = torch.zeros(1, AUDIO_LATENT_CHANNELS, seconds * AUDIO_LATENT_STEPS_PER_SECOND, AUDIO_LATENT_FREQ)
    if task == "v2a":
        video_latent = video.latent.float().cpu()
    if task == "a2v":
        audio_latent = audio.latent.float().cpu()
    return TaskLatent(
        task=task,
        video=video_latent,
        audio=audio_latent,
        fps=VIDEO_FPS,
        num_frames=seconds * FRAMES_PER_CHUNK,
        sample_rate=SAMPLE_RATE,
        duration=float(seconds),
        height=height,
        width=width,
    )


@dataclass
class SampleOutput:
    latent: TaskLatent  # batch of ``len(seeds)``
    seeds: list[int]


@torch.no_grad()
def sample(
    dit: UniFormDiT,
    latent: TaskLatent,
    text: TextConditioning | None = None,
    seed: int = 0,
    steps: int = 30,
    cfg: float = 5.0,
    sampler: str = "iddpm",
    batch_size: int = 1,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    cfg_audio: float | None = None,
    given_frames: int = 0,
    given_noised: bool = False,
) -> SampleOutput:
    """Denoise the generated modality of ``latent``; item ``i`` of the batch uses seed ``seed + i``.

    Cond and uncond run as one batch per step (classifier-free guidance with scale ``cfg``, or ``cfg`` on the video
    and ``cfg_audio`` on the audio). Without ``text`` the model is conditioned on its learned null caption only, so
    guidance is skipped. ``given_frames``: the first latent frames of both modalities are given by ``latent`` and
    kept clean (continuation, :mod:`~uniform_core.diffusion.continuation`), or with ``given_noised`` shown at
    each step's noise level and replaced after every step.
    """
    _check_sampling_args(seed, steps, cfg, sampler, batch_size)
    if cfg_audio is not None:
        _check_sampling_args(seed, steps, cfg_audio, sampler, batch_size)
    device = _device_of(dit)
    seeds = [seed + i for i in range(batch_size)]
    video = latent.video.expand(batch_size, *latent.video.shape[1:]).to(device)
    audio = latent.audio.expand(batch_size, *latent.audio.shape[1:]).to(device)
    clean = pack(video, audio)
    keep = continuation_keep_mask(latent.task, video.shape, audio.shape, given_frames).to(device)
    renoise = None
    if given_noised:
        renoise, keep = keep, keep_mask(latent.task, video.shape, audio.shape).to(device)
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    noise = torch.stack([torch.randn(clean.shape[1], generator=g) for g in generators]).to(device)

    batch_latent = latent.with_latents(video, audio)
    y, mask, y_null, mask_null, scale = _text_batch(dit, text, batch_size, cfg, device)
    audio_scale = scale if cfg_audio is None or text is None else cfg_audio
    model_fn = make_model_fn(dit, batch_latent, y, mask, y_null, mask_null, scale, audio_scale)
    x0 = run_sampler(
        model_fn, noise, clean, keep, sampler, steps, generators, callback=progress, cancel=cancel, renoise=renoise
    )
    video_out, audio_out = unpack(x0, video.shape, audio.shape)
    return SampleOutput(latent=latent.with_latents(video_out.float().cpu(), audio_out.float().cpu()), seeds=seeds)


@torch.no_grad()
def decode_video(video_vae: VideoVAE, latent: TaskLatent) -> tuple[torch.Tensor, float]:
    """Frames (B, T, H, W, 3) float in [0, 1] on the CPU and their fps, decoded from ``latent.video``.

    The VAE decodes each 17-frame chunk on its own, so chunks are decoded one at a time straight into the result:
    memory beyond the result stays that of one chunk however long the clip (and the device never holds it all).
    """
    config, z = video_vae.config, latent.video
    if video_vae.latent_frames(latent.num_frames) != z.shape[2]:
        raise InputError(
            f"latent has {z.shape[2]} video latent frames but num_frames={latent.num_frames} needs "
            f"{video_vae.latent_frames(latent.num_frames)}"
        )
    device, dtype = _device_of(video_vae), _dtype_of(video_vae)
    b, _, _, h, w = z.shape
    d = config.spatial_downsample
    frames = torch.empty(b, latent.num_frames, h * d, w * d, config.image_channels)
    for first in range(0, z.shape[2], config.latent_chunk_frames):
        start = first // config.latent_chunk_frames * config.micro_frame_size
        length = min(config.micro_frame_size, latent.num_frames - start)
        chunk = z[:, :, first : first + config.latent_chunk_frames].to(device, dtype)
        pixels = video_vae.decode(chunk, num_frames=length).float()  # (B, 3, length, H, W) in [-1, 1]
        frames[:, start : start + length] = ((pixels.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).cpu()
        del chunk, pixels  # freed before the next chunk decodes
    return frames, float(latent.fps)


@torch.no_grad()
def decode_audio(audio_codec: AudioCodec, latent: TaskLatent) -> tuple[torch.Tensor, int]:
    """Waveforms (B, 1, N) float at 16 kHz, N = duration * 16000, decoded from ``latent.audio``."""
    z = latent.audio.to(_device_of(audio_codec), _dtype_of(audio_codec))
    waveform = audio_codec.decode(z).float().cpu()
    num_samples = int(round(latent.duration * latent.sample_rate))
    return waveform[:, :num_samples].unsqueeze(1), latent.sample_rate


# ---- one call per task --------------------------------------------------------------------------------------


class UniFormPipeline:
    """DiT, video VAE, audio VAE + vocoder and text encoder, run as one ``generate`` call per task.

    With ``offload=True`` each component sits on the CPU and visits ``device`` only while it runs, so the text
    encoder and the VAEs are off the accelerator during sampling. ``precision`` (``uniform_core.precision``): the
    DiT's, and the other parts' by that module's rules; ``compile`` runs the DiT through ``torch.compile``.
    """

    def __init__(
        self,
        bundle: Bundle,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        offload: bool = False,
        compile: bool = False,
    ):
        self.bundle = bundle
        self.device = torch.device(device)
        self.offload = offload
        enable_tf32()
        for part, module in bundle.modules().items():
            module.to(dtype=part_dtype(part, precision, self.device)).eval().requires_grad_(False)
            module.to("cpu" if offload else self.device)
        if compile:
            compile_dit(bundle.dit)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike | None = None, **kwargs) -> UniFormPipeline:
        """Load a bundle folder (``None`` = the embedded default ``uniform-tiny``)."""
        return cls(load_bundle(path), **kwargs)

    @contextlib.contextmanager
    def _use(self, module: torch.nn.Module):
        if self.offload:
            module.to(self.device)
        try:
            yield module
        finally:
            if self.offload:
                module.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

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
    ) -> GenerationResult:
        """Run ``task`` end to end. T2AV needs ``prompt``; A2V needs ``audio``; V2A needs ``video`` (file paths or
        clips); text is optional for A2V and V2A. ``cfg`` and ``sampler`` default to the bundle's
        (``bundle.cfg_for(task)``, ``bundle.sampler``). The conditioning modality is returned as given (conformed),
        the other one as generated."""
        task_index(task)
        cfg = self.bundle.cfg_for(task) if cfg is None else cfg
        sampler = self.bundle.sampler if sampler is None else sampler
        _check_sampling_args(seed, steps, cfg, sampler, batch_size)
        if task == "t2av" and not (prompt and prompt.strip()):
            raise InputError("task 't2av' (text to audio+video) needs a prompt")
        if task == "a2v" and audio is None:
            raise InputError("task 'a2v' (audio to video) needs the audio input; none was given")
        if task == "v2a" and video is None:
            raise InputError("task 'v2a' (video to audio) needs the video input; none was given")
        b = self.bundle
        notes: list[str] = []
        text = None
        if prompt and prompt.strip():
            with self._use(b.text_encoder):
                text = encode_text(b.text_encoder, prompt, negative_prompt)

        video_latent = audio_latent = None
        if task == "v2a":
            clip = video if isinstance(video, media.VideoClip) else _read_video_input(video, duration, height, width)
            notes += clip.notes
            size = (height or _round_size(clip.frames.shape[1]), width or _round_size(clip.frames.shape[2]))
            with self._use(b.video_vae):
                video_latent = encode_video(b.video_vae, clip.frames, clip.fps, duration, *size)
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
            height=None if task == "v2a" else (height or b.height),
            width=None if task == "v2a" else (width or b.width),
            video=video_latent,
            audio=audio_latent,
        )
        with self._use(b.dit):
            out = sample(b.dit, latent, text, seed, steps, cfg, sampler, batch_size, progress, cancel)

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
        return GenerationResult(task, frames, fps, waveform, sample_rate, out.seeds, notes)


# ---- helpers ------------------------------------------------------------------------------------------------


def _text_batch(dit: UniFormDiT, text: TextConditioning | None, batch: int, cfg: float, device: torch.device):
    """(y, mask, y_null, mask_null, scale) for the DiT: the learned null caption uses the prompt's own token
    count (as in Open-Sora), a negative prompt replaces it, and no text means no guidance."""
    max_len = dit.config.model_max_length
    if text is None:
        y = dit.null_caption(batch, 1)
        mask = torch.ones(batch, 1, dtype=torch.bool, device=y.device)
        return y.to(device), mask.to(device), None, None, 1.0
    if text.y.shape[-1] != dit.config.caption_channels:
        raise InputError(
            f"text embedding width {text.y.shape[-1]} does not match the DiT's caption_channels "
            f"{dit.config.caption_channels}; use the text encoder the DiT was trained with"
        )
    y, mask = text.y[:, :max_len], text.mask[:, :max_len]
    if text.y.shape[1] > max_len:
        logger.warning("prompt truncated to the DiT's %d text tokens", max_len)
    y = y.expand(batch, -1, -1).to(device)
    mask = mask.expand(batch, -1).to(device)
    if text.negative_y is None:
        return y, mask, dit.null_caption(batch, y.shape[1]).to(device), mask, cfg
    y_null = text.negative_y[:, :max_len].expand(batch, -1, -1).to(device)
    mask_null = text.negative_mask[:, :max_len].expand(batch, -1).to(device)
    return y, mask, y_null, mask_null, cfg


def _check_sampling_args(seed, steps, cfg, sampler, batch_size) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer; got {seed!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an integer >= 1; got {steps!r}")
    if isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not cfg >= 0:
        raise InputError(f"cfg must be a number >= 0; got {cfg!r}")
    check_sampler(sampler)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1; got {batch_size!r}")


def _check_frames(frames, name: str) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[-1] != 3:
        raise InputError(f"{name} must be a (T, H, W, 3) float tensor in [0, 1]; got {_describe(frames)}")
    return frames.float()


def _describe(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def _read_video_input(path, duration: int | None, height: int | None, width: int | None) -> media.VideoClip:
    """A video file at the model's 17 fps by its timestamps and at the model size (checked first), resized while
    it is decoded, so a large file never sits in memory at full size; at most ``duration`` s (None: 16 s, the
    longest clip)."""
    shown_h, shown_w = media.picture_size(path)
    size = check_size(height or _round_size(shown_h), width or _round_size(shown_w))
    seconds = 16 if duration is None else check_duration(duration)
    return media.read_video(path, fps=VIDEO_FPS, size=size, duration=seconds, with_audio=False)


def _round_size(pixels: int) -> int:
    """The largest multiple of 16 px not above ``pixels`` (center-cropped to it), at least 16."""
    return max(16, pixels // 16 * 16)


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


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
