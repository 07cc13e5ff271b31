"""The vocoder runs long clips in pieces with a halo: the same waveform as one whole pass, and memory beyond the
output that does not grow with the clip."""

from __future__ import annotations

import pytest
import torch

import uniform_core.codecs.audio as audio
from uniform_core.bench import TensorPeak
from uniform_core.codecs.audio import Vocoder


def _vocoder(preset: str = "tiny") -> Vocoder:
    torch.manual_seed(0)
    return Vocoder.from_preset(preset).eval()


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_pieces_give_the_whole_clips_waveform(preset):
    vocoder, mel = _vocoder(preset), torch.randn(2, 700, 64)
    with torch.no_grad():
        whole = vocoder.model(mel)[:, : 700 * vocoder.config.hop_length]
        pieces = vocoder(mel)
    assert pieces.shape == whole.shape
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_the_halo_covers_the_receptive_field(preset):
    vocoder, mel = _vocoder(preset), torch.randn(1, 300, 64)
    bumped = mel.clone()
    bumped[:, 150] += 1.0
    with torch.no_grad():
        changed = (vocoder.model(bumped) - vocoder.model(mel)).abs()[0] > 0
    hop, reach = vocoder.config.hop_length, changed.nonzero()[:, 0]
    farthest = max(150 * hop - int(reach.min()), int(reach.max()) - 151 * hop) / hop
    assert 0 < farthest <= vocoder.halo_frames


def test_memory_beyond_the_output_does_not_grow_with_the_clip(monkeypatch):
    monkeypatch.setattr(audio, "VOCODER_PIECE_FRAMES", 100)
    vocoder, beyond = _vocoder(), []
    for frames in (400, 1600):
        mel = torch.randn(1, frames, 64)
        with torch.no_grad(), TensorPeak([*vocoder.parameters(), *vocoder.buffers(), mel]) as peak:
            vocoder(mel)
        beyond.append(peak.peak_mb - frames * vocoder.config.hop_length * 4 / 2**20)
    assert beyond[1] <= 1.1 * beyond[0], beyond
