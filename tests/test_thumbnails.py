"""Workflow thumbnails (uniform_core/eval/thumbnail.py): what the picture shows, and that every shipped graph has one.

Whether each committed thumbnail is what its graph makes now is checked against a run from the real page in
test_comfy_frontend.py (needs a ComfyUI checkout); scripts/render_thumbnails.py writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uniform_core import media
from uniform_core.eval.thumbnail import (
    FRAME_SIDE,
    FRAME_TIMES,
    HEIGHT,
    WIDTH,
    difference,
    jpeg,
    thumbnail,
    video_thumbnail,
)

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
FPS = 17.0
SECONDS = 3
SAMPLE_RATE = 16000


def timed_clip(with_audio: bool = True) -> media.VideoClip:
    """Each frame a flat grey whose level is its time (1/3 per second), and noise from 1 s on."""
    t = torch.arange(int(SECONDS * FPS)) / FPS
    frames = (t / SECONDS).view(-1, 1, 1, 1).expand(-1, 32, 48, 3).contiguous()
    audio = None
    if with_audio:
        noise = 0.3 * torch.randn(SECONDS * SAMPLE_RATE, generator=torch.Generator().manual_seed(0))
        noise[:SAMPLE_RATE] = 0
        audio = media.AudioClip(noise.view(1, -1), SAMPLE_RATE)
    return media.VideoClip(frames, FPS, audio)


def test_the_frames_shown_are_those_at_the_chosen_times():
    picture = np.asarray(thumbnail(timed_clip()))
    assert picture.shape == (HEIGHT, WIDTH, 3)
    for i, seconds in enumerate(FRAME_TIMES):
        tile = picture[:FRAME_SIDE, i * FRAME_SIDE : (i + 1) * FRAME_SIDE]
        expected = round(round(seconds * FPS) / FPS / SECONDS * 255)
        assert abs(float(tile.mean()) - expected) <= 1, f"frame at {seconds} s shows level {tile.mean():.1f}"


def test_the_sound_band_shows_when_the_sound_starts():
    band = np.asarray(thumbnail(timed_clip()))[FRAME_SIDE:].astype(float).mean(axis=(0, 2))  # level per column
    assert band[WIDTH // 2 + 8 :].mean() > band[: WIDTH // 2 - 8].mean() + 100  # the noise starts at 1 s of 2 s
    silent = np.asarray(thumbnail(timed_clip(with_audio=False)))[FRAME_SIDE:]
    assert silent.max() == 0


def test_a_video_file_gives_the_picture_of_its_clip(tmp_path):
    clip = timed_clip()
    media.write_mp4(tmp_path / "clip.mp4", clip.frames, clip.fps, clip.audio)
    from_file = video_thumbnail(tmp_path / "clip.mp4")
    assert difference(from_file, thumbnail(clip)) < 4  # H.264 and AAC round trip
    assert difference(from_file, thumbnail(timed_clip(with_audio=False))) > 20


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_every_workflow_has_a_thumbnail(path):
    """ComfyUI's template browser shows workflows/NAME.jpg on NAME's card; a missing one is a grey placeholder."""
    picture = path.with_suffix(".jpg")
    assert picture.is_file(), f"no {picture.name}: run scripts/render_thumbnails.py"
    with Image.open(picture) as image:
        assert image.format == "JPEG" and image.size == (WIDTH, HEIGHT) and image.mode == "RGB"
        frames = np.asarray(image)[:FRAME_SIDE]
        assert frames.std() > 5, f"{picture.name} shows no picture"  # not a flat placeholder
    assert picture.stat().st_size < 16_000
    assert len(jpeg(Image.open(picture))) < 16_000


def test_no_thumbnail_without_its_workflow():
    assert {p.stem for p in WORKFLOWS.glob("*.jpg")} == {p.stem for p in UI_FILES}
