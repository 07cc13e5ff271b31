"""The synthetic benchmark (issue 6 item 4) and the paper's ablations at small scale (Tables V and VI, section IV-F).

Every number is measured on held-out synthetic clips (:func:`~uniform_core.train.synthetic.heldout_seeds`, far above
the training seeds) whose impact times are known. Each task's outputs are scored against the clip they were made
for and, as a chance baseline, against the next clip (the same outputs paired with the wrong clip). Intervals are
95 % confidence intervals of the mean over clips (:func:`~uniform_core.eval.events.mean_ci`); where two conditions
ran on the same clips, the table also gives the per-clip paired difference with its own interval.

Runs per clip: T2AV, V2A and A2V with the clip's caption; with ``paper=True`` also V2A and A2V without text (the
DiT's learned null caption, Table V) and a second, independent T2AV sample (Table VI, below).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import media
from ..diffusion.guidance import guidance_scales
from ..errors import InputError
from ..train.synthetic import SyntheticClip, SyntheticSpec, heldout_seeds, make_clip
from .events import (
    Estimate,
    audio_onsets,
    colour_present,
    event_f1,
    mean_ci,
    sound_class,
    visual_impacts,
)

logger = logging.getLogger(__name__)

EVENT_TOLERANCE_S = 0.1  # +-100 ms, about where people start to notice an audio-video offset
UNIMODAL_NOTE = (
    "Unimodal is emulated with the same weights, as the paper's baseline shares UniForm's architecture: the video "
    "of one T2AV sample and the audio of an independent T2AV sample (another seed, same caption), so neither "
    "modality saw the other while it was generated."
)
NO_TEXT_NOTE = "Without text, the DiT is conditioned on its learned null caption (no guidance)."

# (metric key, column header); the columns of each section's table.
_SYNTHETIC_COLUMNS = [
    ("event_f1", "Event F1"),
    ("shuffled_event_f1", "Shuffled F1"),
    ("offset_ms", "Offset (ms)"),
    ("colour", "Colour in video"),
    ("sound", "Sound class"),
    ("av_align", "AV-align"),
    ("shuffled_av_align", "Shuffled AV-align"),
]
_PAPER_COLUMNS = [
    ("av_align", "AV-align"),
    ("shuffled_av_align", "Shuffled AV-align"),
    ("event_f1", "Event F1"),
    ("shuffled_event_f1", "Shuffled F1"),
    ("offset_ms", "Offset (ms)"),
    ("colour", "Colour in video"),
    ("sound", "Sound class"),
]
_PAIRED = ("av_align", "event_f1")  # metrics whose paired differences the paper tables report
_TASK_NAMES = {"t2av": "T2AV", "a2v": "A2V", "v2a": "V2A"}


@dataclass(frozen=True)
class EvalSettings:
    """How the benchmark samples. Clip ``i`` is held-out seed ``heldout_seeds(clips)[i]`` and is sampled with seed
    ``seed + 2 * i`` (its independent second T2AV sample with ``seed + 2 * i + 1``)."""

    clips: int = 50
    steps: int = 30
    cfg: float | None = None  # None: the bundle's scale for each task
    sampler: str | None = None  # None: the bundle's
    seed: int = 0
    max_objects: int = 1

    def __post_init__(self):
        if isinstance(self.clips, bool) or not isinstance(self.clips, int) or self.clips < 2:
            raise InputError(f"clips must be an integer >= 2 (the shuffled baseline pairs clips); got {self.clips!r}")
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


@dataclass(frozen=True)
class Row:
    """One table row: a task under one condition, each metric's estimate over clips."""

    section: str  # "synthetic", "table_v", "table_vi"
    task: str
    condition: str
    metrics: dict[str, Estimate]


@dataclass
class Report:
    """What :func:`run_benchmark` measured: rows for the tables, per-clip values, settings and notes."""

    settings: dict
    rows: list[Row]
    per_clip: dict[str, dict[str, list[float]]]
    notes: list[str]

    def row(self, section: str, task: str, condition: str) -> Row:
        for r in self.rows:
            if (r.section, r.task, r.condition) == (section, task, condition):
                return r
        raise KeyError((section, task, condition))

    def to_json(self) -> dict:
        rows = [
            {"section": r.section, "task": r.task, "condition": r.condition}
            | {"metrics": {k: _estimate_json(v) for k, v in r.metrics.items()}}
            for r in self.rows
        ]
        return {"settings": self.settings, "notes": self.notes, "rows": rows, "per_clip": _nan_to_none(self.per_clip)}

    def to_markdown(self) -> str:
        s = self.settings
        lines = [
            f"Bundle `{s['bundle']}`; {s['clips']} held-out synthetic clips per task (seeds {s['first_seed']}.."
            f"{s['first_seed'] + s['clips'] - 1}, {s['seconds']} s, {s['size']}x{s['size']}); {s['steps']} "
            f"{s['sampler']} steps, CFG {_describe_cfg(s['cfg'])}. Cells: mean [95% CI] over clips. Event F1: "
            f"one-to-one matches within +-{int(EVENT_TOLERANCE_S * 1000)} ms. Shuffled: the same outputs paired "
            "with the wrong clip. Colour / sound class: share of clips showing the captioned colour / sound. Real "
            "clips: the data itself through the same detectors (the best a model can score).",
        ]
        if any(r.section == "synthetic" for r in self.rows):
            lines += [
                "",
                "### Synthetic benchmark",
                "",
                *_table(self.rows, "synthetic", "Outputs", _SYNTHETIC_COLUMNS),
            ]
        if any(r.section == "table_vi" for r in self.rows):
            lines += ["", "### Table VI (small scale): joint generation vs unimodal generation", ""]
            lines += [*_table(self.rows, "table_vi", "Method", _PAPER_COLUMNS), "", UNIMODAL_NOTE]
        if any(r.section == "table_v" for r in self.rows):
            lines += ["", "### Table V (small scale): V2A and A2V with and without text", ""]
            lines += [*_table(self.rows, "table_v", "Text", _PAPER_COLUMNS), "", NO_TEXT_NOTE]
        lines += [f"\n{note}" for note in self.notes if note not in (UNIMODAL_NOTE, NO_TEXT_NOTE)]
        return "\n".join(lines) + "\n"


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
        joint = _generate(pipe, "t2av", clip, spec, settings, seed, text=True, batch=2 if paper else 1)
        runs["t2av/text"].add(joint.frames[0], joint.waveform[0])
        if paper:
            runs["t2av/unimodal"].add(joint.frames[0], joint.waveform[1])
        _report(progress, "t2av")
        for task in ("v2a", "a2v"):
            for text in (True, False) if paper else (True,):
                result = _generate(pipe, task, clip, spec, settings, seed, text=text)
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


def score_outputs(outputs: Outputs, clips: list[SyntheticClip], spec: SyntheticSpec) -> dict[str, list[float]]:
    """Per-clip values of every metric that applies to the task (NaN where a clip has none, e.g. no offset when
    nothing matched).

    Event F1 (with its precision, recall and event counts) compares v2a: generated audio onsets with the clip's
    impact times; a2v: generated video impacts with the clip's impact times; t2av: generated audio onsets with
    generated video impacts. Shuffled: output ``i`` against clip ``i + 1``'s reference (the next clip's impacts, or
    for t2av the next clip's video). AV-align is computed on the audio-video pair, and shuffled on the generated
    modality of clip ``i`` with the other modality of clip ``i + 1``. Colour: every captioned colour is in the
    video (tasks that make video); sound class: the audio has a captioned object's sound (tasks that make audio).
    """
    from .av_align import av_align

    n = len(clips)
    if n < 2 or len(outputs.frames) != n or len(outputs.waveforms) != n:
        raise InputError(
            f"scoring needs >= 2 clips and one output pair per clip; got {n} clips, {len(outputs.frames)} videos "
            f"and {len(outputs.waveforms)} sounds"
        )
    task, fps, rate = outputs.task, float(spec.fps), spec.sample_rate
    frames = [f.float() / 255 for f in outputs.frames]
    onsets = [audio_onsets(w, rate) for w in outputs.waveforms] if task != "a2v" else None
    impacts = [visual_impacts(f, fps) for f in frames] if task != "v2a" else None
    pred = impacts if task == "a2v" else onsets
    ref = impacts if task == "t2av" else [c.events for c in clips]
    scores = [event_f1(pred[i], ref[i], EVENT_TOLERANCE_S) for i in range(n)]
    values = {
        "event_f1": [s.f1 for s in scores],
        "shuffled_event_f1": [event_f1(pred[i], ref[(i + 1) % n], EVENT_TOLERANCE_S).f1 for i in range(n)],
        "offset_ms": [s.mean_abs_offset_ms for s in scores],
        # Diagnostics for the JSON: too few events found (recall) or invented ones (precision)?
        "precision": [s.precision for s in scores],
        "recall": [s.recall for s in scores],
        "events_found": [float(s.n_pred) for s in scores],
        "events_expected": [float(s.n_ref) for s in scores],
    }
    if "video" in outputs.generated:
        values["colour"] = [
            float(all(colour_present(f, o["colour"]) for o in c.attributes["objects"]))
            for f, c in zip(frames, clips, strict=True)
        ]
    if "audio" in outputs.generated:
        values["sound"] = [
            float(sound_class(w, rate) in {o["sound"] for o in c.attributes["objects"]})
            for w, c in zip(outputs.waveforms, clips, strict=True)
        ]

    def align(video: int, audio: int) -> float:
        return av_align(frames[video], fps, outputs.waveforms[audio], rate).score

    values["av_align"] = [align(i, i) for i in range(n)]
    # The modality that is scored (audio, except in a2v) stays with clip i; the other one comes from clip i + 1.
    values["shuffled_av_align"] = [align(i, (i + 1) % n) if task == "a2v" else align((i + 1) % n, i) for i in range(n)]
    return values


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
    seeds = heldout_seeds(settings.clips)
    clips = [make_clip(s, spec) for s in seeds]
    outputs = generate_outputs(pipe, clips, spec, settings, paper=paper, progress=progress)
    if synthetic:
        outputs |= real_outputs(clips)
    per_clip = {key: score_outputs(out, clips, spec) for key, out in outputs.items()}

    rows = []
    if synthetic:
        for task in ("v2a", "a2v", "t2av"):
            for condition in ("text", "real"):
                label = "generated" if condition == "text" else "real clips"
                rows.append(Row("synthetic", task, label, _estimates(per_clip[f"{task}/{condition}"])))
    notes = []
    if paper:
        joint, uni = per_clip["t2av/text"], per_clip["t2av/unimodal"]
        rows += [
            Row("table_vi", "t2av", "unimodal (independent runs)", _estimates(uni)),
            Row("table_vi", "t2av", "joint (UniForm)", _estimates(joint)),
            Row("table_vi", "t2av", "joint - unimodal (paired)", _differences(joint, uni)),
        ]
        for task in ("v2a", "a2v"):
            with_text, without = per_clip[f"{task}/text"], per_clip[f"{task}/no text"]
            rows += [
                Row("table_v", task, "no", _estimates(without)),
                Row("table_v", task, "yes", _estimates(with_text)),
                Row("table_v", task, "yes - no (paired)", _differences(with_text, without)),
            ]
        notes += [UNIMODAL_NOTE, NO_TEXT_NOTE]
    info = {
        "bundle": pipe.bundle.name,
        "cfg": guidance_scales(pipe.bundle.cfg if settings.cfg is None else settings.cfg),
        "sampler": settings.sampler or pipe.bundle.sampler,
        "first_seed": seeds[0],
        "seconds": spec.seconds,
        "size": spec.size,
        "fps": spec.fps,
        "sample_rate": spec.sample_rate,
        "event_tolerance_s": EVENT_TOLERANCE_S,
        "ci": "95% normal-approximation interval of the mean over clips",
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
    estimate = mean_ci(scores)
    data = asdict(result) | {"ci": _estimate_json(estimate), "video_dir": str(video_dir), "wav_dir": wav_dir}
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


def _describe_cfg(scales: dict[str, float]) -> str:
    if len(set(scales.values())) == 1:
        return f"{next(iter(scales.values())):g}"
    return ", ".join(f"{scale:g} ({task})" for task, scale in scales.items())


def _generate(pipe, task: str, clip: SyntheticClip, spec: SyntheticSpec, settings: EvalSettings, seed, text, batch=1):
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


def _estimates(values: dict[str, list[float]]) -> dict[str, Estimate]:
    return {key: mean_ci(v) for key, v in values.items()}


def _differences(a: dict[str, list[float]], b: dict[str, list[float]]) -> dict[str, Estimate]:
    """Per-clip paired differences ``a - b`` of the metrics both conditions share."""
    return {k: mean_ci(np.subtract(a[k], b[k]).tolist()) for k in _PAIRED if k in a and k in b}


def _table(rows: list[Row], section: str, label: str, columns) -> list[str]:
    chosen = [r for r in rows if r.section == section]
    used = [(k, h) for k, h in columns if any(k in r.metrics for r in chosen)]
    lines = [
        "| Task | " + label + " | " + " | ".join(h for _, h in used) + " |",
        "| --- | --- | " + " | ".join("---" for _ in used) + " |",
    ]
    for r in chosen:
        cells = [_cell(r.metrics.get(k), k) for k, _ in used]
        lines.append(f"| {_TASK_NAMES[r.task]} | {r.condition} | " + " | ".join(cells) + " |")
    return lines


def _cell(estimate: Estimate | None, key: str) -> str:
    if estimate is None:
        return "-"
    if math.isnan(estimate.mean):
        return "n/a"
    if key == "offset_ms":
        return f"{estimate.mean:.0f} [{estimate.low:.0f}, {estimate.high:.0f}]"
    return f"{estimate.mean:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def _estimate_json(e: Estimate) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(e).items()}


def _nan_to_none(per_clip: dict) -> dict:
    return {
        key: {m: [None if math.isnan(x) else x for x in v] for m, v in values.items()}
        for key, values in per_clip.items()
    }
