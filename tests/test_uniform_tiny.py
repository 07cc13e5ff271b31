"""The committed uniform-tiny bundle does the three tasks: the model card's synthetic benchmark, re-checked on 16
held-out clips (16 clips give wide intervals, so the T2AV bounds sit below the 50-clip targets).

On 50 clips the bundle measured event F1 V2A 0.81, A2V 0.91, T2AV 0.53 and the captioned colour in 88 % of T2AV
videos (model card), meeting the issue's targets (0.7, 0.6, 0.5, 80 %). On these 16 clips: 0.80, 0.93, 0.56 and 88 %
(14 of 16); the T2AV bounds (0.4, 70 %) allow a clip or two of platform noise and still fail a bundle that ignores
its caption or generates its two modalities out of step.

These run the real embedded weights through the real pipeline with the bundle's own sampling settings (30 DDIM
steps; CFG 3 for T2AV, 1 for A2V and V2A, from its bundle.json), as `uniform-av eval --synthetic` does; about a
minute on two CPU cores.
"""

from __future__ import annotations

import numpy as np
import pytest

from uniform_core.bundle import default_bundle_available
from uniform_core.eval import benchmark
from uniform_core.pipeline import UniFormPipeline

pytest.importorskip("librosa")
pytest.importorskip("cv2")
pytestmark = pytest.mark.skipif(not default_bundle_available(), reason="no embedded uniform-tiny here")

CLIPS = 16
MARGIN = 0.1  # how far above its shuffled baseline (the same outputs paired with the wrong clip) a task must score
V2A_F1, A2V_F1 = 0.7, 0.6  # the 50-clip targets (measured on these 16 clips: 0.80, 0.93)
T2AV_F1, T2AV_COLOUR = 0.4, 0.7  # targets 0.5 and 80 %; measured on these 16 clips: 0.56 (shuffled 0.15), colour 0.88


@pytest.fixture(scope="module")
def report():
    pipe = UniFormPipeline.from_bundle(None)
    settings = benchmark.EvalSettings(clips=CLIPS, seed=0)  # the bundle's sampler and per-task CFG
    return benchmark.run_benchmark(pipe, settings, synthetic=True)


def _mean(report, key: str, metric: str) -> float:
    return float(np.nanmean(report.per_clip[key][metric]))


def test_v2a_sound_follows_the_video_impacts(report):
    f1, shuffled = _mean(report, "v2a/text", "event_f1"), _mean(report, "v2a/text", "shuffled_event_f1")
    assert f1 >= V2A_F1 and f1 > shuffled + MARGIN, (f1, shuffled)


def test_a2v_impacts_follow_the_audio_onsets(report):
    f1, shuffled = _mean(report, "a2v/text", "event_f1"), _mean(report, "a2v/text", "shuffled_event_f1")
    assert f1 >= A2V_F1 and f1 > shuffled + MARGIN, (f1, shuffled)


def test_t2av_shows_the_captioned_colour_and_its_sound_agrees_with_its_picture(report):
    colour = _mean(report, "t2av/text", "colour")
    f1, shuffled = _mean(report, "t2av/text", "event_f1"), _mean(report, "t2av/text", "shuffled_event_f1")
    assert colour >= T2AV_COLOUR, colour
    assert f1 >= T2AV_F1 and f1 > shuffled + MARGIN, (f1, shuffled)
