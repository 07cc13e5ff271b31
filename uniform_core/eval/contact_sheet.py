"""Pictures of what a bundle makes: a contact sheet of frames and a spectrogram sheet, one example per task.

For one synthetic clip the sheets show the real clip (the V2A input and A2V's sound), T2AV from its caption, A2V
from its sound and V2A from its video, so a reader sees the picture and hears, in a picture, the sound.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..atomic import write_bytes
from ..train.synthetic import make_clip
from .benchmark import EvalSettings, eval_spec, generate_for_clip
from .events import visual_impacts

FRAMES_SHOWN = 8
SCALE = 2  # pixels per video pixel
LABEL_PX = 150
SPECTRO_N_FFT, SPECTRO_HOP = 512, 128
SPECTRO_RANGE_DB = 80.0
# Anchors of a dark-to-bright colour map (black, purple, orange, yellow-white), for dB from -RANGE to 0.
_CMAP = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], dtype=np.float64)


def _labelled(rows: list[tuple[str, np.ndarray]], title: str) -> Image.Image:
    """Stack (label, uint8 HxWx3 image) rows under a title line, labels in a left margin."""
    width = LABEL_PX + max(img.shape[1] for _, img in rows)
    height = 20 + sum(img.shape[0] + 4 for _, img in rows)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), title, fill=(0, 0, 0))
    y = 20
    for label, img in rows:
        sheet.paste(Image.fromarray(img), (LABEL_PX, y))
        draw.text((4, y + img.shape[0] // 2 - 6), label, fill=(0, 0, 0))
        y += img.shape[0] + 4
    return sheet


def _strip(frames: torch.Tensor) -> np.ndarray:
    """(T, H, W, 3) in [0, 1] -> FRAMES_SHOWN evenly spaced frames side by side, upscaled, with 2-px gaps."""
    idx = np.linspace(0, frames.shape[0] - 1, FRAMES_SHOWN).round().astype(int)
    tiles = []
    for i in idx:
        tile = (frames[i].clamp(0, 1).numpy() * 255).round().astype(np.uint8).repeat(SCALE, 0).repeat(SCALE, 1)
        tiles += [tile, np.full((tile.shape[0], 2, 3), 255, np.uint8)]
    return np.concatenate(tiles[:-1], 1)


def power_db(waveform: torch.Tensor) -> np.ndarray:
    """(F, frames) power spectrogram in dB."""
    window = torch.hann_window(SPECTRO_N_FFT, dtype=torch.float64)
    spec = torch.stft(waveform.reshape(-1).double(), SPECTRO_N_FFT, SPECTRO_HOP, window=window, return_complex=True)
    return 10 * np.log10(spec.abs().square().numpy() + 1e-12)


def spectrogram_image(waveform: torch.Tensor, sample_rate: int, events: list[float], ref_db: float) -> np.ndarray:
    """Power spectrogram (dB re ``ref_db``, 0-8 kHz, low frequencies at the bottom) as a colour image, with a
    white tick above each of ``events`` (seconds)."""
    db = power_db(waveform) - ref_db
    level = np.clip(db / SPECTRO_RANGE_DB + 1, 0, 1)[::-1]  # (F, frames) in [0, 1], high frequencies on top
    pos = level * (len(_CMAP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_CMAP) - 2)
    img = _CMAP[lo] + (pos - lo)[..., None] * (_CMAP[lo + 1] - _CMAP[lo])
    img = np.asarray(Image.fromarray(img.round().astype(np.uint8)).resize((level.shape[1] * 2, 128)))
    img = img.copy()
    for t in events:
        x = int(round(t * sample_rate / SPECTRO_HOP * 2))
        img[:6, max(0, x - 1) : x + 1] = 255
    return img


def _png(image: Image.Image, path: Path) -> Path:
    buffer = io.BytesIO()
    image.quantize(colors=128).save(buffer, format="PNG", optimize=True)  # 128 colours keep a sheet under 300 KB
    write_bytes(path, buffer.getvalue())
    return path


def write_contact_sheets(pipe, out_dir, seed: int, settings: EvalSettings | None = None) -> list[Path]:
    """Run T2AV, A2V and V2A on synthetic clip ``seed`` with ``pipe`` and write ``contact_sheet.png`` (frames) and
    ``spectrograms.png`` (sound) into ``out_dir``. Returns the two paths."""
    settings = settings or EvalSettings()
    spec = eval_spec(pipe.bundle)
    clip = make_clip(seed, spec)
    out = {
        task: generate_for_clip(pipe, task, clip, spec, settings, settings.seed, text=True)
        for task in ("t2av", "a2v", "v2a")
    }
    title = f'seed {seed}: "{clip.caption}" ({settings.steps} steps, bundle {pipe.bundle.name})'
    frames = _labelled(
        [
            ("real clip (V2A input)", _strip(clip.frames)),
            ("T2AV (caption)", _strip(out["t2av"].frames[0])),
            ("A2V (real sound)", _strip(out["a2v"].frames[0])),
        ],
        title,
    )
    sr, ref = spec.sample_rate, float(power_db(clip.waveform).max())
    t2av_impacts = visual_impacts(out["t2av"].frames[0], spec.fps)
    sounds = _labelled(
        [
            ("real clip (A2V input)", spectrogram_image(clip.waveform, sr, clip.events, ref)),
            ("T2AV (caption)", spectrogram_image(out["t2av"].waveform[0], sr, t2av_impacts, ref)),
            ("V2A (real video)", spectrogram_image(out["v2a"].waveform[0], sr, clip.events, ref)),
        ],
        f'seed {seed}: "{clip.caption}"; 0-8 kHz, 80 dB; ticks: impacts in the row\'s video',
    )
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return [_png(frames, folder / "contact_sheet.png"), _png(sounds, folder / "spectrograms.png")]
