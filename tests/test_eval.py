"""`uniform-av eval`: the synthetic benchmark, the paper tables, the codec ceilings, contact sheets and AV-align of
user files.

The command itself runs on a tiny random bundle (its numbers mean nothing). The pairing logic (which output is
scored against which clip, what the shuffled baseline and the paper's conditions are made of) is checked with an
oracle pipeline that returns each clip's own data, so the expected scores are known.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from uniform_core.bundle import random_tiny_bundle, save_bundle
from uniform_core.cli import main
from uniform_core.errors import InputError
from uniform_core.eval import benchmark
from uniform_core.eval.seeds import REPORT_SEEDS, TUNING_SEEDS, choose_seeds
from uniform_core.pipeline import GenerationResult
from uniform_core.train.synthetic import SyntheticSpec, heldout_seeds, make_clip, write_dataset

pytest.importorskip("librosa")
pytest.importorskip("cv2")

SPEC = SyntheticSpec()  # what the random tiny bundle and uniform-tiny make: 2 s, 64x64
CELL = re.compile(r"^(-?\d+\.\d+|-?\d+) \[(-?\d+\.\d+|-?\d+), (-?\d+\.\d+|-?\d+)\]$")  # "mean [low, high]"


class OraclePipe:
    """Stands in for UniFormPipeline: with text it returns the clip's own data as the generated modality (a perfect
    model); without text, or as the second sample of a batch, silence where it makes sound."""

    def __init__(self, clips):
        self.bundle = SimpleNamespace(name="oracle", height=SPEC.size, width=SPEC.size, duration=SPEC.seconds)
        self.bundle.sampler, self.bundle.cfg = "ddim", {"t2av": 2.0, "a2v": 1.0, "v2a": 1.0}
        self.clips = clips
        self.calls = []

    def _clip(self, task, prompt, video, audio):
        for clip in self.clips:
            if (task == "v2a" and torch.equal(video.frames, clip.frames)) or (
                task == "a2v" and torch.equal(audio.waveform[0], clip.waveform)
            ):
                return clip
            if task == "t2av" and prompt == clip.caption:
                return clip
        raise AssertionError(f"no clip for {task} {prompt!r}")

    def generate(self, task, prompt=None, video=None, audio=None, seed=0, batch_size=1, **kwargs):
        self.calls.append(SimpleNamespace(task=task, prompt=prompt, seed=seed, batch_size=batch_size, **kwargs))
        clip = self._clip(task, prompt, video, audio)
        silence = torch.zeros_like(clip.waveform)
        waves = [clip.waveform if prompt is not None else silence] + [silence] * (batch_size - 1)
        frames = clip.frames.expand(batch_size, -1, -1, -1, -1)
        seeds = [seed + i for i in range(batch_size)]
        return GenerationResult(task, frames, SPEC.fps, torch.stack(waves)[:, None], SPEC.sample_rate, seeds)


@pytest.fixture(scope="module")
def oracle_report():
    clips = [make_clip(s) for s in choose_seeds(None, 2).seeds]
    pipe = OraclePipe(clips)
    report = benchmark.run_benchmark(pipe, benchmark.EvalSettings(clips=2, seed=7), synthetic=True, paper=True)
    return pipe, report


def test_runs_use_the_held_out_clips_distinct_seeds_and_null_caption_without_text(oracle_report):
    pipe, report = oracle_report
    clips = [make_clip(s) for s in choose_seeds(None, 2).seeds]
    by_task = {}
    for call in pipe.calls:
        by_task.setdefault((call.task, call.prompt is not None), []).append(call)
    assert {key: len(calls) for key, calls in by_task.items()} == {
        ("t2av", True): 2,
        ("v2a", True): 2,
        ("v2a", False): 2,
        ("a2v", True): 2,
        ("a2v", False): 2,
    }
    t2av = by_task[("t2av", True)]
    assert [c.prompt for c in t2av] == [c.caption for c in clips]
    assert [c.seed for c in t2av] == [7, 9] and all(c.batch_size == 2 for c in t2av)  # item 1: seed + 1
    # No sampler or CFG given: the pipeline uses the bundle's (per task for CFG), and the report says so.
    assert all(
        c.steps == 30 and c.cfg is None and c.sampler is None and c.duration == SPEC.seconds for c in pipe.calls
    )
    assert (report.settings["sampler"], report.settings["cfg"]) == ("ddim", {"t2av": 2.0, "a2v": 1.0, "v2a": 1.0})
    assert "30 ddim steps, CFG 2 (t2av), 1 (a2v), 1 (v2a)." in report.to_markdown()


def test_oracle_outputs_score_like_the_real_clips_and_beat_the_shuffled_baseline(oracle_report):
    _, report = oracle_report
    for task in ("v2a", "a2v", "t2av"):
        generated = report.row("synthetic", task, "generated").metrics
        real = report.row("synthetic", task, "real clips").metrics
        for key in real:
            assert generated[key].mean == pytest.approx(real[key].mean), (task, key)
        assert generated["event_f1"].mean == 1.0
        assert generated["shuffled_event_f1"].mean < 0.5 and generated["periodic_event_f1"].mean < 0.8
        assert generated["av_align"].mean > generated["shuffled_av_align"].mean


def test_paper_tables_compare_paired_conditions(oracle_report):
    _, report = oracle_report
    joint = report.row("table_vi", "t2av", "joint (UniForm)").metrics
    unimodal = report.row("table_vi", "t2av", "unimodal (independent runs)").metrics
    diff = report.row("table_vi", "t2av", "joint - unimodal (paired)").metrics
    assert joint["event_f1"].mean == 1.0 and unimodal["event_f1"].mean == 0.0  # the second sample is silent
    assert diff["event_f1"].mean == pytest.approx(joint["event_f1"].mean - unimodal["event_f1"].mean)
    assert diff["av_align"].mean == pytest.approx(joint["av_align"].mean - unimodal["av_align"].mean)
    assert set(diff) == {"av_align", "event_f1"}
    v2a_text, v2a_none = report.row("table_v", "v2a", "yes").metrics, report.row("table_v", "v2a", "no").metrics
    assert v2a_text["event_f1"].mean == 1.0 and v2a_none["event_f1"].mean == 0.0
    # A2V conditions on the sound, so the oracle's video is the same with or without text.
    assert report.row("table_v", "a2v", "yes - no (paired)").metrics["event_f1"].mean == 0.0
    md = report.to_markdown()
    assert benchmark.UNIMODAL_NOTE in md and benchmark.NO_TEXT_NOTE in md
    # The oracle's V2A without text is silent: text helps, so "text does not hurt" is met for both tasks.
    verdicts = {t["task"]: t["met"] for t in report.targets() if t["metric"] == "text_minus_no_text_event_f1"}
    assert verdicts == {"v2a": True, "a2v": True}
    assert "text does not hurt V2A sync: met" in md


def test_shuffled_baseline_pairs_each_output_with_the_next_clip():
    """Outputs deliberately made for the next clip: scored against their own clip they fail, and the shuffled
    pairing (output i with clip i + 1) is the one that matches."""
    clips = [make_clip(s) for s in heldout_seeds(3)]
    real = benchmark.real_outputs(clips)
    for task in ("v2a", "a2v"):
        rotated = benchmark.Outputs(task, generated=real[f"{task}/real"].generated)
        for i, clip in enumerate(clips):
            nxt = clips[(i + 1) % 3]
            rotated.add(*((clip.frames, nxt.waveform) if task == "v2a" else (nxt.frames, clip.waveform)))
        scores = benchmark.score_outputs(rotated, clips, SPEC)
        reference = benchmark.score_outputs(real[f"{task}/real"], clips, SPEC)
        assert scores["shuffled_event_f1"] == [1.0, 1.0, 1.0], task
        assert max(scores["event_f1"]) < 1.0, task
        # The shuffled AV-align pairs the generated modality of clip i with the other modality of clip i + 1.
        assert scores["shuffled_av_align"] == pytest.approx(reference["av_align"][1:] + reference["av_align"][:1])


def test_held_out_seeds_are_not_training_seeds():
    from uniform_core.train.config import DataConfig, load_config

    recipe = Path(__file__).resolve().parents[1] / "configs" / "uniform-tiny.json"
    data = load_config(recipe).data if recipe.is_file() else DataConfig()
    assert data.first_seed + data.num_clips <= heldout_seeds(1)[0]


# ---- the command ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return save_bundle(random_tiny_bundle(seed=0), tmp_path_factory.mktemp("bundle") / "random-tiny")


def test_eval_command_writes_every_row_beside_chance_on_report_seeds(bundle_dir, tmp_path, capsys):
    out_json, out_md = tmp_path / "eval.json", tmp_path / "eval.md"
    args = ["eval", "--synthetic", "--paper-tables", "--bundle", str(bundle_dir), "--clips", "2", "--steps", "2"]
    assert main([*args, "--json", str(out_json), "--markdown", str(out_md)]) == 0
    md = out_md.read_text()
    assert md.strip() == capsys.readouterr().out.strip()
    data = json.loads(out_json.read_text())
    rows = {(r["section"], r["task"], r["condition"]): r["metrics"] for r in data["rows"]}
    synthetic = {("synthetic", t, c) for t in ("v2a", "a2v", "t2av") for c in ("generated", "real clips")}
    table_vi = {("table_vi", "t2av", c) for c in ("unimodal (independent runs)", "joint (UniForm)")}
    table_v = {("table_v", t, c) for t in ("v2a", "a2v") for c in ("no", "yes", "yes - no (paired)")}
    assert set(rows) == synthetic | table_vi | table_v | {("table_vi", "t2av", "joint - unimodal (paired)")}
    for key, metrics in rows.items():
        for name in ("av_align", "event_f1"):
            e = metrics[name]
            assert e["n"] == 2 and e["low"] <= e["mean"] <= e["high"], (key, name, e)
        if key[2] in ("generated", "no", "yes"):
            assert {"shuffled_event_f1", "periodic_event_f1", "shuffled_av_align", "offset_ms"} <= set(metrics)
    for task, needs in (("t2av", {"colour_frames", "shape", "floor", "sound", "rms_diff_db"}), ("v2a", {"sound"})):
        assert needs <= set(rows[("synthetic", task, "generated")]), task
    settings = data["settings"]
    assert (settings["clips"], settings["first_seed"], settings["seed_range"]) == (2, REPORT_SEEDS.start, "report")
    assert f"seeds {REPORT_SEEDS.start}..{REPORT_SEEDS.start + 1} (report range)" in md
    assert set(data["per_clip"]) >= {"t2av/text", "t2av/unimodal", "v2a/no text", "a2v/no text", "v2a/real"}
    assert {(t["task"], t["metric"]) for t in data["targets"]} >= {("v2a", "event_f1"), ("t2av", "shape")}

    for task in ("V2A", "A2V", "T2AV"):
        assert f"### {task}\n\n| Metric | Generated | Chance | Real clips | Target | Met |" in md
    body = [line for line in md.splitlines() if line.startswith("| Event F1 (+-100 ms) |")]
    assert len(body) == 3
    for line in body:
        generated, chance, real, target, met = [c.strip() for c in line.strip("|").split("|")][1:]
        assert CELL.match(generated) and CELL.match(real) and met in ("yes", "no")
        assert re.match(r"^.+ \((shuffled|periodic)\)$", chance) and CELL.match(chance.rsplit(" (", 1)[0])


def test_eval_command_refuses_tuning_seeds_unless_asked(bundle_dir, capsys):
    args = ["eval", "--synthetic", "--bundle", str(bundle_dir), "--clips", "2", "--steps", "1"]
    assert main([*args, "--first-seed", str(TUNING_SEEDS.start)]) == 2
    assert "tuning seeds" in capsys.readouterr().err
    assert main([*args, "--first-seed", str(TUNING_SEEDS.start), "--allow-tuning-seeds"]) == 0
    assert f"seeds {TUNING_SEEDS.start}..{TUNING_SEEDS.start + 1} (tuning range)" in capsys.readouterr().out


def test_eval_command_codec_ceilings(bundle_dir, tmp_path, capsys):
    out_json = tmp_path / "codecs.json"
    assert main(["eval", "--codecs", "--bundle", str(bundle_dir), "--clips", "2", "--json", str(out_json)]) == 0
    md = capsys.readouterr().out
    data = json.loads(out_json.read_text())
    stages = {(r["stage"], r["metric"]) for r in data["rows"]}
    assert {("vocoder", "impacts_kept"), ("audio_codec", "rms_diff_db"), ("video_vae", "shape")} <= stages
    kept = data["per_clip"]["vocoder"]["impacts_kept"]
    assert len(kept) == sum(len(make_clip(s).events) for s in choose_seeds(None, 2).seeds)  # one value per impact
    assert "| vocoder(mel(x)) | Impacts kept as onsets within 10 ms" in md and "(report range)" in md
    # A random codec keeps no colour: the ceiling says so instead of crashing or passing.
    colour = next(r for r in data["rows"] if r["metric"] == "colour_frames")
    assert colour["met"] is False and 0 <= colour["estimate"]["low"] <= colour["estimate"]["high"] <= 1


def test_eval_command_contact_sheet(bundle_dir, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "sheets"
    assert main(["eval", "--contact-sheet", str(out), "--bundle", str(bundle_dir), "--steps", "1"]) == 0
    assert "contact_sheet.png" in capsys.readouterr().out
    frames, spectrograms = Image.open(out / "contact_sheet.png"), Image.open(out / "spectrograms.png")
    assert frames.width > 8 * 128 and frames.height > 3 * 128  # 8 frames of 3 rows at 2x
    assert spectrograms.height > 3 * 128
    assert (out / "contact_sheet.png").stat().st_size < 300_000


def test_eval_command_av_align_of_a_folder(tmp_path, capsys):
    videos = tmp_path / "videos"
    paths = write_dataset(videos, heldout_seeds(2))
    out_json = tmp_path / "av.json"
    assert main(["eval", "--av-align", str(videos), "--json", str(out_json)]) == 0
    from uniform_core.eval.av_align import av_align_dataset

    expected = av_align_dataset(videos)
    data = json.loads(out_json.read_text())
    assert data["score"] == pytest.approx(expected.score) and data["num_files"] == 2
    assert f"**{expected.score:.4f}**" in capsys.readouterr().out
    # With a WAV folder that lacks a clip's sound, that clip counts 0 in the average (as in Seeing & Hearing).
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    assert main(["eval", "--av-align", str(videos), "--wav-dir", str(wavs), "--json", str(out_json)]) == 0
    data = json.loads(out_json.read_text())
    assert data["score"] == 0.0 and sorted(data["missing_audio"]) == sorted(p.stem for p in paths)


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval"], "give one of: --synthetic and/or --paper-tables, --codecs"),
        (["eval", "--synthetic", "--av-align", "x"], "give one of"),
        (["eval", "--av-align", "/no/such/folder"], "is not a folder"),
        (["eval", "--synthetic", "--clips", "1"], "clips must be an integer >= 2"),
        (["eval", "--synthetic", "--bundle", "/no/such/bundle"], "is not a folder"),
    ],
)
def test_eval_command_bad_input_is_a_clear_error(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("uniform-av eval: error:") and message in err


def test_settings_and_spec_checks():
    with pytest.raises(InputError, match="max_objects"):
        benchmark.EvalSettings(max_objects=3)
    with pytest.raises(InputError, match="square"):
        benchmark.eval_spec(SimpleNamespace(height=64, width=128, duration=2))
    with pytest.raises(InputError, match="nothing to evaluate"):
        benchmark.run_benchmark(OraclePipe([]), synthetic=False, paper=False)
