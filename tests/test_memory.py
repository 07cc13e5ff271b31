"""The up-front memory estimate against the real peak: calibrated, so it neither lets a run that needs several times
more start nor refuses one that fits (issue 14, point 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_MEASURE = """
import json, sys, torch
torch.set_num_threads(1)
from uniform_core import memory
from uniform_core.bundle import random_tiny_bundle
from uniform_core.stages import decode_video, make_task_latent, sample
size, seconds, stage = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
bundle = random_tiny_bundle(0)
latent = make_task_latent("t2av", duration=seconds, height=size, width=size)
def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
def peak():
    return status("VmHWM")
def reset_peak():  # the high-water mark so far may be the bundle's own set-up: measure from the RSS of now
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")
if stage == "sample":
    estimate = memory.dit_bytes(bundle.dit, latent, 1, guided=True)
    base = reset_peak()
    sample(bundle.dit, latent, None, 0, 1, 3.0, "ddim", 1)
else:
    out = sample(bundle.dit, latent, None, 0, 1, 1.0, "ddim", 1)
    estimate = sum(memory.decode_bytes(bundle.video_vae, out.latent, 1))
    base = reset_peak()
    decode_video(bundle.video_vae, out.latent)
print(json.dumps({"estimate": estimate, "measured": peak() - base}))
"""


@pytest.mark.parametrize("stage, size, seconds", [("sample", 512, 2), ("decode", 384, 1)])
def test_the_estimate_is_close_below_the_measured_peak(stage, size, seconds):
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(size), str(seconds), stage],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"},
    )
    got = json.loads(run.stdout.strip().splitlines()[-1])
    ratio = got["estimate"] / got["measured"]
    assert 0.6 <= ratio <= 1.1, got
