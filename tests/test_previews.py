"""Live previews: the samplers' x0 estimate, the linear latent maps against the real decoders, the picture."""

from __future__ import annotations

import sys

import pytest
import torch

from uniform_core.bundle import load_bundle
from uniform_core.diffusion.samplers import SAMPLERS, sample
from uniform_core.diffusion.schedule import NoiseSchedule
from uniform_core.previews import LivePreview, PreviewMap, preview_errors, preview_image

EMBEDDED = "uniform-tiny (embedded)"


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_x0_estimate_is_the_data_under_the_exact_noise_predictor(sampler):
    # All data at one point x*: the exact eps at (x_t, t) is (x_t - sqrt(abar) x*) / sqrt(1 - abar), so every
    # step's x0 estimate must be x* itself, and the kept (condition) entries are the clean ones.
    abar = NoiseSchedule().alphas_cumprod.float()
    target = torch.randn(2, 12)
    clean = torch.zeros(2, 12)
    keep = torch.zeros(12, dtype=torch.bool)
    keep[:3] = True
    target[:, :3] = clean[:, :3]

    def exact(x, t):
        a = abar[t].view(-1, 1)
        return (x - a.sqrt() * target) / (1 - a).sqrt(), torch.zeros_like(x)

    estimates = []
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    sample(exact, torch.randn(2, 12), clean, keep, sampler, 5, generators, x0_callback=lambda *a: estimates.append(a))
    assert [(step, total) for step, total, _ in estimates] == [(i, 5) for i in range(1, 6)]
    for _, _, x0 in estimates:
        torch.testing.assert_close(x0, target, atol=1e-4, rtol=1e-4)


def test_stored_map_is_close_to_the_real_decode():
    """The embedded bundle's preview.json against its own VAEs on held-out clips (if this fails after a codec
    changed: python scripts/fit_preview.py). Measured: RGB off by 0.060 on 0..1 per latent cell (the clip's mean
    colour: 0.062; the backdrop dominates, the object shows as a blob of roughly its colour), the sound level by
    0.066 of its range (mean level: 0.119)."""
    bundle = load_bundle()
    assert bundle.preview is not None, "the embedded bundle has no preview.json: python scripts/fit_preview.py"
    errors = preview_errors(bundle.preview, bundle.video_vae, bundle.audio_codec)
    assert errors["video_rgb_mae"] < 0.07 and errors["video_rgb_mae"] < errors["video_rgb_mae_of_mean_colour"]
    assert errors["audio_level_mae"] < 0.08 and errors["audio_level_mae"] < errors["audio_level_mae_of_mean_level"]


def _plain_map() -> PreviewMap:
    """Latent channels 0-2 are R, G, B in [-1, 1]; audio channel 0 is the level, drawn over -1..1."""
    rgb = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0))
    return PreviewMap(rgb, (0.0, 0.0, 0.0), (1.0,) + (0.0,) * 7, 0.0, (-1.0, 1.0))


def test_preview_picture_shows_frames_over_a_spectrogram_strip():
    video = torch.zeros(4, 10, 4, 6)
    video[0] = 1.0  # red everywhere
    video[2, 9] = 1.0  # the last latent frame also blue: magenta
    audio = torch.full((8, 50, 16), -1.0)
    audio[0, 25:, :8] = 1.0  # the second half of the clip loud in the low half of the bins
    image = preview_image(_plain_map(), video, audio, frames=4)
    frame_h, frame_w = 4 * 8, 6 * 8
    assert image.dtype == torch.uint8 and image.shape == (frame_h + 2 + 16, 4 * frame_w, 3)
    first, last = image[frame_h // 2, frame_w // 2], image[frame_h // 2, 3 * frame_w + frame_w // 2]
    assert first.tolist() == [255, 128, 128] and last.tolist() == [255, 128, 255]
    strip = image[frame_h + 2 :, :, 0].float()
    width = strip.shape[1]
    assert strip[-2, 3 * width // 4] > 250 and strip[-2, width // 4] < 5  # loud late, silent early
    assert strip[1, 3 * width // 4] < 5  # and only in the low bins (drawn at the bottom)


def test_live_preview_shows_every_interval_and_the_last_step():
    shown = []
    preview = LivePreview(_plain_map(), 3, lambda step, total, image: shown.append((step, image.shape)))
    for step in range(1, 8):
        preview(step, 7, torch.zeros(2, 4, 5, 2, 2), torch.zeros(2, 8, 25, 16))
    assert [step for step, _ in shown] == [3, 6, 7] and shown[0][1] == (2 * 8 + 2 + 16, 4 * 2 * 8, 3)


def test_sampler_node_shows_previews_from_the_bundles_map(pack, monkeypatch):
    host = sys.modules[f"{pack.__name__}.nodes.host"]
    shown = []
    monkeypatch.setattr(host, "preview_shower", lambda: lambda step, total, image: shown.append((step, total, image)))
    nodes = {name: cls() for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
    dit, _, _, text_encoder = nodes["UniFormLoadBundle"].run(bundle=EMBEDDED, precision="fp32", offload="auto")
    (text,) = nodes["UniFormTextEncode"].run(text_encoder=text_encoder, prompt="a red ball", negative_prompt="")
    (latent,) = nodes["UniFormTaskLatent"].run(task="t2av", duration=1, width=64, height=64)
    args = dict(dit=dit, latent=latent, seed=0, steps=3, cfg=3.0, sampler="ddim", batch_size=1, text=text)
    nodes["UniFormSampler"].run(**args, preview_interval=2)
    assert [(step, total) for step, total, _ in shown] == [(2, 3), (3, 3)]
    assert all(image.dtype == torch.uint8 and image.shape == (64 + 2 + 21, 4 * 64, 3) for *_, image in shown)


def test_long_sampler_previews_count_the_steps_of_all_windows(pack, monkeypatch):
    host = sys.modules[f"{pack.__name__}.nodes.host"]
    shown = []
    monkeypatch.setattr(host, "preview_shower", lambda: lambda step, total, image: shown.append((step, total)))
    nodes = {name: cls() for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
    dit, _, _, text_encoder = nodes["UniFormLoadBundle"].run(bundle=EMBEDDED, precision="fp32", offload="auto")
    (text,) = nodes["UniFormTextEncode"].run(text_encoder=text_encoder, prompt="a red ball", negative_prompt="")
    (latent,) = nodes["UniFormTaskLatent"].run(task="t2av", duration=3, width=64, height=64)
    settings = dict(seed=0, steps=2, cfg_video=3.0, cfg_audio=3.0, sampler="ddim", window=2, overlap=1)
    nodes["UniFormLongSampler"].run(dit=dit, latent=latent, text=text, **settings, preview_interval=3)
    assert shown == [(3, 4), (4, 4)]  # two windows of two steps: one bar, one preview every 3 steps and the last
