"""The codecs' own ceilings: real synthetic clips through each codec's round trip, with no DiT at all.

No DiT can make a sound or a picture better than its codecs give back, so each stage is measured alone on real
clips: the vocoder on the mel of the clip (``vocoder(mel(x))``), the whole audio codec (mel -> audio VAE ->
vocoder) and the video VAE (encode, decode), plus what its latent shows the DiT of the colour
(:mod:`.latent_probe`). Targets are issue 16's; the latent's colour separation bound is ours, between the latents a
DiT did (0.93) and did not (0.26) learn the captioned colour on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..train.synthetic import SyntheticClip, SyntheticSpec, make_clip
from .appearance import colour_track, floor_colour, foreground_pixels, frame_colours, object_map, object_shape
from .events import audio_onsets, event_f1, visual_impacts
from .intervals import Estimate, bootstrap_interval, wilson_interval
from .latent_probe import colour_separation, vae_pixels
from .report import Target, cell, estimate_json, none_if_nan
from .scoring import EVENT_TOLERANCE_S
from .seeds import SeedRange
from .sound import audio_level

ONSET_TOLERANCE_S = 0.01  # an impact is kept when the round trip's onset is within 10 ms of it
AUDIO_STAGES = {"vocoder": "vocoder(mel(x))", "audio_codec": "audio VAE + vocoder (encode, decode)"}

# (stage, metric, label, target)
METRICS = [
    *(
        row
        for stage in AUDIO_STAGES
        for row in (
            (stage, "impacts_kept", "Impacts kept as onsets within 10 ms (share of impacts)", Target(0.95)),
            (stage, "onset_f1", f"Onset F1 (+-{int(EVENT_TOLERANCE_S * 1000)} ms)", None),
            (stage, "signed_offset_ms", "Onset offset, round trip - impact (ms)", None),
            (stage, "rms_diff_db", "RMS level, round trip - clip (dB)", Target(1.0, absolute=True)),
            (stage, "peak_diff_db", "Peak level, round trip - clip (dB)", None),
        )
    ),
    ("video_vae", "colour_frames", "Frames keeping the captioned colour", Target(0.98)),
    ("video_vae", "colour_held", "Clips keeping the captioned colour in every frame (no change)", Target(0.95)),
    ("video_vae", "shape", "Clips keeping the shape", Target(0.95)),
    ("video_vae", "floor", "Clips keeping the floor colour", None),
    ("video_vae", "area_growth", "Object + halo area, round trip / clip", None),
    ("video_vae", "impact_f1", f"Visual impact F1 (+-{int(EVENT_TOLERANCE_S * 1000)} ms)", None),
    ("video_vae", "colour_separation", "Latent distance: object recoloured / object moved 6 px", Target(0.5)),
]
PROPORTIONS = frozenset({"impacts_kept", "colour_held", "shape", "floor"})
STAGE_NAMES = AUDIO_STAGES | {"video_vae": "video VAE (encode, decode)"}


@dataclass
class CeilingReport:
    """Per-clip values by stage and metric (``impacts_kept`` holds one 0/1 per impact), and the settings."""

    settings: dict
    per_clip: dict[str, dict[str, list[float]]]

    def estimate(self, stage: str, metric: str) -> Estimate:
        values = self.per_clip[stage][metric]
        return wilson_interval(values) if metric in PROPORTIONS else bootstrap_interval(values)

    def rows(self) -> list[dict]:
        out = []
        for stage, metric, label, target in METRICS:
            e = self.estimate(stage, metric)
            out.append(
                {
                    "stage": stage,
                    "metric": metric,
                    "label": label,
                    "estimate": e,
                    "target": target.describe() if target else None,
                    "met": None if target is None else target.met(e.mean, math.nan),
                }
            )
        return out

    def to_json(self) -> dict:
        rows = [r | {"estimate": estimate_json(r["estimate"])} for r in self.rows()]
        per_clip = {s: {m: [none_if_nan(x) for x in v] for m, v in d.items()} for s, d in self.per_clip.items()}
        return {"settings": self.settings, "rows": rows, "per_clip": per_clip}

    def to_markdown(self) -> str:
        s = self.settings
        lines = [
            f"Codec ceilings of `{s['bundle']}` (no DiT): {s['clips']} real synthetic clips, {s['seeds']}; "
            "mean [95% interval] (Wilson for shares, bootstrap for means). The audio round trips start from the "
            "clip levelled as the codec's encoder levels it (peak 0.5); levels are compared with the clip as it was.",
            "",
            "| Stage | Metric | Measured | Target | Met |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in self.rows():
            met = "-" if r["met"] is None else ("yes" if r["met"] else "no")
            lines.append(
                f"| {STAGE_NAMES[r['stage']]} | {r['label']} | {cell(r['estimate'], r['metric'])} | "
                f"{r['target'] or '-'} | {met} |"
            )
        return "\n".join(lines) + "\n"


def _audio_scores(values: dict, clip: SyntheticClip, y: torch.Tensor, sample_rate: int) -> None:
    onsets = audio_onsets(y, sample_rate)
    tight = event_f1(onsets, clip.events, ONSET_TOLERANCE_S)
    wide = event_f1(onsets, clip.events, EVENT_TOLERANCE_S)
    values["impacts_kept"] += [1.0] * tight.n_matched + [0.0] * (tight.n_ref - tight.n_matched)
    values["onset_f1"].append(wide.f1)
    values["signed_offset_ms"].append(wide.mean_offset_ms)
    got, real = audio_level(y, sample_rate), audio_level(clip.waveform, sample_rate)
    values["rms_diff_db"].append(got.rms_dbfs - real.rms_dbfs)
    values["peak_diff_db"].append(got.peak_dbfs - real.peak_dbfs)


def _video_scores(values: dict, clip: SyntheticClip, y: torch.Tensor, spec: SyntheticSpec, vae) -> None:
    (obj,) = clip.attributes["objects"]
    m = object_map(y)
    track = colour_track(frame_colours(m), [obj["colour"]])
    values["colour_frames"].append(track.share)
    values["colour_held"].append(float(track.held))
    values["shape"].append(float(object_shape(m) == obj["shape"]))
    values["floor"].append(float(floor_colour(m, spec.floor_y) == clip.attributes["floor"]))
    values["area_growth"].append(float(foreground_pixels(m).mean() / foreground_pixels(clip.frames).mean()))
    values["impact_f1"].append(event_f1(visual_impacts(m, spec.fps), clip.events, EVENT_TOLERANCE_S).f1)
    values["colour_separation"].append(colour_separation(vae, clip.frames, obj["colour"]))


@torch.no_grad()
def codec_ceilings(bundle, seeds: SeedRange, progress: Callable[[], None] | None = None) -> CeilingReport:
    """Round-trip every clip of ``seeds`` (one object each, the bundle's clip size) through ``bundle``'s codecs and
    score what comes back against the clip."""
    from .benchmark import eval_spec

    spec = eval_spec(bundle)
    codec, vae = bundle.audio_codec, bundle.video_vae
    per_clip = {stage: {m: [] for s, m, _, _ in METRICS if s == stage} for stage in STAGE_NAMES}
    for seed in seeds.seeds:
        clip = make_clip(seed, spec)
        x = clip.waveform[None]
        n = x.shape[1]
        vocoded = codec.vocoder(codec.mel.fbank(x, n // codec.mel.config.hop_length))[0, :n]  # the encoder's mel
        round_trip = codec.decode(codec.encode(x, deterministic=True))[0, :n]
        _audio_scores(per_clip["vocoder"], clip, vocoded, spec.sample_rate)
        _audio_scores(per_clip["audio_codec"], clip, round_trip, spec.sample_rate)
        pixels = vae_pixels(clip.frames)
        decoded = vae.decode(vae.encode(pixels, deterministic=True), num_frames=pixels.shape[2])
        frames = ((decoded[0].clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0)
        _video_scores(per_clip["video_vae"], clip, frames, spec, vae)
        if progress is not None:
            progress()
    settings = {
        "bundle": bundle.name,
        "clips": seeds.clips,
        "first_seed": seeds.first,
        "seed_range": seeds.name,
        "seeds": seeds.describe(),
        "onset_tolerance_s": ONSET_TOLERANCE_S,
    }
    return CeilingReport(settings, per_clip)
