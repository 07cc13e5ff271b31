"""AudioLDM mel front end: parity with librosa's filters + STFT and with AudioLDM's own ``wav_to_fbank`` (short,
exact and long files, a 10.24 s target), frame count, levelling order, and input errors."""

import ast
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from uniform_core import media
from uniform_core.codecs.mel import MelFrontEnd, audioldm_waveform, normalize_waveform, slaney_mel_filterbank
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


# ---- AudioLDM's wav_to_fbank, against values computed with its own code (tests/data/README.md) -------------------

REFERENCE = Path(__file__).parent / "data" / "golden" / "audioldm" / "fbank.safetensors"
REFERENCE_CASES = {  # case: (clip, AudioLDM target_length in frames)
    "short_256": ("short", 256),  # 1.5 s padded to 2.56 s
    "exact_256": ("exact", 256),
    "long_256": ("long", 256),  # 3.7 s, its loudest part after 2.56 s
    "long_10s_1024": ("long_10s", 1024),  # AudioLDM's own 10.24 s target, on a 10.6 s file
    "long_200": ("long", 200),
    "short_22k_200": ("short_22k", 200),  # 22.05 kHz, resampled first
}


@pytest.fixture(scope="module")
def reference():
    return load_file(REFERENCE)


def reference_waveform(reference, clip: str) -> torch.Tensor:
    """The clip as AudioLDM's ``read_wav_file`` has it after loading: PCM16 / 32768, resampled to 16 kHz."""
    waveform = reference[f"pcm16/{clip}"].float().unsqueeze(0) / 32768
    return media.resample_audio(waveform, int(reference[f"sample_rate/{clip}"]), 16000)


def test_reference_file_holds_these_cases():
    with safe_open(REFERENCE, "pt") as f:
        assert ast.literal_eval(f.metadata()["cases"]) == REFERENCE_CASES


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_fbank_is_audioldm_wav_to_fbank(front, reference, case):
    clip, frames = REFERENCE_CASES[case]
    ours = front.fbank(reference_waveform(reference, clip), frames)
    expected = reference[f"fbank/{case}"]
    assert ours.shape == (1, frames, 64)
    torch.testing.assert_close(ours[0].exp(), expected.exp(), atol=1e-4, rtol=0)  # linear mel


def test_levelling_happens_before_padding_and_long_files_stay_whole():
    """AudioLDM levels the whole file, then pads with true silence; a long file is not cut (its peak counts)."""
    wav = torch.cat([torch.full((1, 1000), 0.2), torch.full((1, 1000), 0.6)], dim=1)  # DC offset, loud tail
    short = audioldm_waveform(wav[:, :1000] + torch.linspace(0, 0.1, 1000), 3000)
    assert short.shape == (1, 3000) and torch.equal(short[:, 1000:], torch.zeros(1, 2000))
    assert torch.allclose(short[:, :1000].mean(), torch.tensor(0.0), atol=1e-6)
    long = audioldm_waveform(wav, 1000)
    assert long.shape == (1, 2000)  # kept whole: the reference's crop slices the channel axis
    torch.testing.assert_close(long, normalize_waveform(wav) / normalize_waveform(wav).abs().max() * 0.5)
    assert torch.equal(audioldm_waveform(torch.zeros(2, 500), 800), torch.zeros(2, 800))  # silence stays silence


def test_fbank_rejects_bad_frame_counts(front):
    for bad in (0, 2.5, True):
        with pytest.raises(InputError, match="num_frames"):
            front.fbank(torch.zeros(1, 1600), bad)
