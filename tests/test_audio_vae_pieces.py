"""The audio VAE decodes long clips in time pieces: the whole-clip mel (whole-clip GroupNorm statistics, attention
over the whole latent), and memory beyond the mel that does not grow with the clip. Checked against the unchunked
decode of the same weights: the shipped uniform-tiny VAE and a random tiny one (an AudioLDM-sized one for the halo;
its whole parity run takes minutes here)."""

from __future__ import annotations

import pytest
import torch

import uniform_core.codecs.audio_pieces as audio_pieces
from uniform_core.bench import TensorPeak
from uniform_core.bundle import COMPONENT_FILES, DEFAULT_BUNDLE_DIR
from uniform_core.codecs.audio import AudioVAE, load_audio_vae


def _vae(which: str) -> AudioVAE:
    if which == "shipped":
        return load_audio_vae(DEFAULT_BUNDLE_DIR / COMPONENT_FILES["audio_vae"]).eval()
    torch.manual_seed(0)
    return AudioVAE.from_preset(which).eval()


def _whole(vae: AudioVAE, z: torch.Tensor) -> torch.Tensor:
    return vae.model.decode(z).sample.squeeze(1)  # diffusers' own decode, one pass over the clip


@pytest.mark.parametrize(("which", "steps"), [("shipped", 60), ("tiny", 97)])
def test_pieces_give_the_whole_clips_mel(monkeypatch, which, steps):
    monkeypatch.setattr(audio_pieces, "RUN_STEPS", 40)
    vae = _vae(which)
    torch.manual_seed(1)
    z = torch.randn(1 if which == "shipped" else 2, vae.config.latent_channels, steps, 16)
    with torch.no_grad():
        whole, pieces = _whole(vae, z), vae.decode(z)
    assert pieces.shape == whole.shape == (z.shape[0], steps * vae.config.downsample, 16 * vae.config.downsample)
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-4)


def test_a_clip_of_one_run_decodes_bit_for_bit_as_before():
    vae = _vae("shipped")
    z = torch.randn(1, vae.config.latent_channels, audio_pieces.RUN_STEPS, 16)
    with torch.no_grad():
        assert torch.equal(vae.decode(z), _whole(vae, z))


@pytest.mark.parametrize("which", ["shipped", "audioldm-s-full"])
def test_the_halo_covers_the_up_paths_receptive_field(which):
    """With the GroupNorms' statistics held fixed (as in a piece), a change of the mid block's output at one latent
    step reaches no further than the halo."""
    vae = _vae(which)
    decoder, steps, bumped_at = vae.model.decoder, 60, 30
    h = torch.randn(1, decoder.up_blocks[0].resnets[0].in_channels, steps, 4)
    norms = [audio_pieces._Norm(n) for n in audio_pieces._norms_in_order(decoder)]
    for n in norms:
        n.stats = torch.zeros(1, n.norm.num_groups, dtype=torch.float64), torch.ones(1, n.norm.num_groups)
    bumped = h.clone()
    bumped[:, :, bumped_at] += 1.0
    with torch.no_grad(), audio_pieces._patched(norms, None):
        changed = (audio_pieces._up_path(decoder, bumped) - audio_pieces._up_path(decoder, h)).abs()[0].amax((0, 2))
    rows = changed.nonzero()[:, 0] / vae.config.downsample  # output rows in latent steps
    farthest = max(bumped_at - float(rows.min()), float(rows.max()) - (bumped_at + 1))
    assert 0 < farthest <= audio_pieces.halo_steps(decoder)


def test_memory_beyond_the_mel_does_not_grow_with_the_clip(monkeypatch):
    monkeypatch.setattr(audio_pieces, "RUN_STEPS", 40)
    vae, beyond = _vae("shipped"), []
    for steps in (40, 160):
        z = torch.randn(1, vae.config.latent_channels, steps, 16)
        with torch.no_grad(), TensorPeak([*vae.parameters(), *vae.buffers(), z]) as peak:
            vae.decode(z)
        beyond.append(peak.peak_mb - steps * vae.config.downsample * 16 * vae.config.downsample * 4 / 2**20)
    assert beyond[1] <= 1.1 * beyond[0], beyond
