"""Synthetic-benchmark metrics: impact events and caption adherence, checked against the stored ground truth.

All detectors work on plain tensors (ComfyUI IMAGE frames, mono waveforms) with numpy/torch only, and are tuned on
the synthetic data of :mod:`uniform_core.train.synthetic`: one or two plain-coloured objects bouncing in front of a
plain backdrop, a short sound at each floor impact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch

from ..errors import InputError
from ..train.synthetic import COLOURS

ONSET_WINDOW_S = 0.016
ONSET_HOP_S = 0.004
ONSET_LOOKBACK_S = 0.05  # energy rise measured against the quietest frame of the last 50 ms
ONSET_MEMORY_S = 0.1  # and the event must be louder than anything in the 100 ms before that
ONSET_MIN_NOVELTY_DB = 3.0  # (a decaying sound's ripples are not new events)
ONSET_MIN_RISE_DB = 9.0  # a new event at least this much louder than just before it
ONSET_FLOOR_DB = 35.0  # and no more than this below the loudest frame of the clip
MIN_EVENT_SPACING_S = 0.1
FOREGROUND_DISTANCE = 0.15  # RGB distance from the row's background that makes a pixel foreground
CHIME_MIN_HZ = 700.0  # tonal sounds above this peak frequency are chimes, below it tones
KNOCK_MIN_FLATNESS = 0.2  # spectral flatness of the impact sound above which it is a noise knock


@dataclass(frozen=True)
class EventScore:
    """One-to-one event matching within a tolerance. Precision/recall/F1 in [0, 1]; offset in milliseconds
    (NaN when nothing matched)."""

    precision: float
    recall: float
    f1: float
    mean_abs_offset_ms: float
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


def _mono(waveform, name: str = "waveform") -> np.ndarray:
    """(N,) or (C, N) -> (N,) float64, channels averaged."""
    w = _as_numpy(waveform, name)
    if w.ndim == 2:
        w = w.mean(0)
    if w.ndim != 1:
        raise InputError(f"{name} must have shape (N,) or (C, N); got {tuple(w.shape)}")
    return w


def _frames(frames, name: str = "frames") -> np.ndarray:
    f = _as_numpy(frames, name)
    if f.ndim != 4 or f.shape[-1] != 3:
        raise InputError(f"{name} must have shape (T, H, W, 3) in [0, 1]; got {tuple(f.shape)}")
    return f


def event_f1(pred, ref, tol: float = 0.1) -> EventScore:
    """Match predicted to reference event times (seconds) one-to-one within +-``tol`` and score the matching.

    Greedy matching in time order gives the largest one-to-one matching for events on a line. Both lists empty
    scores 1 (nothing to find, nothing invented); one empty list against a non-empty one scores 0.
    """
    p, r = sorted(float(x) for x in pred), sorted(float(x) for x in ref)
    i = j = 0
    offsets = []
    while i < len(p) and j < len(r):
        if abs(p[i] - r[j]) <= tol + 1e-9:
            offsets.append(abs(p[i] - r[j]))
            i, j = i + 1, j + 1
        elif p[i] < r[j]:
            i += 1
        else:
            j += 1
    m = len(offsets)
    if not p and not r:
        return EventScore(1.0, 1.0, 1.0, math.nan, 0, 0, 0)
    precision = m / len(p) if p else 0.0
    recall = m / len(r) if r else 0.0
    f1 = 2 * precision * recall / (precision + recall) if m else 0.0
    offset = 1000 * float(np.mean(offsets)) if m else math.nan
    return EventScore(precision, recall, f1, offset, m, len(p), len(r))


def _peaks(curve: np.ndarray, threshold: float, min_distance: int) -> list[int]:
    """Indices of local maxima above ``threshold``, at least ``min_distance`` apart (the larger peak wins)."""
    idx = [i for i in range(len(curve)) if curve[i] >= threshold and curve[i] == curve[max(0, i - 1) : i + 2].max()]
    kept: list[int] = []
    for i in sorted(idx, key=lambda k: -curve[k]):
        if all(abs(i - k) >= min_distance for k in kept):
            kept.append(i)
    return sorted(kept)


def _frame_energy_db(w: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int, int]:
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
    w = _mono(waveform)
    if sample_rate <= 0:
        raise InputError(f"sample_rate must be positive; got {sample_rate!r}")
    energy, win, hop = _frame_energy_db(w, sample_rate)
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


def _objects(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel object coverage (T, H, W) in [0, 1] and vocabulary-colour index (T, H, W).

    The background is the row's median colour (backdrop and floor are horizontal bands, and an object covers less
    than half a row). A pixel at least FOREGROUND_DISTANCE from it is explained as a mix ``a * colour + (1 - a) *
    background`` of the palette colour it lies closest to; ``a`` is its coverage. Unmixing keeps blurred or
    anti-aliased edges (a yellow half-pixel over a dark floor looks olive) with their object's colour.
    """
    f = f.astype(np.float32)
    palette = np.asarray(list(COLOURS.values()), dtype=np.float32)  # (P, 3)
    background = np.median(f, axis=2, keepdims=True)  # (T, H, 1, 3)
    d = f - background  # (T, H, W, 3)
    e = palette - background[..., None, :]  # (T, H, 1, P, 3)
    a = np.clip((d[..., None, :] * e).sum(-1) / np.maximum((e * e).sum(-1), 1e-6), 0.0, 1.0)  # (T, H, W, P)
    residual = np.linalg.norm(d[..., None, :] - a[..., None] * e, axis=-1)
    labels = residual.argmin(-1)
    cover = np.take_along_axis(a, labels[..., None], -1)[..., 0]
    return np.where(np.linalg.norm(d, axis=-1) > FOREGROUND_DISTANCE, cover, 0.0), labels


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
    f = _frames(frames)
    if fps <= 0:
        raise InputError(f"fps must be positive; got {fps!r}")
    weight, labels = _objects(f)
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


def _colour_shares(frames) -> dict[str, float]:
    f = _frames(frames)
    weight, labels = _objects(f)
    total = weight.sum()
    if total == 0:
        return {}
    return {name: float(weight[labels == i].sum() / total) for i, name in enumerate(COLOURS)}


def dominant_colour(frames) -> str:
    """The vocabulary colour covering most foreground (non-background) pixels of ``frames`` (T, H, W, 3) in
    [0, 1], or ``"none"`` when nothing stands out from the background."""
    shares = _colour_shares(frames)
    return max(shares, key=shares.get) if shares else "none"


def colour_present(frames, colour: str, min_share: float = 0.2) -> bool:
    """Whether ``colour`` (a vocabulary colour) makes up at least ``min_share`` of the foreground of ``frames``."""
    if colour not in COLOURS:
        raise InputError(f"colour must be one of {', '.join(COLOURS)}; got {colour!r}")
    return _colour_shares(frames).get(colour, 0.0) >= min_share


def sound_class(waveform, sample_rate: int) -> str:
    """The vocabulary sound class of the impact sounds in ``waveform`` ((N,) or (C, N)): ``"knock"`` when their
    spectrum is noise-like (flat), otherwise ``"chime"`` or ``"tone"`` by the frequency of the spectral peak;
    ``"silence"`` when there is no sound above the noise floor."""
    w = _mono(waveform)
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
class Estimate:
    """A mean over clips with its normal-approximation confidence interval (``level``, default 95 %)."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def mean_ci(values, level: float = 0.95) -> Estimate:
    """Mean of ``values`` (NaNs dropped) +- z * standard error; NaN for no values, a zero-width interval for one."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    half = z * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return Estimate(float(v.mean()), float(v.mean() - half), float(v.mean() + half), len(v))


@dataclass(frozen=True)
class TaskReport:
    """Synthetic-benchmark scores of one task over held-out clips (issue 6 item 4).

    ``event_f1``: v2a, generated audio onsets vs the clip's impacts; a2v, generated video impacts vs the clip's
    impacts; t2av, generated audio onsets vs generated video impacts. ``shuffled_event_f1``: the same outputs
    scored against the next clip's reference (a wrong pairing), the chance level. ``colour_rate``: share of clips
    whose generated video shows the captioned colour(s) (t2av, a2v). ``sound_rate``: share of clips whose
    generated audio has the captioned object's sound class (t2av, v2a)."""

    task: str
    event_f1: Estimate
    offset_ms: Estimate
    shuffled_event_f1: Estimate
    colour_rate: Estimate | None
    sound_rate: Estimate | None


def score_task(task: str, clips, frames=None, waveforms=None, tol: float = 0.1) -> TaskReport:
    """Score a task's outputs against their synthetic clips (:class:`~uniform_core.train.synthetic.SyntheticClip`,
    which give fps, sample rate, events and attributes). ``frames``: the generated videos (T, H, W, 3) in [0, 1],
    one per clip (t2av, a2v); ``waveforms``: the generated audio (N,) or (C, N) at the clips' rate (t2av, v2a)."""
    from ..tasks import generates_audio, generates_video

    n = len(clips)
    if n < 2:
        raise InputError(f"score_task needs at least 2 clips (the shuffled baseline pairs each with another); got {n}")
    video, audio = generates_video(task), generates_audio(task)
    for name, outputs, needed in (("frames", frames, video), ("waveforms", waveforms, audio)):
        if needed and (outputs is None or len(outputs) != n):
            got = "None" if outputs is None else f"{len(outputs)}"
            raise InputError(f"task {task} needs {name}: one generated output per clip ({n}); got {got}")
    spec = clips[0].attributes["spec"]
    fps, rate = spec["fps"], spec["sample_rate"]
    impacts = [visual_impacts(f, fps) for f in frames] if video else None
    onsets = [audio_onsets(w, rate) for w in waveforms] if audio else None
    if task == "t2av":
        pred, ref = onsets, impacts
    else:
        pred, ref = (impacts, None) if task == "a2v" else (onsets, None)
        ref = [c.events for c in clips]
    scores = [event_f1(p, r, tol) for p, r in zip(pred, ref, strict=True)]
    shuffled = [event_f1(pred[i], ref[(i + 1) % n], tol).f1 for i in range(n)]
    colour = sound = None
    if video:
        colour = mean_ci(
            float(all(colour_present(f, o["colour"]) for o in c.attributes["objects"]))
            for f, c in zip(frames, clips, strict=True)
        )
    if audio:
        sound = mean_ci(
            float(sound_class(w, rate) in {o["sound"] for o in c.attributes["objects"]})
            for w, c in zip(waveforms, clips, strict=True)
        )
    return TaskReport(
        task,
        mean_ci(s.f1 for s in scores),
        mean_ci(s.mean_abs_offset_ms for s in scores),
        mean_ci(shuffled),
        colour,
        sound,
    )
