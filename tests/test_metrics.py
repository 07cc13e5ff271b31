import math

import numpy as np
import pytest
import torch

from uniform_core.errors import InputError
from uniform_core.eval.events import (
    audio_onsets,
    colour_present,
    dominant_colour,
    event_f1,
    sound_class,
    visual_impacts,
)
from uniform_core.train.synthetic import SyntheticSpec, make_clip, vocabulary

SR, FPS = 16000, 17


def test_event_f1_on_known_lists():
    s = event_f1([0.1, 0.5, 1.0], [0.12, 0.55, 2.0], tol=0.1)
    assert (s.n_matched, s.n_pred, s.n_ref) == (2, 3, 3)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3) and s.f1 == pytest.approx(2 / 3)
    assert s.mean_abs_offset_ms == pytest.approx(35.0)
    # One-to-one: two predictions near one reference count once.
    s = event_f1([1.0, 1.02], [1.01])
    assert (s.precision, s.recall) == (0.5, 1.0) and s.f1 == pytest.approx(2 / 3)
    # Greedy order must not lose a match: 0.0->0.08 and 0.15->0.2 both fit.
    assert event_f1([0.0, 0.15], [0.08, 0.2]).f1 == 1.0
    # Exactly at the tolerance counts; just beyond does not.
    assert event_f1([0.3], [0.2], tol=0.1).f1 == 1.0
    assert event_f1([0.31], [0.2], tol=0.1).f1 == 0.0
    assert event_f1([], []).f1 == 1.0 and math.isnan(event_f1([], []).mean_abs_offset_ms)
    assert event_f1([], [0.5]).f1 == 0.0 and event_f1([0.5], []).f1 == 0.0


def test_detectors_recover_ground_truth():
    for seed in range(6):
        clip = make_clip(seed)
        (obj,) = clip.attributes["objects"]
        onsets = event_f1(audio_onsets(clip.waveform, SR), clip.events)
        impacts = event_f1(visual_impacts(clip.frames, FPS), clip.events)
        assert onsets.f1 == 1.0 and onsets.mean_abs_offset_ms < 10, (seed, onsets)
        assert impacts.f1 == 1.0 and impacts.mean_abs_offset_ms < 30, (seed, impacts)
        assert dominant_colour(clip.frames) == obj["colour"]
        assert colour_present(clip.frames, obj["colour"])
        other = next(c for c in vocabulary().colours if c != obj["colour"])
        assert not colour_present(clip.frames, other)


def test_detectors_on_two_objects():
    spec = SyntheticSpec(max_objects=2)
    seen = 0
    for seed in range(20):
        clip = make_clip(seed, spec)
        if len(clip.attributes["objects"]) < 2:
            continue
        seen += 1
        assert event_f1(audio_onsets(clip.waveform, SR), clip.events).f1 == 1.0
        assert event_f1(visual_impacts(clip.frames, FPS), clip.events).f1 == 1.0
        assert all(colour_present(clip.frames, o["colour"]) for o in clip.attributes["objects"])
    assert seen >= 3


def test_sound_class_recovers_every_class():
    found = {}
    for seed in range(40):
        clip = make_clip(seed)
        (obj,) = clip.attributes["objects"]
        if obj["sound"] not in found:
            found[obj["sound"]] = sound_class(clip.waveform, SR)
            assert found[obj["sound"]] == obj["sound"], (seed, obj)
        if len(found) == len(vocabulary().sound_classes):
            break
    assert set(found) == set(vocabulary().sound_classes)
    assert sound_class(torch.zeros(SR), SR) == "silence"


def test_detectors_follow_a_shift_and_find_nothing_in_static_silence():
    clip = make_clip(2)
    shift = int(0.2 * SR)
    shifted = torch.cat([torch.zeros(shift), clip.waveform[:-shift]])
    expected = [t + 0.2 for t in clip.events if t + 0.2 < 2.0]
    assert event_f1(audio_onsets(shifted, SR), expected, tol=0.02).f1 == 1.0
    still = clip.frames[:1].expand(17, -1, -1, -1)
    assert visual_impacts(still, FPS) == []
    assert audio_onsets(torch.zeros(SR), SR) == []
    assert audio_onsets(clip.waveform[None].repeat(2, 1), SR) == audio_onsets(clip.waveform, SR)  # (C, N) is fine


def test_detectors_survive_blur_and_noise():
    """Generated clips are blurrier and noisier than the renders; the detectors must still find the events."""
    gen = torch.Generator().manual_seed(0)
    for seed in range(3):
        clip = make_clip(seed)
        f = clip.frames.permute(0, 3, 1, 2)
        blurred = torch.nn.functional.interpolate(
            torch.nn.functional.avg_pool2d(f, 4), scale_factor=4, mode="bilinear", align_corners=False
        )
        noisy = (blurred + 0.03 * torch.randn(blurred.shape, generator=gen)).clamp(0, 1).permute(0, 2, 3, 1)
        (obj,) = clip.attributes["objects"]
        assert event_f1(visual_impacts(noisy, FPS), clip.events).f1 >= 0.8
        assert dominant_colour(noisy) == obj["colour"]
        w = clip.waveform + 0.01 * torch.randn(clip.waveform.shape, generator=gen)
        assert event_f1(audio_onsets(w, SR), clip.events).f1 >= 0.8
        assert sound_class(w, SR) == obj["sound"]


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="frames"):
        visual_impacts(torch.zeros(4, 8, 8), FPS)
    with pytest.raises(InputError, match="colour"):
        colour_present(torch.zeros(2, 8, 8, 3), "purple")
    with pytest.raises(InputError, match="waveform"):
        audio_onsets(np.zeros((1, 2, 3)), SR)
