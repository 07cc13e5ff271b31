"""Where training clips come from: the seeded synthetic set, or a folder of captioned video files.

Either way a clip reaches the codecs conformed to what UniForm trains on: ``frames`` (T, S, S, 3) float in [0, 1]
at 17 fps with T = 17 x seconds, a mono ``waveform`` (16000 x seconds,) at 16 kHz, and its caption.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import media
from ..errors import InputError
from ..tasks import FRAMES_PER_CHUNK, SAMPLE_RATE, VIDEO_FPS
from .config import DataConfig
from .synthetic import SyntheticSpec, make_clip

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
CAPTION_KEYS = ("caption", "text", "label")  # what a clip's JSON may call its caption, in this order


@dataclass
class TrainingClip:
    frames: torch.Tensor  # (T, S, S, 3) float in [0, 1] at 17 fps
    waveform: torch.Tensor  # (N,) mono float at 16 kHz
    caption: str


def clip_source(data: DataConfig) -> tuple[int, Callable[[int], TrainingClip]]:
    """(number of clips, ``get(i)`` for clip i). Synthetic clip i is seed ``first_seed + i``; with ``data.folder``
    clip i is the i-th video file (sorted by name, at most ``num_clips``), captioned as :func:`sidecar_caption`
    says. (CSV and tar data sets are streamed instead: ``uniform_core.train.sources``.)"""
    if data.streamed:
        raise InputError("a data.csv or data.tar data set is streamed, not indexed: use uniform_core.train.sources")
    if data.folder is None:
        spec = SyntheticSpec(seconds=data.seconds, size=data.size, max_objects=data.max_objects)

        def synthetic(i: int) -> TrainingClip:
            clip = make_clip(data.first_seed + i, spec)
            return TrainingClip(clip.frames, clip.waveform, clip.caption)

        return data.num_clips, synthetic

    folder = Path(data.folder)
    if not folder.is_dir():
        raise InputError(f"data.folder {str(folder)!r} is not a folder of video files")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)[: data.num_clips]
    if not files:
        raise InputError(f"data.folder {str(folder)!r} holds no video files ({', '.join(VIDEO_SUFFIXES)})")

    def from_file(i: int) -> TrainingClip:
        return read_training_clip(files[i], data.seconds, data.size)

    return len(files), from_file


def read_training_clip(path: Path, seconds: int, size: int) -> TrainingClip:
    """The first ``seconds`` of a captioned video file, conformed to 17 fps, ``size`` x ``size`` and 16 kHz mono."""
    clip = media.read_video(path, fps=VIDEO_FPS, size=(size, size), duration=seconds)
    if clip.audio is None:
        raise InputError(f"training clip {str(path)!r} has no audio stream; UniForm trains on video with sound")
    return conform_clip(clip, seconds, size, sidecar_caption(path))


def conform_clip(clip: media.VideoClip, seconds: int, size: int, caption: str) -> TrainingClip:
    """A decoded clip with sound as UniForm trains on it: exactly ``seconds`` at 17 fps, ``size`` x ``size``, and
    16 kHz mono (a shorter clip is padded, a longer one cut)."""
    frames, _ = media.conform_video(clip.frames, clip.fps, VIDEO_FPS, seconds * FRAMES_PER_CHUNK, size, size)
    waveform, _ = media.conform_audio(clip.audio.waveform, clip.audio.sample_rate, SAMPLE_RATE, seconds * SAMPLE_RATE)
    return TrainingClip(frames, waveform, caption)


def sidecar_caption(path: Path) -> str:
    """The caption of video file ``path``: the ``"caption"`` of the ``.json`` beside it, else the ``.txt``."""
    sidecar, text = path.with_suffix(".json"), path.with_suffix(".txt")
    if sidecar.is_file():
        caption = json_caption(sidecar.read_text())
        if caption is not None:
            return caption
    if text.is_file():
        return text.read_text().strip()
    raise InputError(f"training clip {str(path)!r} has no caption: add {sidecar.name} with a 'caption' or {text.name}")


def json_caption(text: str) -> str | None:
    """The caption a clip's JSON holds (the first of :data:`CAPTION_KEYS` that is a string), or None."""
    record = json.loads(text)
    found = (record.get(key) for key in CAPTION_KEYS) if isinstance(record, dict) else ()
    return next((c for c in found if isinstance(c, str)), None)
