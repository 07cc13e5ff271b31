"""Per-clip scores of one task's outputs against their synthetic clips, with the uninformed baselines beside them.

Every metric ``m`` that an uninformed output could pass comes with baselines ``shuffled_m`` (output ``i`` against
clip ``i + 1``) and ``periodic_m`` (clicks at the data set's mean rate) or ``constant_m`` (the most common caption
value); :data:`CHANCE` lists them and a report calls the higher mean "chance". Counts and levels (colour flips,
offsets, dB) have no chance level: they are compared with the real clips instead.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..train.synthetic import SyntheticClip, SyntheticSpec
from . import baselines
from .appearance import colour_track, floor_colour, frame_colours, object_map, object_shape
from .events import audio_onsets, event_f1, visual_impacts
from .sound import IMPACT_LEAD_S, audio_level, impact_energy_share, sound_class

EVENT_TOLERANCE_S = 0.1  # +-100 ms, about where people start to notice an audio-video offset
IMPACT_WINDOW_S = 0.25  # the synthetic impact sound's length: the energy after an impact that is its sound

CHANCE = {
    "event_f1": ("shuffled_event_f1", "periodic_event_f1"),
    "colour_frames": ("shuffled_colour_frames", "constant_colour_frames"),
    "colour_held": ("shuffled_colour_held", "constant_colour_held"),
    "shape": ("shuffled_shape", "constant_shape"),
    "floor": ("shuffled_floor", "constant_floor"),
    "sound": ("shuffled_sound", "constant_sound"),
    "energy_share": ("shuffled_energy_share", "periodic_energy_share"),
    "av_align": ("shuffled_av_align",),
}
# Per-clip pass/fail metrics: their intervals are Wilson intervals of a proportion.
PROPORTIONS = frozenset(
    ["colour_held", "shape", "floor", "sound", "no_video_events"]
    + [f"{kind}_{m}" for m in ("colour_held", "shape", "floor", "sound") for kind in ("shuffled", "constant")]
    + ["constant_colour_frames"]
)


def _in_windows(times: list[float], ref: list[float]) -> float:
    """Share of ``times`` inside an impact window of ``ref``: the impact energy share of ideal clicks."""
    if not times:
        return 0.0
    inside = [any(r - IMPACT_LEAD_S <= t <= r + IMPACT_WINDOW_S for r in ref) for t in times]
    return float(np.mean(inside))


def _events(values: dict, task: str, pred, ref, spec: SyntheticSpec, rate: float) -> None:
    n = len(pred)

    def f1(times, reference) -> float:
        score = event_f1(times, reference, EVENT_TOLERANCE_S)
        # T2AV's reference is its own video; a video without a visible impact has failed the caption ("bounces"):
        # every clip of the data has one. Those clips count as misses and are also counted apart.
        return 0.0 if task == "t2av" and math.isnan(score.f1) else score.f1

    scores = [event_f1(pred[i], ref[i], EVENT_TOLERANCE_S) for i in range(n)]
    values["event_f1"] = [f1(pred[i], ref[i]) for i in range(n)]
    values["shuffled_event_f1"] = baselines.shuffled(lambda i, j: f1(pred[i], ref[j]), n)
    values["periodic_event_f1"] = baselines.best_periodic(rate, spec.seconds, lambda t, i: f1(t, ref[i]), n)[0]
    values["offset_ms"] = [s.mean_abs_offset_ms for s in scores]
    values["signed_offset_ms"] = [s.mean_offset_ms for s in scores]
    # Diagnostics for the JSON: too few events found (recall) or invented ones (precision)?
    values["precision"] = [s.precision for s in scores]
    values["recall"] = [s.recall for s in scores]
    values["events_found"] = [float(s.n_pred) for s in scores]
    values["events_expected"] = [float(s.n_ref) for s in scores]
    if task == "t2av":
        values["no_video_events"] = [float(s.n_ref == 0) for s in scores]


def _video(values: dict, frames: list, clips: list[SyntheticClip], spec: SyntheticSpec) -> None:
    n = len(clips)
    captioned = [tuple(sorted(o["colour"] for o in c.attributes["objects"])) for c in clips]
    colours = [frame_colours(f, len(c.attributes["objects"])) for f, c in zip(frames, clips, strict=True)]
    tracks = {(i, j): colour_track(colours[i], captioned[j]) for i in range(n) for j in (i, (i + 1) % n)}
    values["colour_frames"] = [tracks[i, i].share for i in range(n)]
    values["colour_held"] = [float(tracks[i, i].held) for i in range(n)]
    values["colour_flips"] = [float(tracks[i, i].flips) for i in range(n)]
    values["shuffled_colour_frames"] = baselines.shuffled(lambda i, j: tracks[i, j].share, n)
    values["shuffled_colour_held"] = baselines.shuffled(lambda i, j: float(tracks[i, j].held), n)
    values["constant_colour_frames"] = values["constant_colour_held"] = baselines.constant_guess(captioned)

    def shapes(frames_i, clip) -> tuple[str, ...]:
        objects = clip.attributes["objects"]
        if len(objects) == 1:
            return (object_shape(frames_i),)
        return tuple(object_shape(frames_i, o["colour"]) for o in objects)

    truth = [tuple(o["shape"] for o in c.attributes["objects"]) for c in clips]
    seen = [shapes(f, c) for f, c in zip(frames, clips, strict=True)]
    values["shape"] = [float(seen[i] == truth[i]) for i in range(n)]
    # The shuffled pairing reads the shape of the next clip's object (same colour layout), judged against clip i.
    values["shuffled_shape"] = baselines.shuffled(lambda i, j: float(seen[i] == truth[j]), n)
    values["constant_shape"] = baselines.constant_guess(truth)
    floors = [floor_colour(f, spec.floor_y) for f in frames]
    values["floor"] = [float(floors[i] == clips[i].attributes["floor"]) for i in range(n)]
    values["shuffled_floor"] = baselines.shuffled(lambda i, j: float(floors[i] == clips[j].attributes["floor"]), n)
    values["constant_floor"] = baselines.constant_guess([c.attributes["floor"] for c in clips])


def _audio(values: dict, waveforms: list, clips: list[SyntheticClip], impact_ref, rate: float, spec) -> None:
    n, sr = len(clips), spec.sample_rate
    sounds = [{o["sound"] for o in c.attributes["objects"]} for c in clips]
    got = [sound_class(w, sr) for w in waveforms]
    values["sound"] = [float(got[i] in sounds[i]) for i in range(n)]
    values["shuffled_sound"] = baselines.shuffled(lambda i, j: float(got[i] in sounds[j]), n)
    values["constant_sound"] = baselines.constant_guess([tuple(sorted(s)) for s in sounds])
    levels = [audio_level(w, sr) for w in waveforms]
    real = [audio_level(c.waveform, sr) for c in clips]
    values["rms_dbfs"] = [lv.rms_dbfs for lv in levels]
    values["peak_dbfs"] = [lv.peak_dbfs for lv in levels]
    values["peak_to_median_db"] = [lv.peak_to_median_db for lv in levels]
    values["rms_diff_db"] = [lv.rms_dbfs - r.rms_dbfs for lv, r in zip(levels, real, strict=True)]
    shares = {
        (i, j): impact_energy_share(waveforms[i], sr, impact_ref[j], IMPACT_WINDOW_S)
        for i in range(n)
        for j in (i, (i + 1) % n)
    }
    values["energy_share"] = [shares[i, i] for i in range(n)]
    values["shuffled_energy_share"] = baselines.shuffled(lambda i, j: shares[i, j], n)
    values["periodic_energy_share"] = baselines.best_periodic(
        rate, spec.seconds, lambda t, i: _in_windows(t, impact_ref[i]), n
    )[0]


def score_outputs(outputs, clips: list[SyntheticClip], spec: SyntheticSpec) -> dict[str, list[float]]:
    """Per-clip values of every metric that applies to ``outputs`` (a :class:`~uniform_core.eval.benchmark.
    Outputs`), NaN where a clip has none (e.g. no offset when nothing matched).

    Events compare v2a: generated audio onsets with the clip's impact times; a2v: generated video impacts with the
    clip's impact times; t2av: generated audio onsets with the generated video's impacts. Colour, shape and floor
    are read from generated video, sound class, level and impact energy from generated audio. The impact energy
    share is taken around the reference events of the event metric. AV-align scores the audio-video pair; its
    shuffled baseline pairs the generated modality of clip ``i`` with the other modality of clip ``i + 1``.
    """
    from .av_align import av_align

    n = len(clips)
    if n < 2 or len(outputs.frames) != n or len(outputs.waveforms) != n:
        raise InputError(
            f"scoring needs >= 2 clips and one output pair per clip; got {n} clips, {len(outputs.frames)} videos "
            f"and {len(outputs.waveforms)} sounds"
        )
    task, fps = outputs.task, float(spec.fps)
    frames = [f.float() / 255 for f in outputs.frames]
    maps = [object_map(f) for f in frames] if task != "v2a" else None  # read once, used by every reading
    rate = baselines.mean_event_rate([c.events for c in clips], spec.seconds)
    onsets = [audio_onsets(w, spec.sample_rate) for w in outputs.waveforms] if task != "a2v" else None
    impacts = [visual_impacts(m, fps) for m in maps] if task != "v2a" else None
    pred = impacts if task == "a2v" else onsets
    ref = impacts if task == "t2av" else [c.events for c in clips]
    values: dict[str, list[float]] = {}
    _events(values, task, pred, ref, spec, rate)
    if "video" in outputs.generated:
        _video(values, maps, clips, spec)
    if "audio" in outputs.generated:
        _audio(values, outputs.waveforms, clips, ref, rate, spec)

    def align(video: int, audio: int) -> float:
        return av_align(frames[video], fps, outputs.waveforms[audio], spec.sample_rate).score

    values["av_align"] = [align(i, i) for i in range(n)]
    # The modality that is scored (audio, except in a2v) stays with clip i; the other one comes from clip i + 1.
    values["shuffled_av_align"] = [align(i, (i + 1) % n) if task == "a2v" else align((i + 1) % n, i) for i in range(n)]
    return values
