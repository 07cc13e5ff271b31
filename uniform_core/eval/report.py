"""The benchmark's tables: every figure beside its chance level, the real clips and the issue's target."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .intervals import Estimate, bootstrap_interval, wilson_interval
from .scoring import CHANCE, EVENT_TOLERANCE_S, PROPORTIONS

UNIMODAL_NOTE = (
    "Unimodal is emulated with the same weights, as the paper's baseline shares UniForm's architecture: the video "
    "of one T2AV sample and the audio of an independent T2AV sample (another seed, same caption), so neither "
    "modality saw the other while it was generated."
)
NO_TEXT_NOTE = "Without text, the DiT is conditioned on its learned null caption (no guidance)."
TASK_NAMES = {"t2av": "T2AV", "a2v": "A2V", "v2a": "V2A"}


@dataclass(frozen=True)
class Target:
    """A goal of issue 16 for a metric's mean: ``>= value`` (or ``|mean| <= value`` with ``absolute``), and at
    least ``margin`` above chance."""

    value: float
    margin: float = 0.0
    absolute: bool = False

    def describe(self) -> str:
        text = f"within +-{self.value:g}" if self.absolute else f">= {self.value:g}"
        return text + (f", chance + {self.margin:g}" if self.margin else "")

    def met(self, mean: float, chance: float) -> bool:
        if math.isnan(mean):
            return False
        if self.absolute:
            return abs(mean) <= self.value
        return mean >= self.value and (not self.margin or mean >= chance + self.margin)


# (metric key, label, targets by task); the rows of each task's table, in order.
METRICS = [
    (
        "event_f1",
        f"Event F1 (+-{int(EVENT_TOLERANCE_S * 1000)} ms)",
        {"v2a": Target(0.85, 0.3), "a2v": Target(0.9, 0.3), "t2av": Target(0.7)},
    ),
    ("offset_ms", "Offset of matched events (ms)", {}),
    ("signed_offset_ms", "Signed offset, generated - reference (ms)", {}),
    ("no_video_events", "Clips whose video shows no impact", {}),
    ("colour_frames", "Frames showing the captioned colour", {t: Target(0.9) for t in ("t2av", "a2v")}),
    (
        "colour_held",
        "Clips holding the captioned colour in every frame (no flip)",
        {t: Target(0.9) for t in ("t2av", "a2v")},
    ),
    ("colour_flips", "Colour changes per clip", {}),
    ("shape", "Shape right", {t: Target(0.8) for t in ("t2av", "a2v")}),
    ("floor", "Floor colour right", {t: Target(0.8) for t in ("t2av", "a2v")}),
    ("sound", "Sound class right", {t: Target(0.8) for t in ("t2av", "v2a")}),
    ("rms_dbfs", "RMS level (dBFS)", {}),
    ("rms_diff_db", "RMS minus the real clip's (dB)", {t: Target(3.0, absolute=True) for t in ("t2av", "v2a")}),
    ("peak_dbfs", "Peak level (dBFS)", {}),
    ("peak_to_median_db", "Loudest over median 16 ms frame (dB)", {}),
    ("energy_share", "Energy in the impact windows", {t: Target(0.6) for t in ("t2av", "v2a")}),
    ("av_align", "AV-align", {}),
]
PAPER_METRICS = ("av_align", "event_f1", "offset_ms")
PAIRED = ("av_align", "event_f1")  # metrics whose paired differences the paper tables report


def estimate(key: str, values) -> Estimate:
    """Wilson interval for a pass/fail metric, bootstrap interval of the mean for every other one."""
    return wilson_interval(values) if key in PROPORTIONS else bootstrap_interval(values)


def estimates(values: dict[str, list[float]]) -> dict[str, Estimate]:
    return {key: estimate(key, v) for key, v in values.items()}


def differences(a: dict[str, list[float]], b: dict[str, list[float]]) -> dict[str, Estimate]:
    """Per-clip paired differences ``a - b`` of the metrics both conditions share (bootstrap intervals)."""
    return {k: bootstrap_interval(np.subtract(a[k], b[k]).tolist()) for k in PAIRED if k in a and k in b}


def chance(metrics: dict[str, Estimate], key: str) -> tuple[Estimate, str] | None:
    """The higher-scoring uninformed baseline of ``key`` and its name, or None if it has none."""
    found = [(metrics[b], b.split("_")[0]) for b in CHANCE.get(key, ()) if b in metrics]
    found = [(e, name) for e, name in found if not math.isnan(e.mean)]
    return max(found, key=lambda item: item[0].mean) if found else None


@dataclass(frozen=True)
class Row:
    """One condition of one task: each metric's estimate over clips."""

    section: str  # "synthetic", "table_v", "table_vi"
    task: str
    condition: str
    metrics: dict[str, Estimate]


@dataclass
class Report:
    """What the benchmark measured: rows for the tables, per-clip values, settings and notes."""

    settings: dict
    rows: list[Row]
    per_clip: dict[str, dict[str, list[float]]]
    notes: list[str]

    def row(self, section: str, task: str, condition: str) -> Row:
        for r in self.rows:
            if (r.section, r.task, r.condition) == (section, task, condition):
                return r
        raise KeyError((section, task, condition))

    def targets(self) -> list[dict]:
        """Every issue-16 target of the synthetic section: task, metric, target, mean, chance, met."""
        out = []
        for key, label, targets in METRICS:
            for task, target in targets.items():
                try:
                    metrics = self.row("synthetic", task, "generated").metrics
                except KeyError:
                    continue
                if key not in metrics:
                    continue
                c = chance(metrics, key)
                mean, level = metrics[key].mean, c[0].mean if c else math.nan
                out.append(
                    {
                        "task": task,
                        "metric": key,
                        "label": label,
                        "target": target.describe(),
                        "mean": mean,
                        "chance": level,
                        "met": target.met(mean, level),
                    }
                )
        for task in ("v2a", "a2v"):  # Table V: text must not hurt sync (the paired interval reaches 0 or above)
            try:
                diff = self.row("table_v", task, "yes - no (paired)").metrics["event_f1"]
            except KeyError:
                continue
            out.append(
                {
                    "task": task,
                    "metric": "text_minus_no_text_event_f1",
                    "label": "Event F1 with text - without (paired)",
                    "target": "interval reaches 0 or above",
                    "mean": diff.mean,
                    "chance": math.nan,
                    "met": diff.high >= 0,
                }
            )
        return out

    def to_json(self) -> dict:
        rows = [
            {"section": r.section, "task": r.task, "condition": r.condition}
            | {"metrics": {k: estimate_json(v) for k, v in r.metrics.items()}}
            for r in self.rows
        ]
        return {
            "settings": self.settings,
            "notes": self.notes,
            "targets": [{k: none_if_nan(v) for k, v in t.items()} for t in self.targets()],
            "rows": rows,
            "per_clip": {k: {m: [none_if_nan(x) for x in v] for m, v in d.items()} for k, d in self.per_clip.items()},
        }

    def to_markdown(self) -> str:
        s = self.settings
        lines = [
            f"Bundle `{s['bundle']}`; {s['clips']} synthetic clips per task, {s['seeds']}; {s['seconds']} s, "
            f"{s['size']}x{s['size']}; {s['steps']} {s['sampler']} steps, CFG {_describe_cfg(s['cfg'])}. Cells: mean "
            "[95% interval] over clips (Wilson for shares of clips, bootstrap for means). Chance: the higher of the "
            "shuffled pairing (outputs judged against another clip) and an uninformed output (periodic impacts at "
            "the data set's mean rate, or the most common caption value). Real clips: the data through the same "
            "detectors.",
        ]
        for task in ("v2a", "a2v", "t2av"):
            try:
                generated = self.row("synthetic", task, "generated").metrics
            except KeyError:
                continue
            real = self.row("synthetic", task, "real clips").metrics
            lines += ["", f"### {TASK_NAMES[task]}", "", *_task_table(task, generated, real)]
        if any(r.section == "table_vi" for r in self.rows):
            lines += ["", "### Table VI (small scale): joint generation vs unimodal generation", ""]
            lines += [*_paper_table(self.rows, "table_vi", "Method"), "", UNIMODAL_NOTE]
        if any(r.section == "table_v" for r in self.rows):
            lines += ["", "### Table V (small scale): V2A and A2V with and without text", ""]
            lines += [*_paper_table(self.rows, "table_v", "Text"), "", NO_TEXT_NOTE]
            for t in (t for t in self.targets() if t["metric"] == "text_minus_no_text_event_f1"):
                verdict = "met" if t["met"] else "not met"
                lines.append(f"\nTarget (issue 16): text does not hurt {TASK_NAMES[t['task']]} sync: {verdict}.")
        lines += [f"\n{note}" for note in self.notes if note not in (UNIMODAL_NOTE, NO_TEXT_NOTE)]
        return "\n".join(lines) + "\n"


def _task_table(task: str, generated: dict[str, Estimate], real: dict[str, Estimate]) -> list[str]:
    lines = ["| Metric | Generated | Chance | Real clips | Target | Met |", "| --- | --- | --- | --- | --- | --- |"]
    for key, label, targets in METRICS:
        if key not in generated:
            continue
        c = chance(generated, key)
        chance_cell = f"{cell(c[0], key)} ({c[1]})" if c else "-"
        target = targets.get(task)
        met = (
            "-"
            if target is None
            else ("yes" if target.met(generated[key].mean, c[0].mean if c else math.nan) else "no")
        )
        real_cell = cell(real[key], key) if key in real else "-"
        lines.append(
            f"| {label} | {cell(generated[key], key)} | {chance_cell} | {real_cell} | "
            f"{target.describe() if target else '-'} | {met} |"
        )
    return lines


def _paper_table(rows: list[Row], section: str, label: str) -> list[str]:
    heads = {"av_align": "AV-align", "event_f1": "Event F1", "offset_ms": "Offset (ms)"}
    lines = [
        f"| Task | {label} | "
        + " | ".join(f"{heads[k]} | Chance {heads[k]}" if k in CHANCE else heads[k] for k in PAPER_METRICS)
        + " |",
        "| --- | --- | " + " | ".join("--- | ---" if k in CHANCE else "---" for k in PAPER_METRICS) + " |",
    ]
    for r in (r for r in rows if r.section == section):
        cells = []
        for k in PAPER_METRICS:
            cells.append(cell(r.metrics.get(k), k))
            if k in CHANCE:
                c = chance(r.metrics, k)
                cells.append(f"{cell(c[0], k)} ({c[1]})" if c else "-")
        lines.append(f"| {TASK_NAMES[r.task]} | {r.condition} | " + " | ".join(cells) + " |")
    return lines


def cell(e: Estimate | None, key: str) -> str:
    """``mean [low, high]`` (whole numbers for ms and dB and counts, else three decimals); ``-`` / ``n/a``."""
    if e is None:
        return "-"
    if math.isnan(e.mean):
        return "n/a"
    if key.endswith("_ms") or key.endswith("db") or key.endswith("dbfs"):
        return f"{e.mean:.1f} [{e.low:.1f}, {e.high:.1f}]"
    return f"{e.mean:.3f} [{e.low:.3f}, {e.high:.3f}]"


def _describe_cfg(scales: dict[str, float]) -> str:
    if len(set(scales.values())) == 1:
        return f"{next(iter(scales.values())):g}"
    return ", ".join(f"{scale:g} ({task})" for task, scale in scales.items())


def none_if_nan(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def estimate_json(e: Estimate) -> dict:
    return {k: none_if_nan(v) for k, v in asdict(e).items()}
