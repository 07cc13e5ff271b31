"""Impact events: when the sound starts and when the object hits the floor, and how well two event lists agree.

The detectors work on plain tensors (ComfyUI IMAGE frames, mono waveforms) with numpy/torch only, and are tuned on
the synthetic data of :mod:`uniform_core.train.synthetic`: one or two plain-coloured objects bouncing in front of a
plain backdrop, a short sound at each floor impact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..train.synthetic import COLOURS
from .appearance import object_map

ONSET_WINDOW_S = 0.016
ONSET_HOP_S = 0.004
ONSET_LOOKBACK_S = 0.05  # energy rise measured against the quietest frame of the last 50 ms
ONSET_MEMORY_S = 0.1  # and the event must be louder than anything in the 100 ms before that
ONSET_MIN_NOVELTY_DB = 3.0  # (a decaying sound's ripples are not new events)
ONSET_MIN_RISE_DB = 9.0  # a new event at least this much louder than just before it
ONSET_FLOOR_DB = 35.0  # and no more than this below the loudest frame of the clip
MIN_EVENT_SPACING_S = 0.1


@dataclass(frozen=True)
class EventScore:
    """One-to-one event matching within a tolerance. Precision/recall/F1 in [0, 1] (NaN with no reference events);
    offsets in milliseconds, the signed one predicted minus reference (negative: early; NaN when nothing matched).
    """

    precision: float
    recall: float
    f1: float
    mean_abs_offset_ms: float
    mean_offset_ms: float = math.nan
    n_matched: int = 0
    n_pred: int = 0
    n_ref: int = 0


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise InputError(f"{name} is empty")
    return x


def mono_waveform(waveform, name: str = "waveform") -> np.ndarray:
    """(N,) or (C, N) -> (N,) float64, channels averaged."""
    w = _as_numpy(waveform, name)
    if w.ndim == 2:
        w = w.mean(0)
    if w.ndim != 1:
        raise InputError(f"{name} must have shape (N,) or (C, N); got {tuple(w.shape)}")
    return w


def event_f1(pred, ref, tol: float = 0.1) -> EventScore:
    """Match predicted to reference event times (seconds) one-to-one within +-``tol`` and score the matching.

    Greedy matching in time order gives the largest one-to-one matching for events on a line. A reference with
    events and no prediction is a miss (F1 0). With no reference events F1 is undefined (NaN): nothing was there to
    find, so silence cannot score 1 by finding nothing; the caller scores those clips on their own (``n_pred``
    says how many events were invented).
    """
    p, r = sorted(float(x) for x in pred), sorted(float(x) for x in ref)
    i = j = 0
    offsets = []
    while i < len(p) and j < len(r):
        if abs(p[i] - r[j]) <= tol + 1e-9:
            offsets.append(p[i] - r[j])
            i, j = i + 1, j + 1
        elif p[i] < r[j]:
            i += 1
        else:
            j += 1
    m = len(offsets)
    if not r:
        return EventScore(math.nan, math.nan, math.nan, math.nan, math.nan, 0, len(p), 0)
    precision = m / len(p) if p else 0.0
    recall = m / len(r)
    f1 = 2 * precision * recall / (precision + recall) if m else 0.0
    abs_offset = 1000 * float(np.mean(np.abs(offsets))) if m else math.nan
    offset = 1000 * float(np.mean(offsets)) if m else math.nan
    return EventScore(precision, recall, f1, abs_offset, offset, m, len(p), len(r))


def _peaks(curve: np.ndarray, threshold: float, min_distance: int) -> list[int]:
    """Indices of local maxima above ``threshold``, at least ``min_distance`` apart (the larger peak wins)."""
    idx = [i for i in range(len(curve)) if curve[i] >= threshold and curve[i] == curve[max(0, i - 1) : i + 2].max()]
    kept: list[int] = []
    for i in sorted(idx, key=lambda k: -curve[k]):
        if all(abs(i - k) >= min_distance for k in kept):
            kept.append(i)
    return sorted(kept)


def frame_energy_db(w: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int, int]:
    win = max(1, int(round(ONSET_WINDOW_S * sample_rate)))
    hop = max(1, int(round(ONSET_HOP_S * sample_rate)))
    if len(w) < win:
        w = np.pad(w, (0, win - len(w)))
    frames = np.lib.stride_tricks.sliding_window_view(w, win)[::hop]
    return 10 * np.log10((frames**2).mean(1) + 1e-10), win, hop


def audio_onsets(waveform, sample_rate: int) -> list[float]:
    """Onset times (s) of the impact sounds in ``waveform`` ((N,) or (C, N), any scale).

    Energy flux against a running floor: the frame energy (dB, 16 ms windows every 4 ms) minus its minimum over
    the previous 50 ms. An event is a local maximum of that rise of at least ONSET_MIN_RISE_DB, on a frame no more
    than ONSET_FLOOR_DB below the clip's loudest and ONSET_MIN_NOVELTY_DB louder than every frame of the 100 ms
    before the look-back, events at least 0.1 s apart. Its onset is the first frame whose energy is half-way (in
    dB) from the floor to the peak: the time the window's leading edge reaches the sound. The 50 ms look-back keeps
    smeared onsets (a vocoder's) detectable; the 100 ms memory ignores the ripples of a decaying sound.
    """
    w = mono_waveform(waveform)
    if sample_rate <= 0:
        raise InputError(f"sample_rate must be positive; got {sample_rate!r}")
    energy, win, hop = frame_energy_db(w, sample_rate)
    back = max(1, int(round(ONSET_LOOKBACK_S * sample_rate / hop)))
    memory = max(1, int(round(ONSET_MEMORY_S * sample_rate / hop)))
    padded = np.concatenate([np.full(back + memory, energy[0]), energy])
    floor = np.lib.stride_tricks.sliding_window_view(padded[memory:], back)[: len(energy)].min(1)
    recent = np.lib.stride_tricks.sliding_window_view(padded, memory)[: len(energy)].max(1)
    rise = energy - floor
    rise[(energy < energy.max() - ONSET_FLOOR_DB) | (energy - recent < ONSET_MIN_NOVELTY_DB)] = 0.0
    onsets = []
    for k in _peaks(rise, ONSET_MIN_RISE_DB, max(1, int(MIN_EVENT_SPACING_S * sample_rate / hop))):
        lo = max(0, k - back)
        j = lo + int(np.argmax(energy[lo : k + 1] >= floor[k] + rise[k] / 2))
        onsets.append(max(0.0, (j * hop + win - hop / 2) / sample_rate))
    return onsets


def _impact_times(y: np.ndarray, fps: float, min_drop: float) -> list[float]:
    """Floor impacts from a centroid height track ``y`` (image rows, growing downwards): frames where the object
    stops falling and starts rising, refined by intersecting the falling and rising lines of the frames around."""
    out = []
    n = len(y)
    for k in range(1, n - 1):
        if not (y[k] >= y[k - 1] and y[k] > y[k + 1]):
            continue
        before, after = y[k] - y[max(0, k - 2)], y[k] - y[min(n - 1, k + 2)]
        if before < min_drop or after < min_drop:
            continue
        t = float(k)
        if 2 <= k <= n - 3:
            fall, rise = y[k - 1] - y[k - 2], y[k + 1] - y[k + 2]  # px per frame down, then up
            if fall > 0 and rise > 0:
                # y_fall(t) = y[k-1] + fall * (t - (k-1)); y_rise(t) = y[k+1] + rise * ((k+1) - t)
                t_cross = (y[k + 1] - y[k - 1] + fall * (k - 1) + rise * (k + 1)) / (fall + rise)
                t = float(np.clip(t_cross, k - 1, k + 1))
        out.append(t / fps)
    return out


def visual_impacts(frames, fps: float, min_drop_px: float = 2.5) -> list[float]:
    """Floor-impact times (s) in ``frames`` (T, H, W, 3) in [0, 1]: vertical velocity reversals (falling ->
    rising) of each object's centroid. Objects are told apart by their vocabulary colour (each pixel unmixed from
    the background); a reversal must drop and rise by at least ``min_drop_px`` over two frames on each side (the
    default data's impacts: 3.7 px or more), so +-1 px jitter of a resting object is no impact."""
    if fps <= 0:
        raise InputError(f"fps must be positive; got {fps!r}")
    m = object_map(frames)
    f, weight, labels = m.frames, m.cover, m.labels
    rows = np.arange(f.shape[1], dtype=np.float64)[None, :, None]
    total = weight.sum()
    times: list[float] = []
    for c in range(len(COLOURS)):
        wc = np.where(labels == c, weight, 0.0)
        if total == 0 or wc.sum() < 0.2 * total:
            continue
        mass = wc.sum((1, 2))
        present = mass > 0.25 * np.median(mass[mass > 0])
        if present.sum() < 3:
            continue
        y = (wc * rows).sum((1, 2)) / np.maximum(mass, 1e-9)
        t = np.arange(len(y))
        y = np.interp(t, t[present], y[present])
        times.extend(_impact_times(y, fps, min_drop_px))
    times.sort()
    merged: list[float] = []
    for t in times:  # one colour track split in two must not count an impact twice
        if merged and t - merged[-1] < MIN_EVENT_SPACING_S / 2:
            continue
        merged.append(t)
    return merged
