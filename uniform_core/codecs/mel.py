"""AudioLDM's mel front end: the log-mel spectrogram its VAE was trained on.

Matches ``audioldm/audio/stft.py::TacotronSTFT(1024, 160, 1024, 64, 16000, 0, 8000)``, and
:meth:`MelFrontEnd.fbank` is ``audioldm/audio/tools.py::wav_to_fbank`` after the file is read (levelling, padding,
spectrogram crop, in the reference's order), so latents of real AudioLDM checkpoints are what their authors' code
gives. The Slaney mel filters are computed here (same numbers as ``librosa.filters.mel``) so librosa is not a
run-time dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import checks
from ..errors import InputError


@dataclass(frozen=True)
class MelConfig:
    """STFT and mel settings; the defaults are AudioLDM's (16 kHz, 10 ms hop, 64 Slaney mels up to 8 kHz)."""

    sample_rate: int = 16_000
    n_fft: int = 1024
    hop_length: int = 160
    win_length: int = 1024
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-5

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


def hz_to_mel_slaney(hz: torch.Tensor) -> torch.Tensor:
    """Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (librosa ``htk=False``)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    linear = hz / f_sp
    log = min_log_mel + torch.log(torch.clamp(hz, min=min_log_hz) / min_log_hz) / logstep
    return torch.where(hz >= min_log_hz, log, linear)


def mel_to_hz_slaney(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel_slaney`."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    linear = mel * f_sp
    log = min_log_hz * torch.exp(logstep * (mel - min_log_mel))
    return torch.where(mel >= min_log_mel, log, linear)


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """Triangular mel filters with Slaney area normalisation: ``(n_mels, n_fft // 2 + 1)`` float32.

    Same as ``librosa.filters.mel(sr=..., n_fft=..., n_mels=..., fmin=..., fmax=...)`` (its defaults), computed in
    float64 like librosa and returned as float32.
    """
    fft_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_edges = torch.linspace(
        float(hz_to_mel_slaney(torch.tensor(fmin, dtype=torch.float64))),
        float(hz_to_mel_slaney(torch.tensor(fmax, dtype=torch.float64))),
        n_mels + 2,
        dtype=torch.float64,
    )
    hz_edges = mel_to_hz_slaney(mel_edges)  # (n_mels + 2,) lower edge, centre, upper edge of each triangle
    widths = torch.diff(hz_edges)
    ramps = hz_edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights = weights * (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]  # equal area per filter
    return weights.float()


class MelFrontEnd(nn.Module):
    """Waveform ``(B, N)`` at 16 kHz -> log-mel ``(B, N // hop, n_mels)``, the AudioLDM VAE's input.

    The filters and window are non-persistent buffers: they follow ``.to(device)`` but are never saved.
    """

    def __init__(self, config: MelConfig | None = None):
        super().__init__()
        self.config = config or MelConfig()
        c = self.config
        self.register_buffer(
            "mel_basis", slaney_mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax), persistent=False
        )
        self.register_buffer("window", torch.hann_window(c.win_length, periodic=True), persistent=False)

    @property
    def min_samples(self) -> int:
        """Shortest waveform the centred reflect-padded STFT accepts."""
        return self.config.n_fft // 2 + 1

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``waveform``: ``(B, N)`` float at ``sample_rate``, in [-1, 1]. Returns ``(B, N // hop, n_mels)`` log-mel.

        The centred STFT has ``N // hop + 1`` frames; the last one (half outside the signal) is dropped so that
        ``T`` is exactly 100 frames per second, as AudioLDM's ``_pad_spec`` crops it.
        """
        c = self.config
        check_waveform(waveform, "waveform", min_samples=self.min_samples)
        spec = torch.stft(
            waveform.float(),
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window.float(),  # float32 even when the codec was cast to half precision
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).abs()  # (B, n_fft // 2 + 1, T + 1) magnitude, not power
        mel = torch.matmul(self.mel_basis.float(), spec[..., : waveform.shape[-1] // c.hop_length])
        return torch.log(torch.clamp(mel, min=c.log_floor)).transpose(1, 2)

    def fbank(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        """AudioLDM's ``wav_to_fbank``: ``waveform`` ``(B, N)`` mono at ``sample_rate``, any length and level ->
        ``(B, num_frames, n_mels)`` log-mel (``target_length``; 1024 frames = 10.24 s).

        Each row is levelled over its whole length, padded with silence to ``num_frames`` hops
        (:func:`audioldm_waveform`), and its spectrogram is cut to ``num_frames``: a long file is never cut as a
        waveform, so its level comes from all of it and its last frames see the sound that follows. Only the
        samples those frames reach go into the STFT (the result is the same).
        """
        c = self.config
        check_waveform(waveform, "waveform")
        checks.integer(num_frames, "num_frames (mel frames, 100 per second)", 1)
        levelled = audioldm_waveform(waveform.float(), num_frames * c.hop_length)
        reach = num_frames * c.hop_length + c.n_fft // 2  # past the last sample of frame num_frames - 1's window
        return self(levelled[:, :reach])[:, :num_frames]


def normalize_waveform(waveform: torch.Tensor) -> torch.Tensor:
    """AudioLDM's ``read_wav_file`` level: remove each row's mean, then scale its peak to 0.5. ``(B, N) -> (B, N)``.

    Silence stays silence (the 1e-8 guards the division).
    """
    check_waveform(waveform, "waveform")
    centred = waveform - waveform.mean(dim=-1, keepdim=True)
    peak = centred.abs().amax(dim=-1, keepdim=True)
    return centred / (peak + 1e-8) * 0.5


def audioldm_waveform(waveform: torch.Tensor, num_samples: int) -> torch.Tensor:
    """AudioLDM's ``read_wav_file`` after loading: ``(B, N)`` -> ``(B, max(N, num_samples))``.

    As its code runs: each row is levelled (:func:`normalize_waveform`), padded with silence to ``num_samples``,
    then its peak is set to 0.5 again. A longer row is kept whole: the reference's ``pad_wav`` crops with
    ``waveform[:segment_length]`` on a ``(1, N)`` array, which slices the channel axis, not time. Silence stays
    silence (the reference divides 0 by 0 there). The reference then clips to [-1, 1], a no-op at peak 0.5.
    """
    levelled = normalize_waveform(waveform)
    padded = F.pad(levelled, (0, max(0, num_samples - levelled.shape[-1])))
    peak = padded.abs().amax(dim=-1, keepdim=True)
    return torch.where(peak > 0, padded / peak, padded) * 0.5


def check_waveform(waveform: object, name: str, min_samples: int = 1) -> None:
    """Raise InputError unless ``waveform`` is a finite floating ``(B, N)`` tensor with ``N >= min_samples``."""
    if not isinstance(waveform, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (batch, samples); got {type(waveform).__name__}")
    if waveform.dim() != 2:
        raise InputError(
            f"{name} must have shape (batch, samples), mono (down-mix channels first); got {tuple(waveform.shape)}"
        )
    if not waveform.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor; got dtype {waveform.dtype}")
    if waveform.shape[0] == 0 or waveform.shape[1] < min_samples:
        raise InputError(
            f"{name} is too short: shape {tuple(waveform.shape)}, at least 1 x {min_samples} samples are needed"
        )
    if not torch.isfinite(waveform).all():
        raise InputError(f"{name} contains NaN or infinite samples")
