"""PANNs CNN14 at 16 kHz, the FD / KL / IS network, as audioldm_eval uses it (``Cnn14_16k_mAP=0.438.pth``).

Keys follow the PANNs checkpoint, front end included: ``spectrogram_extractor.stft.conv_{real,imag}.weight`` (a
windowed DFT as a strided convolution, as torchlibrosa computes the STFT) and ``logmel_extractor.melW`` (librosa's
Slaney mel filters, 50-8000 Hz). Power spectrogram with 512-sample periodic-Hann windows every 160 samples (centred,
reflect-padded), 64 log-mel bands (``10 log10(max(mel, 1e-10))``), BatchNorm over bands, six conv blocks, time pooling
by max + mean, ``fc1`` (2048, ReLU: the FD embedding) and ``fc_audioset`` (527 AudioSet logits: KL and IS).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from ..errors import InputError

SAMPLE_RATE = 16_000
N_FFT, HOP, N_MELS, F_MIN, F_MAX, CLASSES = 512, 160, 64, 50.0, 8000.0, 527
MIN_SAMPLES = 2 * SAMPLE_RATE


class _Conv(nn.Module):
    """A frozen strided convolution holding one half (real or imaginary) of the windowed DFT."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)


class _STFT(nn.Module):
    def __init__(self):
        super().__init__()
        n = torch.arange(N_FFT, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / N_FFT)  # periodic Hann
        angle = 2 * math.pi * torch.outer(torch.arange(N_FFT // 2 + 1, dtype=torch.float64), n) / N_FFT
        self.conv_real = _Conv((torch.cos(angle) * window)[:, None, :].float())
        self.conv_imag = _Conv((-torch.sin(angle) * window)[:, None, :].float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) -> power spectrogram (B, 1, frames, 257)."""
        x = F.pad(x[:, None, :], (N_FFT // 2, N_FFT // 2), mode="reflect")
        real, imag = F.conv1d(x, self.conv_real.weight, stride=HOP), F.conv1d(x, self.conv_imag.weight, stride=HOP)
        return (real**2 + imag**2).transpose(1, 2)[:, None]


class _Spectrogram(nn.Module):
    def __init__(self):
        super().__init__()
        self.stft = _STFT()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stft(x)


class _LogMel(nn.Module):
    def __init__(self):
        super().__init__()
        mel = torchaudio.functional.melscale_fbanks(
            N_FFT // 2 + 1, F_MIN, F_MAX, N_MELS, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
        )
        self.melW = nn.Parameter(mel, requires_grad=False)  # (257, 64), librosa.filters.mel(...).T

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10 * torch.log10((power @ self.melW).clamp(min=1e-10))


class ConvBlock(nn.Module):
    """Two 3x3 conv + BatchNorm + ReLU, then average pooling."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(c_out), nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.avg_pool2d(x, pool)


class Cnn14(nn.Module):
    """CNN14 returning the 2048-d embedding (FD); :meth:`logits` gives the 527 AudioSet logits (KL, IS)."""

    name = "panns"
    dim = 2048
    sample_rate = SAMPLE_RATE

    def __init__(self):
        super().__init__()
        self.spectrogram_extractor = _Spectrogram()
        self.logmel_extractor = _LogMel()
        self.bn0 = nn.BatchNorm2d(N_MELS)
        widths = (1, 64, 128, 256, 512, 1024, 2048)
        for i in range(6):
            self.add_module(f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, CLASSES)

    def embed(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, N) float at 16 kHz -> (B, 2048) ReLU(fc1) embedding. Each clip is prepared as audioldm_eval reads
        files: its mean removed, zero-padded to at least 2 s."""
        if waveforms.ndim != 2 or waveforms.shape[1] < 1:
            raise InputError(f"PANNs takes waveforms (B, N) at 16 kHz; got shape {tuple(waveforms.shape)}")
        x = waveforms.float().to(self.fc1.weight.device)
        x = F.pad(x - x.mean(dim=1, keepdim=True), (0, max(0, MIN_SAMPLES - x.shape[1])))
        x = self.logmel_extractor(self.spectrogram_extractor(x))  # (B, 1, frames, 64)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # BatchNorm over the mel bands
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, 2 if i < 5 else 1)
        x = x.mean(dim=3)  # over frequency
        x = x.amax(dim=2) + x.mean(dim=2)  # over time
        return F.relu(self.fc1(x))

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.embed(waveforms)

    @torch.no_grad()
    def logits(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, N) at 16 kHz -> (B, 527) AudioSet logits."""
        return self.fc_audioset(self.embed(waveforms))
