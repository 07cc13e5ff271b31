"""Writing frames and sound to MP4 files (H.264 + AAC)."""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from .. import checks
from ..atomic import atomic_path
from ..errors import InputError
from .clips import AudioClip
from .conform import _seconds, resample_audio, to_mono
from .validation import _check_fps, _check_frames, _check_waveform

logger = logging.getLogger(__name__)

AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def write_mp4(
    path: str | os.PathLike,
    frames: torch.Tensor,
    fps: float,
    audio: AudioClip | None = None,
    crf: int = 18,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write frames (T, H, W, 3) float in [0, 1] or uint8 at ``fps`` as H.264 (yuv420p) MP4, with ``audio`` as
    AAC trimmed or padded to exactly T / fps seconds. H and W must be even (yuv420p). The file appears at
    ``path`` only when complete. ``metadata``: container tags (ComfyUI stores its prompt and workflow JSON this
    way, so dropping the file on the canvas restores the graph). Returns the path."""
    frames = _check_frames(frames, "frames").detach().cpu()
    fps = _check_fps(fps, "fps")
    checks.integer(crf, "crf (0 lossless .. 51 worst)", 0, 51)
    t, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        raise InputError(f"frames size {w}x{h} (width x height) must be even on both sides for H.264 yuv420p")
    if audio is not None and not isinstance(audio, AudioClip):
        raise InputError(f"audio must be an AudioClip or None; got {type(audio).__name__}")
    samples = _mp4_audio(audio, t / fps) if audio is not None else None
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"path must be a file path; got {type(path).__name__}")
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"path {str(path)!r} is a folder; give the MP4 file name to write")
    with atomic_path(path) as tmp:
        _mux(str(tmp), frames, fps, samples, crf, metadata or {})
    return path


def _mp4_audio(audio: AudioClip, seconds: float) -> tuple[np.ndarray, int]:
    """(C, n) float32 at an AAC rate, C in (1, 2), with exactly ``seconds`` of samples."""
    waveform = _check_waveform(audio.waveform, "audio waveform").detach().cpu().float()
    rate = audio.sample_rate
    if waveform.shape[0] > 2:
        logger.info("audio down-mixed from %d channels to mono for AAC", waveform.shape[0])
        waveform = to_mono(waveform)
    if rate not in AAC_SAMPLE_RATES:
        new = next((r for r in AAC_SAMPLE_RATES if r >= rate), AAC_SAMPLE_RATES[-1])
        logger.info("audio resampled %d -> %d Hz for AAC", rate, new)
        waveform, rate = resample_audio(waveform, rate, new), new
    n = round(seconds * rate)
    if abs(waveform.shape[1] - n) > rate // 100:
        verb = "trimmed" if waveform.shape[1] > n else "padded with silence"
        logger.info(
            "audio %s from %s to %s to match the video", verb, _seconds(waveform.shape[1] / rate), _seconds(n / rate)
        )
    waveform = waveform[:, :n] if waveform.shape[1] >= n else F.pad(waveform, (0, n - waveform.shape[1]))
    return waveform.clamp(-1, 1).contiguous().numpy(), rate


# Fixed so that the same frames give the same bytes in any process on any machine: x264 and swscale run on one
# thread (their output depends on the thread count, which "auto" takes from the CPU), swscale and the AAC encoder
# use their bit-exact code paths, and the muxer writes no library version string.
_X264_OPTIONS = {"preset": "medium", "threads": "1"}
_BITEXACT_SCALE = av.video.reformatter.Interpolation.BILINEAR | av.video.reformatter.Interpolation.BITEXACT


def _mux(path: str, frames: torch.Tensor, fps: float, audio: tuple[np.ndarray, int] | None, crf: int, metadata: dict):
    rate = Fraction(fps).limit_denominator(1001)
    # use_metadata_tags keeps custom keys (the MP4 muxer otherwise drops all but a few standard ones)
    options = {"movflags": "+faststart+use_metadata_tags", "fflags": "+bitexact"}
    with av.open(path, "w", format="mp4", options=options) as c:
        c.metadata.update(metadata)
        v = c.add_stream("libx264", rate=rate, options={**_X264_OPTIONS, "crf": str(crf)})
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        v.codec_context.flags |= av.codec.context.Flags.bitexact
        a = None
        if audio is not None:
            a = c.add_stream("aac", rate=audio[1])
            a.layout = "mono" if audio[0].shape[0] == 1 else "stereo"
            a.codec_context.flags |= av.codec.context.Flags.bitexact
        for i in range(frames.shape[0]):
            f = frames[i]
            pixels = f if f.dtype == torch.uint8 else (f.float().clamp(0, 1) * 255).round().to(torch.uint8)
            rgb = av.VideoFrame.from_ndarray(pixels.contiguous().numpy(), format="rgb24")
            frame = rgb.reformat(format="yuv420p", interpolation=_BITEXACT_SCALE, threads=1)
            frame.pts, frame.time_base = i, 1 / rate
            c.mux(v.encode(frame))
        c.mux(v.encode())
        if a is not None:
            samples, sr = audio
            for s in range(0, samples.shape[1], 1024):  # AAC frame size
                frame = av.AudioFrame.from_ndarray(samples[:, s : s + 1024], format="fltp", layout=a.layout.name)
                frame.sample_rate, frame.pts, frame.time_base = sr, s, Fraction(1, sr)
                c.mux(a.encode(frame))
            c.mux(a.encode())
