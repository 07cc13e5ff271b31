import json

import numpy as np
import pytest
import torch

from uniform_core.errors import InputError
from uniform_core.train.synthetic import BURST_SECONDS, SyntheticSpec, make_clip, vocabulary

SPEC = SyntheticSpec()


def test_same_seed_same_clip_other_seed_other_clip():
    a, b, c = make_clip(5), make_clip(5), make_clip(6)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.waveform, b.waveform)
    assert (a.caption, a.events, a.attributes) == (b.caption, b.events, b.attributes)
    assert not torch.equal(a.frames, c.frames)
    assert not torch.equal(a.waveform, c.waveform)


def test_clip_layout_and_caption():
    voc = vocabulary()
    for seed in range(6):
        clip = make_clip(seed)
        assert clip.frames.shape == (34, 64, 64, 3) and clip.frames.dtype == torch.float32
        assert clip.waveform.shape == (32000,) and clip.waveform.dtype == torch.float32
        assert 0.0 <= clip.frames.min() and clip.frames.max() <= 1.0
        assert clip.waveform.abs().max() <= 1.0
        (obj,) = clip.attributes["objects"]
        assert obj["sound"] == voc.sound_of_shape[obj["shape"]]
        assert obj["size_px"] >= 12
        assert clip.caption == f"a {obj['colour']} {obj['shape']} bounces on a {clip.attributes['floor']} floor"
        ev = np.asarray(clip.events)
        assert len(ev) >= 1 and np.all(np.diff(ev) >= SPEC.min_event_gap)
        assert ev.min() >= SPEC.edge_margin and ev.max() <= SPEC.seconds - SPEC.edge_margin
        json.dumps(clip.attributes)  # the sidecar must be writable


def _object_bottom_rows(clip) -> np.ndarray:
    """Lowest image row holding object pixels, per frame (pixels that differ from the first column's colour)."""
    f = clip.frames.numpy()
    differs = np.abs(f - f[:, :, :1]).sum(-1) > 0.3
    rows = np.arange(f.shape[1])
    return np.array([rows[d.any(1)].max() + 1 for d in differs])


def test_objects_touch_the_floor_exactly_at_the_events():
    for seed in range(8):
        clip = make_clip(seed)
        bottom = _object_bottom_rows(clip)
        t = np.arange(len(bottom)) / SPEC.fps
        gravity = clip.attributes["objects"][0]["gravity_px_s2"]
        for event in clip.events:
            k = int(np.argmin(np.abs(t - event)))
            # On the floor at the event: the height after |t_k - event| of free flight, plus a 1-px edge.
            reach = 0.5 * gravity * abs(t[k] - event) * SPEC.max_event_gap + 1.5
            assert SPEC.floor_y - bottom[k] <= reach, (seed, event)
            far = np.abs(t - event) > 0.2
            assert (SPEC.floor_y - bottom[far] >= 0).all()  # never below the floor
        # Between two impacts the object leaves the floor.
        for a, b in zip(clip.events, clip.events[1:], strict=False):
            mid = int(np.argmin(np.abs(t - (a + b) / 2)))
            assert SPEC.floor_y - bottom[mid] >= 4


def test_sounds_start_exactly_at_the_events():
    sr = SPEC.sample_rate
    for seed in range(8):
        clip = make_clip(seed)
        w = clip.waveform.numpy().astype(np.float64)
        ambient = clip.attributes["ambient_level"]
        for event in clip.events:
            s = int(round(event * sr))
            before = np.sqrt(np.mean(w[s - 80 : s] ** 2))
            after = np.sqrt(np.mean(w[s + 32 : s + 192] ** 2))
            assert before < 3 * ambient + 1e-3, (seed, event)
            assert after > 10 * before, (seed, event)
        # Nothing sounds apart from the events: away from them only the ambient noise remains.
        quiet = np.ones(len(w), bool)
        for event in clip.events:
            s = int(round(event * sr))
            quiet[s : s + int(BURST_SECONDS * sr)] = False
        assert np.sqrt(np.mean(w[quiet] ** 2)) < 2 * ambient + 1e-4


def test_two_objects_have_distinct_attributes_and_union_of_events():
    spec = SyntheticSpec(max_objects=2)
    counts = set()
    for seed in range(10):
        clip = make_clip(seed, spec)
        objs = clip.attributes["objects"]
        counts.add(len(objs))
        assert len({o["shape"] for o in objs}) == len(objs) and len({o["colour"] for o in objs}) == len(objs)
        assert clip.events == sorted(t for ev in clip.attributes["object_events"] for t in ev)
        assert np.all(np.diff(clip.events) >= BURST_SECONDS)
        if len(objs) == 2:
            assert " and " in clip.caption and clip.caption.count(" a ") >= 2
    assert counts == {1, 2}


def test_longer_clips_and_bad_specs():
    clip = make_clip(3, SyntheticSpec(seconds=3))
    assert clip.frames.shape[0] == 51 and clip.waveform.shape[0] == 48000
    with pytest.raises(InputError, match="seconds"):
        SyntheticSpec(seconds=1.5)
    with pytest.raises(InputError, match="max_objects"):
        SyntheticSpec(max_objects=3)
    with pytest.raises(InputError, match="event gaps"):
        SyntheticSpec(min_event_gap=0.1)
    with pytest.raises(InputError, match="sample_rate"):
        SyntheticSpec(sample_rate=8000)
    with pytest.raises(InputError, match="seed"):
        make_clip(-1)


def test_write_dataset_round_trip_keeps_events_in_sync(tmp_path):
    media = pytest.importorskip("uniform_core.media", reason="uniform_core.media (write_mp4) has not landed yet")
    from uniform_core.eval.events import audio_onsets, event_f1, visual_impacts
    from uniform_core.train.synthetic import write_dataset

    paths = write_dataset(tmp_path, [1, 2], SPEC)
    assert [p.name for p in paths] == ["000001.mp4", "000002.mp4"]
    side = json.loads(paths[0].with_suffix(".json").read_text())
    clip = make_clip(1)
    assert side["caption"] == clip.caption and side["events"] == clip.events
    assert side["attributes"]["objects"] == clip.attributes["objects"]
    video = media.read_video(paths[0])
    assert video.frames.shape == clip.frames.shape and video.fps == SPEC.fps
    assert (video.frames - clip.frames).abs().mean() < 0.03  # H.264 at the default quality
    # AAC priming and H.264 timing must not move the events.
    audio = video.audio
    assert event_f1(audio_onsets(audio.waveform, audio.sample_rate), clip.events, tol=0.02).f1 == 1.0
    assert event_f1(visual_impacts(video.frames, video.fps), clip.events, tol=0.04).f1 == 1.0
