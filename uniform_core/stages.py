"""The stages of a generation: encode -> task latent -> sample -> decode.

The ComfyUI nodes call these one by one; :class:`~uniform_core.pipeline.UniFormPipeline` chains them into one call
per task. Inputs of any length, frame rate, sample rate or size are conformed to what the model needs, and every
change made to them is reported in ``notes``, never done silently. Every argument is checked by
:mod:`uniform_core.checks` where it enters, objects handed from stage to stage included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import checks, media, memory
from .codecs.audio import AudioCodec
from .codecs.text import TextEncoder
from .codecs.video_chunks import VIDEO_JOIN, decode_chunks
from .codecs.video_vae import VideoVAE
from .diffusion.continuation import continuation_keep_mask, continuation_task
from .diffusion.guidance import CONDITION_CFG, make_model_fn
from .diffusion.samplers import check_sampler
from .diffusion.samplers import sample as run_sampler
from .diffusion.task_latent import TaskLatent, keep_mask, pack, unpack
from .errors import InputError
from .model.uniform_dit import UniFormDiT
from .tasks import (
    AUDIO_LATENT_CHANNELS,
    AUDIO_LATENT_FREQ,
    AUDIO_LATENT_STEPS_PER_SECOND,
    FRAMES_PER_CHUNK,
    LATENT_FRAMES_PER_CHUNK,
    SAMPLE_RATE,
    VIDEO_DOWNSAMPLE,
    VIDEO_FPS,
    VIDEO_LATENT_CHANNELS,
)

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
Preview = Callable[[int, int, torch.Tensor, torch.Tensor], None]  # (step, total, video x0, audio x0)


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


# ---- stages -------------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_text(text_encoder: TextEncoder, prompt: str, negative_prompt: str = "") -> TextConditioning:
    """Encode ``prompt`` (and ``negative_prompt`` if given) with one shared token length."""
    checks.instance(text_encoder, TextEncoder, "text_encoder", " (from load_text_encoder or a bundle)")
    checks.prompt(prompt, "prompt", required=True)
    checks.prompt(negative_prompt, "negative_prompt")
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
    area: int | None = None,
) -> VideoLatent:
    """Conform ``frames`` ((T, H, W, 3) float in [0, 1] at ``fps``) to 17 fps, whole seconds and a size that is a
    multiple of 16 px, then encode them with the posterior mean (so conditioning is reproducible). uint8 frames
    are taken as 0..255. ``duration``, ``height``, ``width``: None follows the input (at most 16 s; the size as
    ``model_size`` gives it, scaled to about ``area`` pixels when that is given)."""
    checks.instance(video_vae, VideoVAE, "video_vae", " (from load_video_vae or a bundle)")
    frames = checks.frames(frames, "frames")
    fps = checks.fps(fps)
    seconds = checks.duration(_whole_seconds(frames.shape[0] / fps) if duration is None else duration)
    own_height, own_width = model_size(frames.shape[1], frames.shape[2], area)
    height = own_height if height is None else height
    width = own_width if width is None else width
    checks.size(height, width)
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
    the posterior mean. ``duration``: None follows the input (at most 16 s). The VAE sees AudioLDM's mel of the
    whole mono 16 kHz sound (levelled over all of it, then padded or its spectrogram cut to ``duration``); the
    returned waveform is the trimmed or padded one."""
    checks.instance(audio_codec, AudioCodec, "audio_codec", " (from load_audio_codec or a bundle)")
    waveform = checks.waveform(waveform)
    sample_rate = checks.sample_rate(sample_rate)
    seconds = checks.duration(_whole_seconds(waveform.shape[-1] / sample_rate) if duration is None else duration)
    mono, notes = media.conform_audio(waveform, sample_rate, SAMPLE_RATE, seconds * SAMPLE_RATE)
    whole = media.resample_audio(media.to_mono(waveform), sample_rate, SAMPLE_RATE)  # (1, N'), not yet cut
    peak = float(whole.abs().max())
    if peak > 1:
        whole, mono = whole.clamp(-1, 1), mono.clamp(-1, 1)
        notes.append(f"audio peaks of {peak:.3g} clipped to 1 (full scale)")
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
    max_seconds: int = checks.MAX_SECONDS,
) -> TaskLatent:
    """The latent a task starts from: zeros where it generates, the clean condition where it conditions.

    A2V needs ``audio``, V2A needs ``video``; T2AV uses neither. The duration and size follow the condition when
    one is given (and must agree with ``duration``/``height``/``width`` if those are given too). ``max_seconds``:
    the longest duration accepted (long clips, sampled in windows, pass ``tasks.LONG_MAX_SECONDS``).
    """
    checks.condition(task, video, audio)
    if task == "v2a":
        checks.instance(video, VideoLatent, "video", " (from encode_video)")
    if task == "a2v":
        checks.instance(audio, AudioLatent, "audio", " (from encode_audio)")
    condition = audio if task == "a2v" else video if task == "v2a" else None
    if condition is not None:
        if duration is not None and checks.duration(duration, high=max_seconds) != condition.duration:
            raise InputError(
                f"duration {duration} s does not match the {condition.duration} s {task} condition; "
                "leave duration out or encode the condition with the same duration"
            )
        duration = condition.duration
    seconds = checks.duration(duration if duration is not None else 4, high=max_seconds)
    if task == "v2a":
        h, w = video.frames.shape[1], video.frames.shape[2]
        if (height, width) not in ((None, None), (h, w)):
            raise InputError(f"size {height}x{width} does not match the {h}x{w} conditioning video")
        height, width = h, w
    height, width = checks.size(256 if height is None else height, 256 if width is None else width)

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
    given_noised: tuple[str, ...] = (),
    preview: Preview | None = None,
    cfg_condition: float | None = None,
) -> SampleOutput:
    """Denoise the generated modality of ``latent``; item ``i`` of the batch uses seed ``seed + i``.

    Cond and uncond run as one batch per step (classifier-free guidance with scale ``cfg``, or ``cfg`` on the video
    and ``cfg_audio`` on the audio). Without ``text`` the model is conditioned on its learned null caption only, so
    guidance is skipped. ``given_frames``: the first latent frames of both modalities are given by ``latent`` and
    kept clean (continuation, :mod:`~uniform_core.diffusion.continuation`); those of the modalities named in
    ``given_noised`` (``"video"``, ``"audio"``) are shown at each step's noise level instead and replaced after
    every step. A T2AV latent with given frames all kept clean samples with the model's ``"continue"`` token where
    the model learned one (:func:`~uniform_core.diffusion.continuation.continuation_task`). ``preview(step, total,
    video, audio)`` gets the model's current x0 estimate of the batch after each step (e.g.
    :class:`~uniform_core.previews.LivePreview`).
    ``cfg_condition`` (A2V/V2A): guidance away from the model without the clean condition, in the same batched
    call (:func:`~uniform_core.diffusion.guidance.make_model_fn`; 1 is off; None or -1: the measured
    ``guidance.CONDITION_CFG`` of the latent's task, so the CLI, the pipeline and every node get the same default).
    """
    check_sampling_args(seed, steps, cfg, sampler, batch_size)
    if cfg_audio is not None:
        checks.cfg(cfg_audio, "cfg_audio")
    checks.instance(dit, UniFormDiT, "dit", " (from UniFormDiT.load or a bundle)")
    checks.instance(latent, TaskLatent, "latent", " (from make_task_latent)")
    checks.instance(text, (TextConditioning, type(None)), "text", " (from encode_text) or None")
    cfg_condition = checks.cfg_condition(cfg_condition, latent.task)
    cfg_condition = CONDITION_CFG[latent.task] if cfg_condition is None else cfg_condition
    guided, passes = text is not None and cfg != 1, 1 + (cfg_condition != 1)  # the condition pass adds a batch
    memory.check_fits(
        {"DiT activations": memory.dit_bytes(dit, latent, batch_size * passes, guided)}, _device_of(dit), "sampling"
    )
    device = _device_of(dit)
    seeds = [seed + i for i in range(batch_size)]
    video = latent.video.expand(batch_size, *latent.video.shape[1:]).to(device)
    audio = latent.audio.expand(batch_size, *latent.audio.shape[1:]).to(device)
    clean = pack(video, audio)
    keep = continuation_keep_mask(latent.task, video.shape, audio.shape, given_frames).to(device)
    renoise = None
    if given_noised:  # given entries of these modalities (beyond the task's condition) are shown noised instead
        sizes = {"video": video[0].numel(), "audio": audio[0].numel()}
        noised = torch.cat([torch.full((n,), name in given_noised, dtype=torch.bool) for name, n in sizes.items()])
        renoise = keep & noised.to(device) & ~keep_mask(latent.task, video.shape, audio.shape).to(device)
        keep = keep & ~renoise
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    noise = torch.stack([torch.randn(clean.shape[1], generator=g) for g in generators]).to(device)

    batch_latent = latent.with_latents(video, audio)
    y, mask, y_null, mask_null, scale = _text_batch(dit, text, batch_size, cfg, device)
    audio_scale = scale if cfg_audio is None or text is None else cfg_audio
    token = continuation_task(latent.task, dit.config.num_tasks, given_frames, given_noised)
    model_fn = make_model_fn(
        dit, batch_latent, y, mask, y_null, mask_null, scale, audio_scale, cfg_condition, noise, token
    )

    def x0_preview(step: int, total: int, x0: torch.Tensor) -> None:
        preview(step, total, *unpack(x0, video.shape, audio.shape))

    x0_callback = None if preview is None else x0_preview
    x0 = run_sampler(
        model_fn, noise, clean, keep, sampler, steps, generators, progress, cancel, None, renoise, x0_callback
    )
    video_out, audio_out = unpack(x0, video.shape, audio.shape)
    return SampleOutput(latent=latent.with_latents(video_out.float().cpu(), audio_out.float().cpu()), seeds=seeds)


@torch.no_grad()
def decode_video(video_vae: VideoVAE, latent: TaskLatent, join: str = VIDEO_JOIN) -> tuple[torch.Tensor, float]:
    """Frames (B, T, H, W, 3) float in [0, 1] on the CPU and their fps, decoded from ``latent.video``.

    Chunks are decoded one at a time straight into the result: memory beyond the result stays that of one or two
    chunks however long the clip (and the device never holds it all). ``join``: how the 1 s chunks meet
    (:mod:`.codecs.video_chunks`); the default is the one measured to jump least at chunk boundaries.
    """
    checks.instance(video_vae, VideoVAE, "video_vae", " (from load_video_vae or a bundle)")
    checks.instance(latent, TaskLatent, "latent", " (from sample)")
    memory.check_decoding(video_vae, latent, latent.video.shape[0], _device_of(video_vae))
    z = latent.video
    if video_vae.latent_frames(latent.num_frames) != z.shape[2]:
        raise InputError(
            f"latent has {z.shape[2]} video latent frames but num_frames={latent.num_frames} needs "
            f"{video_vae.latent_frames(latent.num_frames)}"
        )
    video_vae.check_latents(z, latent.num_frames)
    b, _, _, h, w = z.shape
    d = video_vae.config.spatial_downsample
    frames = torch.empty(b, latent.num_frames, h * d, w * d, video_vae.config.image_channels)
    for start, pixels in decode_chunks(video_vae, z, latent.num_frames, join):  # (B, 3, n, H, W) in [-1, 1]
        pixels = (pixels.float().clamp(-1, 1) + 1) / 2
        frames[:, start : start + pixels.shape[2]] = pixels.permute(0, 2, 3, 4, 1).cpu()
        del pixels  # freed before the next chunk decodes
    return frames, float(latent.fps)


@torch.no_grad()
def decode_audio(audio_codec: AudioCodec, latent: TaskLatent) -> tuple[torch.Tensor, int]:
    """Waveforms (B, 1, N) float at 16 kHz, N = duration * 16000, decoded from ``latent.audio``."""
    checks.instance(audio_codec, AudioCodec, "audio_codec", " (from load_audio_codec or a bundle)")
    checks.instance(latent, TaskLatent, "latent", " (from sample)")
    z = latent.audio.to(_device_of(audio_codec), _dtype_of(audio_codec))
    waveform = audio_codec.decode(z).float().cpu()
    num_samples = int(round(latent.duration * latent.sample_rate))
    return waveform[:, :num_samples].unsqueeze(1), latent.sample_rate


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


def check_sampling_args(seed, steps, cfg, sampler, batch_size) -> None:
    """The sampler's settings, checked before anything runs."""
    checks.batch_size(batch_size)
    checks.seed(seed, count=batch_size)
    checks.steps(steps)
    checks.cfg(cfg)
    check_sampler(sampler)


def _whole_seconds(seconds: float) -> int:
    """The whole seconds an input of ``seconds`` gives: cut to at most 16 s, at least 1 s (padded)."""
    return max(1, min(checks.MAX_SECONDS, int(seconds)))


def model_size(height: int, width: int, area: int | None = None) -> tuple[int, int]:
    """The input's size for the model: a picture larger than the model takes is first scaled down as a whole
    (both sides by one factor, so a 3840x2160 clip becomes 2048x1152, not a square crop), and, given ``area`` (the
    pixels per frame the model was trained at, e.g. a bundle's height x width), down to about that many pixels at
    the input's own aspect ratio; then each side is the largest multiple of 16 px not above it (center-cropped to
    it), at least 16. Never scaled up."""
    scale = min(1.0, checks.MAX_SIDE / max(height, width))
    if area is not None:
        scale = min(scale, (area / (height * width)) ** 0.5)
    return tuple(max(16, int(side * scale) // 16 * 16) for side in (height, width))


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


__all__ = [
    "AudioLatent",
    "SampleOutput",
    "TextConditioning",
    "VideoLatent",
    "check_sampling_args",
    "decode_audio",
    "decode_video",
    "encode_audio",
    "encode_text",
    "make_task_latent",
    "sample",
]
