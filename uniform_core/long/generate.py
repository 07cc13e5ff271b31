"""T2AV, A2V and V2A of any length: the pipeline's stages with the sampling done in windows.

The given modality of A2V/V2A covers the whole clip and is encoded one window-sized piece at a time; the latent
is sampled window by window (:mod:`.windows`); the result is decoded chunk by chunk (video) and in overlapping
segments (audio, :mod:`.codec_segments`) straight into the output, so memory beyond the output stays that of one
window. Two ways to join the windows' decoded outputs are offered (``seam``):

- ``"latent"``: the windows share their overlap in the latent (the later window keeps it clean), so the clip has
  one continuous latent, which is decoded as one clip would be.
- ``"crossfade"``: every window is decoded on its own and the overlapping second is cross-faded linearly.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .. import checks, media
from ..diffusion.task_latent import TaskLatent
from ..errors import InputError
from ..pipeline import (
    Cancel,
    GenerationResult,
    Progress,
    UniFormPipeline,
    decode_video,
    encode_text,
    make_task_latent,
    read_video_input,
)
from ..tasks import (
    AUDIO_LATENT_STEPS_PER_SECOND,
    FRAMES_PER_CHUNK,
    LONG_MAX_SECONDS,
    SAMPLE_RATE,
    VIDEO_FPS,
    generates_audio,
    generates_video,
    task_index,
)
from .codec_segments import decode_audio_long
from .conditions import AUDIO_CONTEXT_STEPS, encode_audio_long_clip, encode_video_long
from .windows import plan_windows, sample_long, window_latent

SEAMS = ("latent", "crossfade")


@torch.no_grad()
def decode_long(pipe: UniFormPipeline, latent: TaskLatent, window: int, overlap: int, seam: str = "latent"):
    """(frames (B, T, H, W, 3) or None, waveform (B, 1, N) or None) of the generated modalities of ``latent``,
    joined as ``seam`` says; T = 17 per second and N = 16000 per second exactly."""
    if seam not in SEAMS:
        raise InputError(f"seam must be one of {', '.join(SEAMS)}; got {seam!r}")
    b = pipe.bundle
    frames = waveform = None
    if seam == "latent":
        if generates_video(latent.task):
            with pipe._use(b.video_vae):
                frames, _ = decode_video(b.video_vae, latent)
        if generates_audio(latent.task):
            with pipe._use(b.audio_codec):
                span = window * AUDIO_LATENT_STEPS_PER_SECOND
                waveform = decode_audio_long(b.audio_codec, latent.audio, span, AUDIO_CONTEXT_STEPS).unsqueeze(1)
        return frames, waveform
    plan = plan_windows(int(latent.duration), window, overlap)
    if generates_video(latent.task):
        with pipe._use(b.video_vae):
            frames = _crossfade(plan, FRAMES_PER_CHUNK, lambda part: decode_video(b.video_vae, part)[0], latent)
    if generates_audio(latent.task):
        with pipe._use(b.audio_codec):
            waveform = _crossfade(plan, SAMPLE_RATE, lambda part: b.audio_codec.decode(part.audio).cpu(), latent)
            waveform = waveform.unsqueeze(1)
    return frames, waveform


def _crossfade(plan, per_second: int, decode: Callable[[TaskLatent], torch.Tensor], latent: TaskLatent):
    """Decode every window of ``plan`` on its own and join them along dim 1, ramping linearly from the earlier
    window to the later one over the seconds they share."""
    out = None
    for part in plan:
        piece = decode(window_latent(latent, part))  # (B, part.seconds * per_second, ...)
        if out is None:
            out = piece.new_empty(piece.shape[0], int(latent.duration) * per_second, *piece.shape[2:])
        start, shared = part.start * per_second, part.given * per_second
        if shared:
            ramp = torch.linspace(0, 1, shared + 2)[1:-1].view(1, shared, *[1] * (piece.dim() - 2))
            out[:, start : start + shared] = (1 - ramp) * out[:, start : start + shared] + ramp * piece[:, :shared]
        out[:, start + shared : part.stop * per_second] = piece[:, shared:]
    return out


def generate_long(
    pipe: UniFormPipeline,
    task: str,
    prompt: str | None = None,
    video: str | os.PathLike | media.VideoClip | None = None,
    audio: str | os.PathLike | media.AudioClip | None = None,
    duration: int | None = None,
    seed: int = 0,
    steps: int = 30,
    cfg: float | None = None,
    cfg_audio: float | None = None,
    sampler: str | None = None,
    negative_prompt: str = "",
    batch_size: int = 1,
    height: int | None = None,
    width: int | None = None,
    window: int | None = None,
    overlap: int = 1,
    seam: str = "latent",
    given: str | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    cfg_condition: float | None = None,
) -> GenerationResult:
    """:meth:`UniFormPipeline.generate` for clips of any whole-second length (up to ``tasks.LONG_MAX_SECONDS``),
    sampled in windows of ``window`` s (default: the bundle's clip length) that share ``overlap`` s. A2V/V2A last
    as long as their input unless ``duration`` is given. ``cfg`` guides the video and ``cfg_audio`` (default:
    ``cfg``) the audio. ``given``: how each window sees what it shares with the one before (see
    :func:`.windows.sample_long`). ``cfg_condition``: guidance on the A2V/V2A condition (default: the measured
    ``guidance.CONDITION_CFG[task]``). ``progress(step, total)`` runs over the steps of all windows."""
    task_index(task)
    checks.cfg_condition(cfg_condition, task)
    b = pipe.bundle
    window = b.duration if window is None else window
    cfg = b.cfg_for(task) if cfg is None else cfg
    sampler = b.sampler if sampler is None else sampler
    if task == "t2av" and not (prompt and prompt.strip()):
        raise InputError("task 't2av' (text to audio+video) needs a prompt")
    for needed, condition, name in (("a2v", audio, "audio"), ("v2a", video, "video")):
        if task == needed and condition is None:
            raise InputError(f"task {task!r} needs the {name} input; none was given")
    plan_windows(1, window, overlap)  # checks window and overlap before any work
    text = None
    if prompt and prompt.strip():
        with pipe._use(b.text_encoder):
            text = encode_text(b.text_encoder, prompt, negative_prompt)
    video_latent = audio_latent = None
    if task == "v2a":
        area = b.height * b.width
        clip = video
        if not isinstance(video, media.VideoClip):
            clip = read_video_input(video, duration, height, width, area, LONG_MAX_SECONDS)
        with pipe._use(b.video_vae):
            video_latent = encode_video_long(b.video_vae, clip.frames, clip.fps, duration, height, width, area, window)
    if task == "a2v":
        clip = audio if isinstance(audio, media.AudioClip) else media.read_audio(audio)
        with pipe._use(b.audio_codec):
            audio_latent = encode_audio_long_clip(b.audio_codec, clip.waveform, clip.sample_rate, duration, window)
    if task == "t2av" and duration is None:
        duration = b.duration
    latent = make_task_latent(
        task,
        duration=duration if task == "t2av" else None,
        height=None if task == "v2a" else (b.height if height is None else height),
        width=None if task == "v2a" else (b.width if width is None else width),
        video=video_latent,
        audio=audio_latent,
        max_seconds=LONG_MAX_SECONDS,
    )
    with pipe._use(b.dit):
        out = sample_long(
            b.dit,
            latent,
            text,
            seed,
            steps,
            cfg,
            sampler,
            batch_size,
            window,
            overlap,
            progress,
            cancel,
            cfg_audio,
            given=given,
            cfg_condition=cfg_condition,
        )
    frames, waveform = decode_long(pipe, out.latent, window, overlap, seam)
    batch = len(out.seeds)
    if frames is None:
        frames = video_latent.frames.unsqueeze(0).expand(batch, -1, -1, -1, -1)
    if waveform is None:
        waveform = audio_latent.waveform.view(1, 1, -1).expand(batch, -1, -1)
    notes = (video_latent.notes if video_latent else []) + (audio_latent.notes if audio_latent else [])
    return GenerationResult(task, frames, float(VIDEO_FPS), waveform, SAMPLE_RATE, out.seeds, notes)
