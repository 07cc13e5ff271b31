"""HiFi-GAN's discriminators (Kong et al. 2020, section 2.2-2.3), at a width a CPU can train.

The multi-period discriminator (MPD) folds the waveform into ``(T / p, p)`` for the prime periods 2, 3, 5, 7, 11
and judges it with 2D convolutions over time only, so each sub-discriminator sees one phase of a periodic signal
(what a vocoder gets wrong in tones and in the buzz of periodic artefacts). The multi-scale discriminator (MSD)
judges the raw waveform and its x2 and x4 average-pooled copies with strided, grouped 1D convolutions: envelopes
and onsets. The layouts are the paper's (kernels, strides, groups); the channels are scaled by ``width``
(HiFi-GAN's are ``width = 1``; 1/8 of them is enough for the synthetic sounds). Weight norm everywhere, spectral
norm on the first MSD scale, as in the paper. Each discriminator returns its logits and every layer's features
(for the feature-matching loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

LEAKY_SLOPE = 0.1
MPD_PERIODS = (2, 3, 5, 7, 11)
MPD_CHANNELS = (32, 128, 512, 1024, 1024)  # HiFi-GAN's, scaled by width
MSD_LAYERS = ((128, 15, 1, 1), (128, 41, 2, 4), (256, 41, 2, 16), (512, 41, 4, 16), (1024, 41, 4, 16))
MSD_LAYERS += ((1024, 41, 1, 16), (1024, 5, 1, 1))  # (channels, kernel, stride, groups), HiFi-GAN's MSD

Judgement = tuple[torch.Tensor, list[torch.Tensor]]  # (logits (B, n), features of every layer)


def _width(channels: int, width: float, groups: int = 1) -> int:
    """``channels * width`` rounded to a multiple of ``groups`` (at least ``groups``)."""
    return max(groups, round(channels * width / groups) * groups)


class PeriodDiscriminator(nn.Module):
    """One MPD sub-discriminator: ``(B, N)`` waveform -> ``(B, T/p * p')`` logits, folded at ``period``."""

    def __init__(self, period: int, width: float):
        super().__init__()
        self.period = period
        chans = [1, *(_width(c, width) for c in MPD_CHANNELS)]
        strides = (3, 3, 3, 3, 1)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(i, o, (5, 1), (s, 1), padding=(2, 0)))
            for i, o, s in zip(chans[:-1], chans[1:], strides, strict=True)
        )
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, wave: torch.Tensor) -> Judgement:
        x = F.pad(wave, (0, -wave.shape[-1] % self.period), mode="reflect")
        x = rearrange(x, "B (T p) -> B 1 T p", p=self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LEAKY_SLOPE)
            features.append(x)
        x = self.post(x)
        features.append(x)
        return x.flatten(1), features


class ScaleDiscriminator(nn.Module):
    """One MSD sub-discriminator: ``(B, N)`` waveform -> ``(B, N')`` logits."""

    def __init__(self, width: float, spectral: bool):
        super().__init__()
        norm = spectral_norm if spectral else weight_norm
        layers, channels = [], 1
        for out, kernel, stride, groups in MSD_LAYERS:
            out = _width(out, width, groups)
            layers.append(norm(nn.Conv1d(channels, out, kernel, stride, groups=groups, padding=kernel // 2)))
            channels = out
        self.convs = nn.ModuleList(layers)
        self.post = norm(nn.Conv1d(channels, 1, 3, padding=1))

    def forward(self, wave: torch.Tensor) -> Judgement:
        x, features = wave.unsqueeze(1), []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LEAKY_SLOPE)
            features.append(x)
        x = self.post(x)
        features.append(x)
        return x.flatten(1), features


class HifiGanDiscriminator(nn.Module):
    """MPD (5 periods) + MSD (3 scales): ``(B, N)`` waveform -> one :data:`Judgement` per sub-discriminator."""

    def __init__(self, width: float = 0.125):
        super().__init__()
        self.periods = nn.ModuleList(PeriodDiscriminator(p, width) for p in MPD_PERIODS)
        self.scales = nn.ModuleList(ScaleDiscriminator(width, spectral=i == 0) for i in range(3))

    def forward(self, wave: torch.Tensor) -> list[Judgement]:
        out = [d(wave) for d in self.periods]
        for i, d in enumerate(self.scales):
            if i:
                wave = F.avg_pool1d(wave.unsqueeze(1), 4, 2, padding=2).squeeze(1)
            out.append(d(wave))
        return out
