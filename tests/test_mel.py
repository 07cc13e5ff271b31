"""AudioLDM mel front end: parity with librosa's filters + STFT, frame count, levelling, and input errors."""

import librosa
import numpy as np
import pytest
import torch

from uniform_core.codecs.mel import MelFrontEnd, normalize_waveform, slaney_mel_filterbank
from uniform_core.errors import InputError


@pytest.fixture(scope="module")
def front():
    return MelFrontEnd()


def _chirp_with_noise(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    chirp = 0.3 * torch.sin(2 * torch.pi * (200 + 1500 * t) * t)
    return (chirp + 0.05 * torch.randn(n, generator=g)).unsqueeze(0)


def test_filterbank_equals_librosa():
    ours = slaney_mel_filterbank(16000, 1024, 64, 0.0, 8000.0).numpy()
    ref = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0)
    assert ours.shape == ref.shape == (64, 513)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)


def test_log_mel_equals_librosa_filters_and_torch_stft(front):
    wav = _chirp_with_noise(16000)
    spec = torch.stft(
        wav, 1024, 160, 1024, torch.hann_window(1024, periodic=True), center=True, pad_mode="reflect",
        return_complex=True,
    ).abs()  # fmt: skip
    basis = torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0))
    ref = torch.log(torch.clamp(basis @ spec, min=1e-5)).transpose(1, 2)[:, :100]
    out = front(wav)
    assert out.shape == (1, 100, 64)
    assert torch.allclose(out, ref, atol=1e-4, rtol=0)


def test_log_mel_equals_librosa_stft(front):
    wav = _chirp_with_noise(8000, seed=1)
    spec = np.abs(librosa.stft(wav[0].numpy(), n_fft=1024, hop_length=160, window="hann", pad_mode="reflect"))
    mel = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0) @ spec
    ref = np.log(np.maximum(mel, 1e-5)).T[:50]
    np.testing.assert_allclose(front(wav)[0].numpy(), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [640, 1000, 16000, 64000])
def test_one_frame_per_hop(front, n):
    assert front(torch.zeros(2, n)).shape == (2, n // 160, 64)


def test_silence_is_the_log_floor(front):
    assert torch.allclose(front(torch.zeros(1, 1600)), torch.full((1, 10, 64), float(np.log(1e-5))))


def test_normalize_removes_mean_and_sets_peak_per_row():
    g = torch.Generator().manual_seed(0)
    wav = torch.stack([torch.randn(4000, generator=g) * 3 + 1, torch.rand(4000, generator=g) * 0.01])
    out = normalize_waveform(wav)
    assert torch.allclose(out.mean(dim=1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(out.abs().amax(dim=1), torch.full((2,), 0.5), atol=1e-6)
    assert torch.equal(normalize_waveform(torch.zeros(1, 100)), torch.zeros(1, 100))


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.full((1, 2000), float("nan")), "NaN"),
        (torch.zeros(1, 0), "too short"),
        (torch.zeros(0, 2000), "too short"),
        (torch.zeros(1, 100), "too short"),
        (torch.zeros(2000), r"\(batch, samples\)"),
        (torch.zeros(1, 2, 2000), r"\(batch, samples\)"),
        (torch.zeros(1, 2000, dtype=torch.int16), "floating"),
        (np.zeros((1, 2000)), "torch.Tensor"),
    ],
)
def test_bad_waveforms_raise_input_error(front, bad, match):
    with pytest.raises(InputError, match=match):
        front(bad)


def test_nothing_is_saved():
    assert MelFrontEnd().state_dict() == {}
