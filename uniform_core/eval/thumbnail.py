"""A workflow's thumbnail: a small JPEG of what the graph made, two frames above its sound's spectrogram.

ComfyUI's template browser shows ``workflows/NAME.jpg`` beside ``NAME.json`` on the graph's card (16 rem by
12 rem in frontend 1.27-1.49), so the card shows the real output, picture and sound, instead of a grey placeholder.
The frames and the sound are taken from the clip's first two seconds (the model's window), so a long graph's
thumbnail shows how its clip opens and a shortened run of it draws the same picture.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image

from .. import media
from ..errors import InputError
from .contact_sheet import power_db, spectrogram_image

WIDTH, HEIGHT = 256, 192  # px: the card's image area (16 rem x 12 rem)
FRAME_SIDE = WIDTH // 2  # two square frames side by side
FRAME_TIMES = (0.5, 1.5)  # seconds into the clip
SOUND_SECONDS = 2.0  # the spectrogram band spans the same first two seconds
JPEG_QUALITY = 85  # a thumbnail is 6-9 KB


def _frame_tile(frames: torch.Tensor, fps: float, seconds: float) -> Image.Image:
    """The frame shown at ``seconds``, center-cropped to a square and scaled to FRAME_SIDE."""
    index = min(int(round(seconds * fps)), frames.shape[0] - 1)
    frame = (frames[index].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return Image.fromarray(frame[top : top + side, left : left + side]).resize((FRAME_SIDE, FRAME_SIDE), Image.BICUBIC)


def _sound_band(audio: media.AudioClip | None) -> Image.Image:
    """The first SOUND_SECONDS as a spectrogram (dB re its own loudest bin), WIDTH x the rest of the height; black
    when the clip has no sound."""
    size = (WIDTH, HEIGHT - FRAME_SIDE)
    if audio is None:
        return Image.new("RGB", size)
    waveform = audio.waveform.mean(0)[: int(SOUND_SECONDS * audio.sample_rate)]
    image = spectrogram_image(waveform, audio.sample_rate, [], float(power_db(waveform).max()))
    return Image.fromarray(image).resize(size, Image.BICUBIC)


def thumbnail(clip: media.VideoClip) -> Image.Image:
    """WIDTH x HEIGHT RGB picture of ``clip``: the frames at FRAME_TIMES side by side over its spectrogram."""
    image = Image.new("RGB", (WIDTH, HEIGHT))
    for i, seconds in enumerate(FRAME_TIMES):
        image.paste(_frame_tile(clip.frames, clip.fps, seconds), (i * FRAME_SIDE, 0))
    image.paste(_sound_band(clip.audio), (0, FRAME_SIDE))
    return image


def video_thumbnail(path: str | os.PathLike) -> Image.Image:
    """The thumbnail of a video file with or without sound (what a workflow's Save node wrote)."""
    return thumbnail(media.read_video(path, duration=SOUND_SECONDS))


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two thumbnails, in 8-bit levels (0: the same picture; two JPEG encodings of one
    picture differ by about 1)."""
    if a.size != b.size:
        raise InputError(f"thumbnails differ in size: {a.size} vs {b.size}")
    return float(np.abs(np.asarray(a.convert("RGB"), np.int16) - np.asarray(b.convert("RGB"), np.int16)).mean())
