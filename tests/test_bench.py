"""`uniform-av bench`: every row measured, memory meters that see allocations, and a sampling loop that never
reads a device value or copies to the device per step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from uniform_core.bench import TensorPeak, bench_audio_decode, bench_video_decode
from uniform_core.bench.compare import compare_with_plain
from uniform_core.bench.growth import bench_dit_growth
from uniform_core.bundle import random_tiny_bundle
from uniform_core.cli import main
from uniform_core.diffusion.guidance import make_model_fn
from uniform_core.diffusion.samplers import SAMPLERS, sample
from uniform_core.pipeline import encode_text, make_task_latent
from uniform_core.tasks import TASKS

MB = 2**20


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One tiny bench run through the CLI (1 repeat, 2 steps, 1 s), read back from its JSON file."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = ["bench", "--preset", "tiny", "--steps", "2", "--repeats", "1", "--seconds", "1", "--json", str(out)]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_cli_writes_every_row_with_positive_times(report):
    names = [r["name"] for r in report["results"]]
    expected = ["text encode", "video encode", "audio encode", "DiT step with CFG", "video decode", "audio decode"]
    expected += [f"sampler {s} " for s in SAMPLERS] + [f"end to end {t} " for t in TASKS]
    for prefix in expected:
        assert sum(name.startswith(prefix) for name in names) == 1, (prefix, names)
    assert len(names) == len(expected)
    for row in report["results"]:
        assert row["median_s"] > 0 and len(row["runs_s"]) == 1, row
        assert row["peak_mb"] >= 0, row
    assert report["steps"] == 2 and report["seconds"] == 1 and report["dit_dtype"] == "float32"


def test_sampler_rows_split_time_inside_and_outside_the_dit(report):
    for row in report["results"]:
        if row["name"].startswith("sampler "):
            extra = row["extra"]
            assert extra["dit_calls"] == 2 and extra["dit_batch"] == [2]  # cond + uncond in one call per step
            assert 0 < extra["model_s"] <= row["median_s"]
            assert extra["overhead_s"] == pytest.approx(row["median_s"] - extra["model_s"], abs=1e-9)
            assert 0 <= extra["overhead_pct"] < 100
            assert 0 < extra["replayed_outside_s"] < row["median_s"] and 0 < extra["replayed_outside_pct"] < 100


_RSS_PEAK = """
import torch
from uniform_core.bench.meters import PeakMemory
with PeakMemory("cpu") as mem:
    block = torch.ones(64 * 2**20 // 4)  # 64 MB, written so its pages are resident
print(mem.peak_mb)
"""


def test_peak_memory_sees_a_large_allocation():
    # RSS growth in a fresh process: in a long test session, memory freed by earlier tests (kept by the allocator)
    # can take the block without the RSS growing
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", _RSS_PEAK], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert float(run.stdout.split()[-1]) >= 48
    with TensorPeak() as tensors:
        block = torch.ones(16 * MB // 4)
        del block
        small = torch.ones(1024)
    assert tensors.peak >= 16 * MB and tensors.live == small.numel() * 4


def test_video_decode_memory_beyond_the_output_does_not_grow_with_length():
    result = bench_video_decode("tiny", durations=(1, 3), size=32)
    short, long = result["rows"]
    assert long["output_mb"] == pytest.approx(3 * short["output_mb"])
    assert long["peak_mb"] > long["output_mb"] and short["beyond_output_mb"] > 0
    assert result["ratio"] < 1.05


class DeviceTraffic(TorchDispatchMode):
    """Counts copies from the CPU onto the meta device (stand-in for host-to-GPU transfers)."""

    def __init__(self):
        super().__init__()
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            target = (kwargs or {}).get("device") if func is torch.ops.aten._to_copy.default else args[0].device
            if args[0].device.type == "cpu" and args[0].numel() > 1 and target is not None:
                self.copies += torch.device(target).type == "meta"
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampling_loop_never_reads_the_device_and_copies_nothing_per_step(sampler):
    """On the meta device any read of a value (.item(), bool(), branching on a tensor) raises, so the whole loop,
    guidance and the real tiny DiT included, runs without a host-device synchronisation; and the number of
    host-to-device copies does not depend on the number of steps."""
    bundle = random_tiny_bundle(0)
    text = encode_text(bundle.text_encoder, "a red ball")
    meta = torch.device("meta")
    dit = bundle.dit.to(meta)
    latent = make_task_latent("t2av", duration=1, height=32, width=32)
    latent = latent.with_latents(latent.video.to(meta), latent.audio.to(meta))
    clean, keep = latent.pack(), latent.keep_mask()
    copies = []
    for steps in (2, 4):
        model_fn = make_model_fn(dit, latent, text.y.to(meta), text.mask.to(meta), None, None, 5.0)
        with DeviceTraffic() as traffic:
            out = sample(model_fn, torch.empty_like(clean), clean, keep, sampler, steps)
        assert out.shape == clean.shape and out.device == meta
        copies.append(traffic.copies)
    assert copies[0] == copies[1]


def test_end_to_end_rows_carry_the_sum_of_their_stage_rows(report):
    rows = {r["name"].split(" (")[0]: r for r in report["results"]}
    sampler = next(name for name in rows if name.startswith("sampler iddpm"))  # the random bundle's sampler
    want = rows["text encode"]["median_s"] + rows[sampler]["median_s"]
    want += sum(r["median_s"] for name, r in rows.items() if name.startswith(("video decode", "audio decode")))
    assert rows["end to end t2av"]["extra"]["stages_s"] == pytest.approx(want)


def test_growth_and_compare_rows_report_their_ratios():
    growth = bench_dit_growth("tiny", seconds=(1, 2), repeats=1)
    assert set(growth["step_s"]) == {1, 2} and all(v > 0 for v in growth["step_s"].values())
    assert growth["exponent"] == pytest.approx(growth["last_exponent"])  # two points: one slope
    compare = compare_with_plain(depth=1, frames=5, side=4, repeats=1)
    assert compare["stdit3_over_plain"] > 0 and compare["uniform_over_plain"] > 0


def test_audio_decode_memory_rows_split_the_vae_and_the_vocoder():
    result = bench_audio_decode("tiny", durations=(1, 2))
    rows = result["rows"]
    assert [r["seconds"] for r in rows] == [1, 2]
    assert rows[1]["output_mb"] == pytest.approx(2 * rows[0]["output_mb"])
    assert all(r["vae_beyond_mel_mb"] > 0 and r["vocoder_beyond_output_mb"] > 0 for r in rows)
