"""The codecs over clips of any length (up to ``tasks.LONG_MAX_SECONDS``), one window-sized piece at a time.

Inputs of at most one window go through the native stages unchanged (:func:`stages.encode_video`,
:func:`stages.encode_audio`, one codec run); longer ones are conformed as a whole and encoded or decoded in
windows: the video VAE encodes every 1 s chunk on its own, so its windows are exact, and the audio codec runs in
overlapping segments (:mod:`.codec_segments`). Memory beyond the clip itself stays that of one window.
"""

from __future__ import annotations

import torch

from .. import checks, media
from ..codecs.audio import AudioCodec
from ..codecs.video_vae import VideoVAE
from ..diffusion.task_latent import TaskLatent
from ..stages import AudioLatent, VideoLatent, encode_audio, encode_video, model_size
from ..tasks import AUDIO_LATENT_STEPS_PER_SECOND, FRAMES_PER_CHUNK, LONG_MAX_SECONDS, SAMPLE_RATE, VIDEO_FPS
from .codec_segments import decode_audio_long, encode_audio_long

CODEC_WINDOW_SECONDS = checks.MAX_SECONDS  # the longest native clip: everything up to it runs whole, as before
AUDIO_CONTEXT_STEPS = 8  # 0.32 s each side: beyond it the tiny codec's segment edges change the waveform < 1 %


def _seconds(duration, samples: int, rate: float) -> int:
    return checks.duration(duration if duration is not None else max(1, int(samples / rate)), high=LONG_MAX_SECONDS)


@torch.no_grad()
def encode_video_long(
    video_vae: VideoVAE,
    frames: torch.Tensor,
    fps: float,
    duration: int | None = None,
    height: int | None = None,
    width: int | None = None,
    area: int | None = None,
    window: int = CODEC_WINDOW_SECONDS,
) -> VideoLatent:
    """:func:`stages.encode_video` for ``frames`` ((T, H, W, 3) in [0, 1] at ``fps``) of any length: ``duration``
    None follows the input (whole seconds, up to ``LONG_MAX_SECONDS``); encoded ``window`` seconds at a time."""
    frames, fps = checks.frames(frames, "frames"), checks.fps(fps)
    seconds = _seconds(duration, frames.shape[0], fps)
    if seconds <= min(window, checks.MAX_SECONDS):
        return encode_video(video_vae, frames, fps, seconds, height, width, area)
    own_h, own_w = model_size(frames.shape[1], frames.shape[2], area)
    h, w = checks.size(own_h if height is None else height, own_w if width is None else width)
    conformed, notes = media.conform_video(frames, fps, VIDEO_FPS, seconds * FRAMES_PER_CHUNK, h, w)
    param = next(video_vae.parameters())
    pieces = []
    for start in range(0, seconds, window):
        part = conformed[start * FRAMES_PER_CHUNK : (start + window) * FRAMES_PER_CHUNK]
        pixels = part.permute(3, 0, 1, 2).unsqueeze(0).to(param.device, param.dtype) * 2 - 1  # (1, 3, T, H, W)
        pieces.append(video_vae.encode(pixels, deterministic=True).float().cpu())
    return VideoLatent(latent=torch.cat(pieces, dim=2), frames=conformed, fps=VIDEO_FPS, notes=notes)


@torch.no_grad()
def encode_audio_long_clip(
    codec: AudioCodec,
    waveform: torch.Tensor,
    sample_rate: int,
    duration: int | None = None,
    window: int = CODEC_WINDOW_SECONDS,
) -> AudioLatent:
    """:func:`stages.encode_audio` for a ``waveform`` ((C, N) at ``sample_rate``) of any length: mono 16 kHz,
    whole seconds (``duration`` None follows the input, up to ``LONG_MAX_SECONDS``), levelled once as a whole
    and encoded in segments of ``window`` seconds."""
    waveform, sample_rate = checks.waveform(waveform), checks.sample_rate(sample_rate)
    seconds = _seconds(duration, waveform.shape[-1], sample_rate)
    if seconds <= min(window, checks.MAX_SECONDS):
        return encode_audio(codec, waveform, sample_rate, seconds)
    mono, notes = media.conform_audio(waveform, sample_rate, SAMPLE_RATE, seconds * SAMPLE_RATE)
    z = encode_audio_long(codec, mono, window * AUDIO_LATENT_STEPS_PER_SECOND, AUDIO_CONTEXT_STEPS)
    return AudioLatent(latent=z, waveform=mono, notes=notes)


@torch.no_grad()
def decode_audio_windowed(
    codec: AudioCodec, latent: TaskLatent, window: int = CODEC_WINDOW_SECONDS
) -> tuple[torch.Tensor, int]:
    """:func:`stages.decode_audio` for a latent of any length: waveforms (B, 1, N) float at 16 kHz, N = duration *
    16000, decoded in segments of ``window`` seconds (one run for a latent of at most one window)."""
    checks.instance(codec, AudioCodec, "audio_codec", " (from load_audio_codec or a bundle)")
    checks.instance(latent, TaskLatent, "latent", " (from sample)")
    span = window * AUDIO_LATENT_STEPS_PER_SECOND
    waveform = decode_audio_long(codec, latent.audio, span, AUDIO_CONTEXT_STEPS)
    num_samples = int(round(latent.duration * latent.sample_rate))
    return waveform[:, :num_samples].unsqueeze(1), latent.sample_rate
