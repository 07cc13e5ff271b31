"""What the sound is like: its class (tone, knock, chime), its level and how much it sounds like impacts.

Level and impact-likeness are compared with the real clips, whose sounds are short bursts at the impacts over a
faint noise floor: a model that makes a quiet, constant buzz is told apart from one that makes impacts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..train.synthetic import BURST_SECONDS
from .events import frame_energy_db, mono_waveform

CHIME_MIN_HZ = 700.0  # tonal sounds above this peak frequency are chimes, below it tones
KNOCK_MIN_FLATNESS = 0.2  # spectral flatness of the impact sound above which it is a noise knock
SILENCE_DB = -120.0  # the level reported for digital silence
IMPACT_LEAD_S = 0.02  # an impact's window opens this much before the event (onsets within 10-30 ms are on time)


def sound_class(waveform, sample_rate: int) -> str:
    """The vocabulary sound class of the impact sounds in ``waveform`` ((N,) or (C, N)): ``"knock"`` when their
    spectrum is noise-like (flat), otherwise ``"chime"`` or ``"tone"`` by the frequency of the spectral peak;
    ``"silence"`` when there is no sound above the noise floor."""
    w = mono_waveform(waveform)
    n_fft = max(64, int(0.032 * sample_rate))
    hop = n_fft // 4
    spec = torch.stft(
        torch.from_numpy(w),
        n_fft,
        hop,
        window=torch.hann_window(n_fft, dtype=torch.float64),
        center=True,
        return_complex=True,
    )
    power = spec.abs().square().numpy()  # (F, frames)
    energy = power.sum(0)
    if energy.max() <= 1e-8 * n_fft:
        return "silence"
    loud = energy >= energy.max() * 10 ** (-15 / 10)  # frames within 15 dB of the loudest: the impact sounds
    mean = power[:, loud].mean(1)
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    band = (freqs >= 100) & (freqs <= min(7000, sample_rate / 2 * 0.9))
    spectrum = mean[band] + 1e-12
    flatness = float(np.exp(np.log(spectrum).mean()) / spectrum.mean())
    if flatness >= KNOCK_MIN_FLATNESS:
        return "knock"
    return "chime" if freqs[band][spectrum.argmax()] >= CHIME_MIN_HZ else "tone"


@dataclass(frozen=True)
class Level:
    """Loudness of a clip in dB relative to full scale: ``rms_dbfs`` over the whole clip, ``peak_dbfs`` of the
    largest sample, ``peak_to_median_db`` from the median to the loudest 16 ms frame (impacts over a quiet floor
    score high, a constant buzz low)."""

    rms_dbfs: float
    peak_dbfs: float
    peak_to_median_db: float


def _db(x: float) -> float:
    return float(20 * np.log10(x)) if x > 0 else SILENCE_DB


def audio_level(waveform, sample_rate: int) -> Level:
    """:class:`Level` of ``waveform`` ((N,) or (C, N), full scale +-1) at ``sample_rate``."""
    w = mono_waveform(waveform)
    if sample_rate <= 0:
        raise InputError(f"sample_rate must be positive; got {sample_rate!r}")
    energy, _, _ = frame_energy_db(w, sample_rate)
    spread = float(energy.max() - np.median(energy)) if np.abs(w).max() > 0 else 0.0
    return Level(_db(float(np.sqrt((w**2).mean()))), _db(float(np.abs(w).max())), spread)


def impact_energy_share(waveform, sample_rate: int, events, window_s: float = BURST_SECONDS) -> float:
    """Share of the clip's energy in [t - 20 ms, t + ``window_s``] around the ``events`` (seconds): how much of
    the sound is impacts at those times. 0 for silence or no events; the real clips score about 0.99 (the rest is
    their faint noise floor)."""
    w = mono_waveform(waveform)
    total = float((w**2).sum())
    if total == 0 or len(events) == 0:
        return 0.0
    inside = np.zeros(len(w), dtype=bool)
    for t in events:
        start = max(0, int(round((t - IMPACT_LEAD_S) * sample_rate)))
        inside[start : max(start, int(round((t + window_s) * sample_rate)))] = True
    return float((w[inside] ** 2).sum() / total)
