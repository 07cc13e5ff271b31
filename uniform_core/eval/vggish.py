"""VGGish, the FAD feature network, as audioldm_eval uses it: torchvggish's weights, no PCA, no final ReLU.

The front end is AudioSet's ``mel_features``: 25 ms periodic-Hann frames every 10 ms, 512-point FFT magnitude, 64
HTK-mel bands over 125-7500 Hz (triangles linear in mel, DC bin dropped), ``log(mel + 0.01)``, cut into
non-overlapping 0.96 s examples of 96 x 64. Every example gives one 128-d embedding, and FAD pools the examples of
all clips.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError

SAMPLE_RATE = 16_000
WINDOW, HOP, N_FFT = 400, 160, 512
N_MELS, MEL_LOW_HZ, MEL_HIGH_HZ, LOG_OFFSET = 64, 125.0, 7500.0, 0.01
EXAMPLE_FRAMES = 96  # 0.96 s


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def mel_matrix() -> torch.Tensor:
    """(257, 64) weights that turn STFT magnitudes into AudioSet's HTK-mel bands."""
    bins_mel = _hz_to_mel(torch.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1, dtype=torch.float64))
    low, high = _hz_to_mel(torch.tensor([MEL_LOW_HZ, MEL_HIGH_HZ], dtype=torch.float64)).tolist()
    edges = torch.linspace(low, high, N_MELS + 2, dtype=torch.float64)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = torch.minimum(rising, falling).clamp(min=0.0)
    weights[0] = 0.0
    return weights


def log_mel_examples(waveform: torch.Tensor) -> torch.Tensor:
    """(N,) float at 16 kHz -> (E, 1, 96, 64) log-mel examples (incomplete frames and examples are dropped)."""
    if waveform.ndim != 1 or waveform.shape[0] < WINDOW + (EXAMPLE_FRAMES - 1) * HOP:
        raise InputError(f"VGGish needs a mono waveform of at least 0.975 s at 16 kHz; got {tuple(waveform.shape)}")
    frames = waveform.double().unfold(0, WINDOW, HOP)  # (F, 400), no padding
    window = 0.5 - 0.5 * torch.cos(2 * math.pi / WINDOW * torch.arange(WINDOW, dtype=torch.float64))
    magnitude = torch.fft.rfft(frames * window, n=N_FFT).abs()
    log_mel = torch.log(magnitude @ mel_matrix() + LOG_OFFSET)
    n = log_mel.shape[0] // EXAMPLE_FRAMES
    return log_mel[: n * EXAMPLE_FRAMES].reshape(n, 1, EXAMPLE_FRAMES, N_MELS).float()


class VGGish(nn.Module):
    """torchvggish's network (keys ``features.*``, ``embeddings.*``) without the last ReLU, as FAD uses it."""

    name = "vggish"
    dim = 128
    sample_rate = SAMPLE_RATE

    def __init__(self):
        super().__init__()
        layers, channels = [], 1
        for width in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if width == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 128),
        )

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, N) float waveforms at 16 kHz -> (B * E, 128), E = whole 0.96 s examples per clip."""
        if waveforms.ndim != 2:
            raise InputError(f"VGGish takes waveforms (B, N) at 16 kHz; got shape {tuple(waveforms.shape)}")
        x = torch.cat([log_mel_examples(w) for w in waveforms.cpu()]).to(next(self.parameters()).device)
        x = self.features(x)  # (K, 512, 6, 4): 96 frames x 64 bands pooled 16x
        x = x.permute(0, 2, 3, 1).flatten(1)  # TensorFlow's (H, W, C) flattening order, which the weights expect
        return self.embeddings(x)
