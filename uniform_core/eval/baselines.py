"""Uninformed baselines: what an output that knows nothing about its clip scores.

Two kinds, and a report calls the higher one "chance": the shuffled pairing (the model's own outputs judged
against another clip) and outputs that know the data set but not the clip: impacts at a fixed period (the data
set's mean event rate, at the best of a grid of phases) and a constant attribute (the caption value the clips
share most often, e.g. always "knock"). A metric only means something where the model beats both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import InputError

PHASES = 8  # phases of the periodic baseline tried, evenly spaced over one period


def mean_event_rate(event_lists: Sequence[Sequence[float]], seconds: float) -> float:
    """Events per second over clips of ``seconds`` each."""
    if not event_lists or seconds <= 0:
        raise InputError(f"the mean event rate needs clips and a positive length; got {len(event_lists)}, {seconds}")
    return sum(len(e) for e in event_lists) / (len(event_lists) * seconds)


def periodic_events(rate: float, seconds: float, phase: float) -> list[float]:
    """Event times (s) at ``rate`` per second over ``seconds``, the first at ``phase`` of a period (0 <= phase <
    1): uninformed clicks."""
    if rate <= 0:
        return []
    period = 1.0 / rate
    return [float(t) for t in np.arange(phase * period, seconds, period)]


def best_periodic(
    rate: float, seconds: float, score: Callable[[list[float], int], float], n_clips: int
) -> tuple[list[float], float]:
    """Per-clip scores of the periodic output whose phase (of PHASES) scores best on average, and that phase.

    ``score(times, i)`` scores the event times ``times`` against clip ``i``'s reference (NaN: not scored)."""
    best: tuple[list[float], float] | None = None
    for phase in np.arange(PHASES) / PHASES:
        times = periodic_events(rate, seconds, float(phase))
        values = [score(times, i) for i in range(n_clips)]
        if best is None or np.nanmean(values) > np.nanmean(best[0]):
            best = values, float(phase)
    return best


def shuffled(score: Callable[[int, int], float], n_clips: int) -> list[float]:
    """Per-clip ``score(output, reference)`` of output ``i`` against clip ``i + 1``'s reference."""
    return [score(i, (i + 1) % n_clips) for i in range(n_clips)]


def constant_guess(truths: Sequence) -> list[float]:
    """Per clip, 1 where the truth is the most common one (the best constant output), else 0."""
    if not truths:
        raise InputError("a constant guess needs at least one clip")
    mode = Counter(truths).most_common(1)[0][0]
    return [float(t == mode) for t in truths]
