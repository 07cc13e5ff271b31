"""The committed uniform-tiny bundle, re-checked with issue 16's metrics on 16 clips of the tuning range (seeds
1,000,000-1,000,015; the report seeds stay for reports).

Issue 16's targets (50 report clips a task) are NOT met by this bundle; see the model card. They are: V2A event F1
>= 0.85 and A2V >= 0.9, each >= 0.3 above chance; T2AV event F1 >= 0.7; the captioned colour in >= 90 % of frames
and held (no flip) in >= 90 % of clips; shape right in >= 80 %; floor colour right in >= 80 %; sound class right in
>= 80 %; generated RMS within 3 dB of the real clips'; impact energy share >= 0.6. The bounds below are what the
current bundle meets on these 16 clips, measured when they were set (in brackets), less a margin for platform
noise; each is above what a broken model (silence, a frozen frame, no object) scores, so each can fail. When a
retrained bundle meets a target, its bound moves to no looser than 0.1 below the target.

These run the real embedded weights through the real pipeline with the bundle's own sampling settings (30 DDIM
steps; CFG 3 for T2AV, 1 for A2V and V2A, from its bundle.json), as `uniform-av eval --synthetic` does.
"""

from __future__ import annotations

import numpy as np
import pytest

from uniform_core.bundle import default_bundle_available
from uniform_core.eval import benchmark, report
from uniform_core.eval.seeds import TUNING_SEEDS
from uniform_core.pipeline import UniFormPipeline

pytest.importorskip("librosa")
pytest.importorskip("cv2")
pytestmark = pytest.mark.skipif(not default_bundle_available(), reason="no embedded uniform-tiny here")

CLIPS = 16
# (task, metric, bound on the mean over clips, "min" or "max"); measured on these 16 clips in the comment.
BOUNDS = [
    ("v2a", "event_f1", 0.65, "min"),  # 0.80 (target 0.85)
    ("a2v", "event_f1", 0.8, "min"),  # 0.93 (target 0.9: met on these clips)
    ("t2av", "event_f1", 0.45, "min"),  # 0.56 (target 0.7)
    ("t2av", "colour_frames", 0.45, "min"),  # 0.59 (target 0.9)
    ("a2v", "colour_frames", 0.35, "min"),  # 0.51 (target 0.9)
    ("t2av", "colour_flips", 6.0, "max"),  # 3.7 changes per clip (target: no flip in 90 % of clips; 19 % now)
    ("a2v", "colour_flips", 6.0, "max"),  # 4.3 (no flip in 6 % of clips now)
    ("t2av", "shape", 0.1, "min"),  # 0.25, below chance 0.38: every shape comes out a blob (target 0.8)
    ("t2av", "floor", 0.85, "min"),  # 1.0 (target 0.8: met)
    ("a2v", "floor", 0.85, "min"),  # 1.0 (target 0.8: met)
    ("t2av", "sound", 0.2, "min"),  # 0.38, at chance (target 0.8)
    ("v2a", "sound", 0.2, "min"),  # 0.38, at chance (target 0.8)
    ("v2a", "rms_diff_db", -23.0, "min"),  # -18.8 dB (target within 3 dB); silence would be about -100
    ("t2av", "rms_diff_db", -23.0, "min"),  # -18.5 dB
    ("v2a", "energy_share", 0.45, "min"),  # 0.60 (target 0.6), chance 0.56
    ("t2av", "energy_share", 0.25, "min"),  # 0.40 (target 0.6), chance 0.46
]
# Event F1 must beat chance (the better of the shuffled pairing and periodic clicks) by this much; measured: V2A
# +0.37, A2V +0.51, T2AV +0.19 (the target asks +0.3 of V2A and A2V).
ABOVE_CHANCE = {"v2a": 0.2, "a2v": 0.3, "t2av": 0.05}


@pytest.fixture(scope="module")
def measured():
    pipe = UniFormPipeline.from_bundle(None)
    settings = benchmark.EvalSettings(clips=CLIPS, seed=0, first_seed=TUNING_SEEDS.start, allow_tuning_seeds=True)
    return benchmark.run_benchmark(pipe, settings, synthetic=True)


def _metrics(measured, task: str):
    return measured.row("synthetic", task, "generated").metrics


@pytest.mark.parametrize("task, metric, bound, kind", BOUNDS, ids=[f"{t}-{m}" for t, m, _, _ in BOUNDS])
def test_bundle_keeps_what_it_measured(measured, task, metric, bound, kind):
    mean = _metrics(measured, task)[metric].mean
    assert not np.isnan(mean)
    assert (mean >= bound) if kind == "min" else (mean <= bound), (task, metric, mean, bound)


@pytest.mark.parametrize("task", list(ABOVE_CHANCE))
def test_event_sync_beats_chance(measured, task):
    metrics = _metrics(measured, task)
    level, baseline = report.chance(metrics, "event_f1")
    assert metrics["event_f1"].mean >= level.mean + ABOVE_CHANCE[task], (task, metrics["event_f1"], baseline, level)
