"""The synthetic benchmark's metrics: detectors recover the ground truth, degenerate outputs score at or below
chance, intervals stay in range, and report seeds stay apart from tuning seeds."""

import math

import numpy as np
import pytest
import torch

from uniform_core.errors import InputError
from uniform_core.eval import baselines, benchmark, report
from uniform_core.eval.appearance import (
    colour_track,
    dominant_colour,
    floor_colour,
    frame_colours,
    object_coverage,
    object_shape,
)
from uniform_core.eval.events import audio_onsets, event_f1, visual_impacts
from uniform_core.eval.intervals import bootstrap_interval, wilson_interval
from uniform_core.eval.scoring import CHANCE, score_outputs
from uniform_core.eval.seeds import REPORT_SEEDS, TUNING_SEEDS, choose_seeds
from uniform_core.eval.sound import audio_level, impact_energy_share, sound_class
from uniform_core.train.synthetic import COLOURS, SyntheticSpec, make_clip, vocabulary

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
    # A reference with events and no prediction is a miss; with no reference events F1 is undefined (NaN), so
    # silence cannot score 1 by finding nothing, and invented events are counted.
    assert event_f1([], [0.5]).f1 == 0.0 and event_f1([], [0.5]).recall == 0.0
    assert math.isnan(event_f1([], []).f1) and math.isnan(event_f1([], []).mean_abs_offset_ms)
    empty = event_f1([0.5, 0.9], [])
    assert math.isnan(empty.f1) and (empty.n_pred, empty.n_ref) == (2, 0)
    # The signed offset says early (negative) or late.
    assert event_f1([0.47], [0.5]).mean_offset_ms == pytest.approx(-30.0)


def test_detectors_recover_ground_truth():
    for seed in range(6):
        clip = make_clip(seed)
        (obj,) = clip.attributes["objects"]
        onsets = event_f1(audio_onsets(clip.waveform, SR), clip.events)
        impacts = event_f1(visual_impacts(clip.frames, FPS), clip.events)
        assert onsets.f1 == 1.0 and onsets.mean_abs_offset_ms < 10, (seed, onsets)
        assert impacts.f1 == 1.0 and impacts.mean_abs_offset_ms < 30, (seed, impacts)
        assert dominant_colour(clip.frames) == obj["colour"]
        track = colour_track(frame_colours(clip.frames), [obj["colour"]])
        assert (track.share, track.flips, track.held) == (1.0, 0, True), seed
        other = next(c for c in vocabulary().colours if c != obj["colour"])
        assert colour_track(frame_colours(clip.frames), [other]).share == 0.0
        assert object_shape(clip.frames) == obj["shape"], seed
        assert floor_colour(clip.frames, SyntheticSpec().floor_y) == clip.attributes["floor"], seed


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
        colours = [o["colour"] for o in clip.attributes["objects"]]
        assert colour_track(frame_colours(clip.frames, 2), colours).held, seed
        for o in clip.attributes["objects"]:
            assert object_shape(clip.frames, o["colour"]) == o["shape"], seed
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
    jitter = torch.randint(-1, 2, (17,), generator=torch.Generator().manual_seed(0))
    shaky = torch.stack([torch.roll(f, int(d), dims=0) for f, d in zip(still, jitter, strict=True)])
    assert visual_impacts(shaky, FPS) == []  # +-1 px shake of a resting object is no impact
    assert audio_onsets(torch.zeros(SR), SR) == []
    assert audio_onsets(clip.waveform[None].repeat(2, 1), SR) == audio_onsets(clip.waveform, SR)  # (C, N) is fine


def test_detectors_survive_blur_and_noise():
    """Generated clips are blurrier and noisier than the renders: video decoded from 8x8 latents, audio from a mel
    spectrogram. Blur to the latent grid plus noise, and a Griffin-Lim reconstruction plus noise, must keep the
    events, the colour and the sound class."""
    torchaudio = pytest.importorskip("torchaudio")
    gen = torch.Generator().manual_seed(0)
    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=1024, hop_length=160, n_mels=64, f_max=8000)
    inverse = torchaudio.transforms.InverseMelScale(513, 64, SR, f_max=8000)
    griffin_lim = torchaudio.transforms.GriffinLim(n_fft=1024, hop_length=160, n_iter=16, rand_init=False)
    for seed in (1_000_000, 1_000_001, 1_000_002):
        clip = make_clip(seed)
        (obj,) = clip.attributes["objects"]
        f = clip.frames.permute(0, 3, 1, 2)
        blurred = torch.nn.functional.interpolate(
            torch.nn.functional.avg_pool2d(f, 8), scale_factor=8, mode="bilinear", align_corners=False
        )
        noisy = (blurred + 0.05 * torch.randn(blurred.shape, generator=gen)).clamp(0, 1).permute(0, 2, 3, 1)
        assert event_f1(visual_impacts(noisy, FPS), clip.events).f1 >= 0.8, seed
        assert dominant_colour(noisy) == obj["colour"], seed
        w = griffin_lim(inverse(mel(clip.waveform)))
        w = w + 0.02 * torch.randn(w.shape, generator=gen)
        assert event_f1(audio_onsets(w, SR), clip.events).f1 >= 0.8, seed
        assert sound_class(w, SR) == obj["sound"], seed


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="frames"):
        visual_impacts(torch.zeros(4, 8, 8), FPS)
    with pytest.raises(InputError, match="colour"):
        colour_track(frame_colours(torch.zeros(2, 8, 8, 3)), ["purple"])
    with pytest.raises(InputError, match="waveform"):
        audio_onsets(np.zeros((1, 2, 3)), SR)


def test_every_shape_is_told_apart_and_a_blur_keeps_it():
    """Shape accuracy separates ball, square and triangle on the renders, also blurred to twice their edge width
    (a blob of the same size is still a ball, not a square)."""
    found = {}
    for seed in range(30):
        clip = make_clip(seed)
        (obj,) = clip.attributes["objects"]
        f = clip.frames.permute(0, 3, 1, 2)
        soft = torch.nn.functional.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False)
        found.setdefault(obj["shape"], []).append(object_shape(soft.permute(0, 2, 3, 1)))
    assert set(found) == set(vocabulary().shapes)
    for shape, seen in found.items():
        assert seen.count(shape) >= len(seen) - 1, (shape, seen)


def test_level_and_impact_energy_of_real_clips_and_of_a_buzz():
    clip = make_clip(3)
    level = audio_level(clip.waveform, SR)
    assert -35 < level.rms_dbfs < -15 and -8 < level.peak_dbfs <= 0 and level.peak_to_median_db > 25
    assert impact_energy_share(clip.waveform, SR, clip.events) > 0.9
    buzz = 0.01 * torch.randn(2 * SR, generator=torch.Generator().manual_seed(0))
    assert audio_level(buzz, SR).peak_to_median_db < 6
    assert impact_energy_share(buzz, SR, clip.events) < 0.5
    assert audio_level(torch.zeros(SR), SR).rms_dbfs == -120.0
    assert impact_energy_share(torch.zeros(SR), SR, clip.events) == 0.0
    half = audio_level(clip.waveform * 0.5, SR)
    assert half.rms_dbfs - level.rms_dbfs == pytest.approx(-6.02, abs=0.01)


# ---- degenerate outputs score at or below chance ------------------------------------------------------------------

SPEC = SyntheticSpec()
CLIPS = [make_clip(s) for s in range(TUNING_SEEDS.start + 100, TUNING_SEEDS.start + 108)]
NAMES = list(COLOURS)


def _source(shape: str):
    """The one clip whose picture every uninformed video copies (it knows nothing about the clip it is for)."""
    return next(
        c
        for c in map(make_clip, range(TUNING_SEEDS.start + 200, TUNING_SEEDS.start + 300))
        if c.attributes["objects"][0]["shape"] == shape
    )


def _noise(clip):
    return 0.03 * torch.randn(SPEC.num_samples, generator=torch.Generator().manual_seed(0))


def _clicks(clip):
    """Short clicks at the data set's mean event rate, at one phase of the periodic baseline's grid."""
    rate = baselines.mean_event_rate([c.events for c in CLIPS], SPEC.seconds)
    t = np.arange(int(0.005 * SR)) / SR
    click = torch.from_numpy(0.8 * np.sin(2 * np.pi * 1000 * t) * np.exp(-t / 0.002)).float()
    w = torch.zeros(SPEC.num_samples)
    for e in baselines.periodic_events(rate, SPEC.seconds, 0.25):
        i = int(round(e * SR))
        w[i : i + len(click)] += click[: SPEC.num_samples - i]
    return w


def _recolour(frames, colour_of_frame):
    """``frames`` with the object's colour replaced, frame ``k`` by ``colour_of_frame(k)`` (edges kept soft)."""
    cover, labels = object_coverage(frames)
    palette = torch.tensor(list(COLOURS.values()))
    out = frames.clone()
    for k in range(frames.shape[0]):
        new = torch.tensor(COLOURS[colour_of_frame(k)])
        shift = torch.from_numpy(cover[k]).float()[..., None] * (new - palette[torch.from_numpy(labels[k])])
        out[k] = (frames[k] + shift).clamp(0, 1)
    return out


def _captioned(clip) -> str:
    return clip.attributes["objects"][0]["colour"]


DEGENERATE = {
    "frozen frame + stationary noise": (
        lambda c: _source("square").frames[:1].expand(SPEC.num_frames, -1, -1, -1),
        _noise,
    ),
    "periodic clicks at the mean rate": (
        lambda c: _source("square").frames[:1].expand(SPEC.num_frames, -1, -1, -1),
        _clicks,
    ),
    "flickering colour": (lambda c: _recolour(_source("square").frames, lambda k: NAMES[k % len(NAMES)]), _noise),
    "a wrong colour": (
        lambda c: _recolour(_source("square").frames, lambda k: NAMES[(NAMES.index(_captioned(c)) + 1) % 5]),
        _noise,
    ),
    "a blob for every shape": (lambda c: _source("ball").frames, _noise),
}


@pytest.mark.parametrize("name", list(DEGENERATE))
@pytest.mark.parametrize("task", ["t2av", "v2a", "a2v"])
def test_degenerate_outputs_score_at_or_below_chance_on_every_metric(name, task):
    """Outputs that know nothing about their clip (a frozen frame, stationary noise, periodic clicks, a colour that
    flickers or is wrong, one ball for every shape) score no better than chance (the better of the shuffled
    pairing and the uninformed baseline) on every metric that has one. Counts and levels (offsets, flips, dB) are
    compared with the real clips instead. The old metrics passed some of these: a frozen frame with noise scored
    T2AV event F1 1.0, a flickering object "showed" the captioned colour."""
    video, audio = DEGENERATE[name]
    generated = {"t2av": ("audio", "video"), "v2a": ("audio",), "a2v": ("video",)}[task]
    outputs = benchmark.Outputs(task, generated=generated)
    for clip in CLIPS:
        outputs.add(
            video(clip) if "video" in generated else clip.frames,
            audio(clip) if "audio" in generated else clip.waveform,
        )
    metrics = report.estimates(score_outputs(outputs, CLIPS, SPEC))
    scored = [k for k in CHANCE if k in metrics]
    assert "event_f1" in scored and len(scored) >= 4
    for key in scored:
        level, baseline = report.chance(metrics, key)
        assert metrics[key].mean <= level.mean + 1e-9, (name, task, key, metrics[key].mean, baseline, level.mean)
    if "video" in generated and name in ("flickering colour", "a wrong colour"):
        assert metrics["colour_held"].mean == 0.0
    if "video" in generated and name == "a blob for every shape":
        assert metrics["shape"].mean == pytest.approx(
            np.mean([c.attributes["objects"][0]["shape"] == "ball" for c in CLIPS])
        )


def test_real_clips_score_far_above_chance():
    outputs = benchmark.real_outputs(CLIPS)["t2av/real"]
    metrics = report.estimates(score_outputs(outputs, CLIPS, SPEC))
    for key in ("event_f1", "colour_frames", "colour_held", "shape", "floor", "sound", "energy_share"):
        assert metrics[key].mean == pytest.approx(1.0, abs=0.02), key
        assert report.chance(metrics, key)[0].mean < 0.7, key
    assert metrics["colour_flips"].mean == 0.0 and metrics["rms_diff_db"].mean == 0.0


# ---- intervals and seeds ------------------------------------------------------------------------------------------


def test_wilson_interval_stays_in_the_unit_interval_and_matches_its_formula():
    for values in ([1.0] * 5, [0.0] * 5, [1.0], [0.0, 1.0, 1.0, float("nan")], [1.0] * 49 + [0.0]):
        e = wilson_interval(values)
        assert 0.0 <= e.low <= e.mean <= e.high <= 1.0, (values, e)
    e = wilson_interval([1.0] * 8 + [0.0] * 2)
    assert (e.mean, e.n, e.method) == (0.8, 10, "wilson")
    assert (e.low, e.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # Wilson's 95 % interval for 8 of 10
    assert wilson_interval([1.0] * 10).high == 1.0 and wilson_interval([1.0] * 10).low < 1.0
    assert math.isnan(wilson_interval([]).mean)
    with pytest.raises(InputError, match="0 or 1"):
        wilson_interval([0.5, 1.0])


def test_bootstrap_interval_stays_within_the_values_and_is_reproducible():
    rng = np.random.default_rng(0)
    for values in (rng.uniform(0, 1, 50), np.ones(7), np.r_[np.zeros(20), 1.0], rng.beta(0.2, 0.2, 13)):
        e = bootstrap_interval(values)
        assert values.min() <= e.low <= e.mean <= e.high <= values.max(), e
        assert 0.0 <= e.low and e.high <= 1.0
    e = bootstrap_interval(rng.normal(3.0, 1.0, 400))
    assert e.high - e.low == pytest.approx(2 * 1.96 / 20, rel=0.15)  # close to the normal interval for many values
    assert bootstrap_interval([0.2, 0.9, 0.4]) == bootstrap_interval([0.2, 0.9, 0.4])
    assert bootstrap_interval([0.3]).low == 0.3 and math.isnan(bootstrap_interval([]).mean)


def test_report_seeds_are_apart_from_tuning_seeds_unless_asked():
    default = choose_seeds(None, 50)
    assert (default.first, default.name) == (REPORT_SEEDS.start, "report")
    assert "(report range)" in default.describe() and default.seeds[-1] == REPORT_SEEDS.start + 49
    with pytest.raises(InputError, match="tuning seeds"):
        choose_seeds(TUNING_SEEDS.start, 16)
    assert choose_seeds(TUNING_SEEDS.start, 16, allow_tuning=True).name == "tuning"
    with pytest.raises(InputError, match="one range"):
        choose_seeds(TUNING_SEEDS.stop - 5, 10, allow_tuning=True)  # straddles tuning and nothing
    with pytest.raises(InputError, match="training clips"):
        choose_seeds(5, 10)
    with pytest.raises(InputError, match="clips must be"):
        choose_seeds(None, 1)
    assert not set(TUNING_SEEDS) & set(range(REPORT_SEEDS.start, REPORT_SEEDS.start + 10_000))
    with pytest.raises(InputError, match="tuning seeds"):
        benchmark.EvalSettings(clips=4, first_seed=TUNING_SEEDS.start)
