"""Confidence intervals over clips that respect the range of what they measure.

Proportions (a clip passes or fails) get Wilson score intervals, which stay inside [0, 1] and do not collapse to
zero width at 0 % or 100 %; means of bounded per-clip scores (event F1, dB, milliseconds) get a percentile
bootstrap, which stays inside the range of the values themselves. Both are deterministic (the bootstrap's
resampling is seeded), so a report reproduces exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ..errors import InputError

BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A mean over clips with its confidence interval (95 % unless told otherwise); ``method`` names how the
    interval was made (``"wilson"``, ``"bootstrap"``; ``"none"`` for fewer than two values)."""

    mean: float
    low: float
    high: float
    n: int
    method: str = "bootstrap"

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _finite(values, name: str) -> np.ndarray:
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    v = v[~np.isnan(v)]
    if np.isinf(v).any():
        raise InputError(f"{name} must be finite numbers (NaN is dropped); got an infinite value")
    return v


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1); got {level!r}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(values, level: float = 0.95) -> Estimate:
    """Share of passing clips: ``values`` are 0 or 1 (NaNs dropped). Wilson's score interval (Wilson 1927)."""
    z = _check_level(level)
    v = _finite(values, "values")
    if not np.isin(v, (0.0, 1.0)).all():
        raise InputError(f"a proportion needs per-clip values of 0 or 1; got {sorted(set(v.tolist()))[:5]}")
    n = len(v)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "wilson")
    p = float(v.mean())
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n, "wilson")


def bootstrap_interval(values, level: float = 0.95, seed: int = 0) -> Estimate:
    """Mean of ``values`` (NaNs dropped) with a percentile-bootstrap interval from BOOTSTRAP_RESAMPLES resamples.

    The interval lies within [min(values), max(values)]: per-clip scores in [0, 1] give an interval in [0, 1].
    """
    _check_level(level)
    v = _finite(values, "values")
    n = len(v)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "none")
    mean = float(v.mean())
    if n == 1:
        return Estimate(mean, mean, mean, 1, "none")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(1)
    low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return Estimate(mean, float(min(low, mean)), float(max(high, mean)), n, "bootstrap")
