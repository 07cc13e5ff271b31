"""The synthetic benchmark (issue 16) and the paper's ablations at small scale (Tables V and VI, section IV-F).

Every number is measured on held-out synthetic clips whose impact times and attributes are known, from a named seed
range (:mod:`~uniform_core.eval.seeds`: report seeds unless tuning seeds are asked for). Each task's outputs are
scored (:mod:`~uniform_core.eval.scoring`) next to uninformed baselines and the real clips; intervals are Wilson
intervals for shares of clips and bootstrap intervals for means (:mod:`~uniform_core.eval.intervals`); where two
conditions ran on the same clips, the paper tables also give the per-clip paired difference.

Runs per clip: T2AV, V2A and A2V with the clip's caption; with ``paper=True`` also V2A and A2V without text (the
DiT's learned null caption, Table V) and a second, independent T2AV sample (Table VI, below).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import media
from ..diffusion.guidance import guidance_scales
from ..errors import InputError
from ..train.synthetic import SyntheticClip, SyntheticSpec, make_clip
from .intervals import bootstrap_interval
from .report import NO_TEXT_NOTE, UNIMODAL_NOTE, Report, Row, differences, estimate_json, estimates
from .scoring import EVENT_TOLERANCE_S, score_outputs
from .seeds import choose_seeds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    """How the benchmark samples. Clip ``i`` is synthetic seed ``first_seed + i`` (default: the start of the report
    range; tuning seeds only with ``allow_tuning_seeds``) and is sampled with seed ``seed + 2 * i`` (its
    independent second T2AV sample with ``seed + 2 * i + 1``)."""

    clips: int = 50
    steps: int = 30
    cfg: float | None = None  # None: the bundle's scale for each task
    sampler: str | None = None  # None: the bundle's
    seed: int = 0
    max_objects: int = 1
    first_seed: int | None = None
    allow_tuning_seeds: bool = False

    def __post_init__(self):
        choose_seeds(self.first_seed, self.clips, self.allow_tuning_seeds)  # raises for a bad or tuning range
        if self.max_objects not in (1, 2):
            raise InputError(f"max_objects must be 1 or 2; got {self.max_objects!r}")


@dataclass
class Outputs:
    """One condition's audio-video pairs, one per clip: ``frames`` (T, H, W, 3) uint8 (what a video file holds;
    AV-align quantises to it anyway) at ``fps``; ``waveforms`` (N,) float at ``sample_rate``. ``generated`` names
    the modalities the model made (``"audio"``, ``"video"`` or both), which decides how clips are mispaired."""

    task: str
    frames: list[torch.Tensor] = field(default_factory=list)
    waveforms: list[torch.Tensor] = field(default_factory=list)
    generated: tuple[str, ...] = ()

    def add(self, frames: torch.Tensor, waveform: torch.Tensor) -> None:
        self.frames.append((frames.clamp(0, 1) * 255).round().to(torch.uint8))
        self.waveforms.append(waveform.reshape(-1).float())


def eval_spec(bundle, max_objects: int = 1) -> SyntheticSpec:
    """The synthetic clip spec that matches ``bundle``'s native clip (square size, whole seconds)."""
    if bundle.height != bundle.width:
        raise InputError(f"the synthetic benchmark needs a square bundle clip; got {bundle.height}x{bundle.width}")
    return SyntheticSpec(seconds=int(bundle.duration), size=int(bundle.height), max_objects=max_objects)


def generate_outputs(
    pipe,
    clips: list[SyntheticClip],
    spec: SyntheticSpec,
    settings: EvalSettings,
    paper: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Outputs]:
    """Run every task on every clip. Keys: ``"<task>/text"`` (caption given), with ``paper`` also
    ``"v2a/no text"``, ``"a2v/no text"`` and ``"t2av/unimodal"`` (video of the first T2AV sample, audio of the
    second); ``progress(label)`` is called after each run."""
    runs = {"t2av/text": Outputs("t2av", generated=("audio", "video"))}
    runs |= {"v2a/text": Outputs("v2a", generated=("audio",)), "a2v/text": Outputs("a2v", generated=("video",))}
    if paper:
        runs |= {"v2a/no text": Outputs("v2a", generated=("audio",))}
        runs |= {"a2v/no text": Outputs("a2v", generated=("video",))}
        runs |= {"t2av/unimodal": Outputs("t2av", generated=("audio", "video"))}
    for i, clip in enumerate(clips):
        seed = settings.seed + 2 * i
        joint = generate_for_clip(pipe, "t2av", clip, spec, settings, seed, text=True, batch=2 if paper else 1)
        runs["t2av/text"].add(joint.frames[0], joint.waveform[0])
        if paper:
            runs["t2av/unimodal"].add(joint.frames[0], joint.waveform[1])
        _report(progress, "t2av")
        for task in ("v2a", "a2v"):
            for text in (True, False) if paper else (True,):
                result = generate_for_clip(pipe, task, clip, spec, settings, seed, text=text)
                runs[f"{task}/{'text' if text else 'no text'}"].add(result.frames[0], result.waveform[0])
                _report(progress, task)
    return runs


def real_outputs(clips: list[SyntheticClip]) -> dict[str, Outputs]:
    """The clips themselves as every task's "outputs": what the detectors score on perfect generation."""
    out = {}
    for task, generated in (("t2av", ("audio", "video")), ("v2a", ("audio",)), ("a2v", ("video",))):
        real = Outputs(task, generated=generated)
        for clip in clips:
            real.add(clip.frames, clip.waveform)
        out[f"{task}/real"] = real
    return out


def run_benchmark(
    pipe,
    settings: EvalSettings = EvalSettings(),
    synthetic: bool = True,
    paper: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Generate on ``settings.clips`` held-out clips with ``pipe`` (a :class:`~uniform_core.pipeline.
    UniFormPipeline`) and score: the synthetic benchmark (``synthetic``) and/or Tables V and VI (``paper``)."""
    if not (synthetic or paper):
        raise InputError("nothing to evaluate: ask for the synthetic benchmark, the paper tables, or both")
    spec = eval_spec(pipe.bundle, settings.max_objects)
    seeds = choose_seeds(settings.first_seed, settings.clips, settings.allow_tuning_seeds)
    clips = [make_clip(s, spec) for s in seeds.seeds]
    outputs = generate_outputs(pipe, clips, spec, settings, paper=paper, progress=progress)
    if synthetic:
        outputs |= real_outputs(clips)
    per_clip = {key: score_outputs(out, clips, spec) for key, out in outputs.items()}

    rows = []
    if synthetic:
        for task in ("v2a", "a2v", "t2av"):
            for condition in ("text", "real"):
                label = "generated" if condition == "text" else "real clips"
                rows.append(Row("synthetic", task, label, estimates(per_clip[f"{task}/{condition}"])))
    notes = []
    if paper:
        joint, uni = per_clip["t2av/text"], per_clip["t2av/unimodal"]
        rows += [
            Row("table_vi", "t2av", "unimodal (independent runs)", estimates(uni)),
            Row("table_vi", "t2av", "joint (UniForm)", estimates(joint)),
            Row("table_vi", "t2av", "joint - unimodal (paired)", differences(joint, uni)),
        ]
        for task in ("v2a", "a2v"):
            with_text, without = per_clip[f"{task}/text"], per_clip[f"{task}/no text"]
            rows += [
                Row("table_v", task, "no", estimates(without)),
                Row("table_v", task, "yes", estimates(with_text)),
                Row("table_v", task, "yes - no (paired)", differences(with_text, without)),
            ]
        notes += [UNIMODAL_NOTE, NO_TEXT_NOTE]
    info = {
        "bundle": pipe.bundle.name,
        "cfg": guidance_scales(pipe.bundle.cfg if settings.cfg is None else settings.cfg),
        "sampler": settings.sampler or pipe.bundle.sampler,
        "first_seed": seeds.first,
        "seed_range": seeds.name,
        "seeds": seeds.describe(),
        "seconds": spec.seconds,
        "size": spec.size,
        "fps": spec.fps,
        "sample_rate": spec.sample_rate,
        "event_tolerance_s": EVENT_TOLERANCE_S,
        "ci": "95% Wilson interval for shares of clips, percentile bootstrap (2000 resamples) for means",
    }
    return Report(asdict(settings) | info, rows, per_clip, notes)


# ---- AV-align of user files ---------------------------------------------------------------------------------


def av_align_folder_report(video_dir, wav_dir=None, size: str | None = None) -> tuple[dict, str]:
    """AV-align of every MP4 in ``video_dir`` as Seeing & Hearing averages it, as (JSON data, markdown)."""
    from .av_align import av_align_dataset

    if not Path(video_dir).is_dir():
        raise InputError(f"--av-align {str(video_dir)!r} is not a folder of .mp4 files")
    if wav_dir is not None and not Path(wav_dir).is_dir():
        raise InputError(f"--wav-dir {str(wav_dir)!r} is not a folder")
    result = av_align_dataset(video_dir, wav_dir, size)
    scores = list(result.clip_scores.values()) + [0.0] * len(result.missing_audio)
    estimate = bootstrap_interval(scores)
    data = asdict(result) | {"ci": estimate_json(estimate), "video_dir": str(video_dir), "wav_dir": wav_dir}
    audio = "their own audio tracks" if wav_dir is None else f"`<stem>.wav` in `{wav_dir}`"
    lines = [
        f"AV-align of {result.num_files} videos in `{video_dir}` with {audio}: **{result.score:.4f}** "
        f"(Seeing & Hearing's data-set average: sum of clip scores / number of MP4 files; 95% CI over clips "
        f"[{estimate.low:.4f}, {estimate.high:.4f}])",
        "",
        "| Clip | AV-align |",
        "| --- | --- |",
        *(f"| {name} | {score:.4f} |" for name, score in result.clip_scores.items()),
        *(f"| {name} | no audio (counts 0) |" for name in result.missing_audio),
    ]
    return data, "\n".join(lines) + "\n"


# ---- helpers ------------------------------------------------------------------------------------------------


def generate_for_clip(
    pipe, task: str, clip: SyntheticClip, spec: SyntheticSpec, settings: EvalSettings, seed: int, text: bool, batch=1
):
    """Run ``task`` on ``clip`` as the benchmark does: its video (v2a) or sound (a2v) as the condition, its caption
    when ``text``, the clip's size and length."""
    video = media.VideoClip(clip.frames, float(spec.fps)) if task == "v2a" else None
    audio = media.AudioClip(clip.waveform.view(1, -1), spec.sample_rate) if task == "a2v" else None
    size = None if task == "v2a" else spec.size
    return pipe.generate(
        task,
        prompt=clip.caption if text else None,
        video=video,
        audio=audio,
        duration=spec.seconds,
        seed=seed,
        steps=settings.steps,
        cfg=settings.cfg,
        sampler=settings.sampler,
        batch_size=batch,
        height=size,
        width=size,
    )


def _report(progress, label: str) -> None:
    if progress is not None:
        progress(label)
