"""Start-up: ``import uniform_core.pipeline`` against ``import torch``, and the bundle load, each in fresh
processes. The two imports alternate, so the machine's load shifts both alike and their ratio holds."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_IMPORT = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
_LOAD = """
import json, time
import uniform_core.pipeline
from uniform_core.bundle import load_bundle
def timed():
    w, c = time.perf_counter(), time.process_time()
    load_bundle()
    return time.perf_counter() - w, time.process_time() - c
first = timed()
warm = [timed() for _ in range({repeats})]
print(json.dumps({{"first": first, "warm": warm}}))
"""


def _child(code: str) -> str:
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip().splitlines()[-1]


def bench_startup(repeats: int = 5) -> dict:
    """``repeats`` alternating fresh processes per import (seconds inside the process, interpreter start excluded),
    then one process that loads the embedded bundle once (the parts' deferred diffusers/transformers imports
    included) and ``repeats`` times more (wall and CPU seconds)."""
    times: dict[str, list[float]] = {"torch": [], "uniform_core.pipeline": []}
    for _ in range(repeats):
        for module in times:
            times[module].append(float(_child(_IMPORT.format(module=module))))
    load = json.loads(_child(_LOAD.format(repeats=repeats)))
    torch_s, pipeline_s = (statistics.median(times[m]) for m in times)
    return {
        "import_torch_s": torch_s,
        "import_pipeline_s": pipeline_s,
        "import_ratio": pipeline_s / torch_s,
        "import_runs_s": times,
        "first_load_s": load["first"][0],
        "first_load_cpu_s": load["first"][1],
        "load_s": statistics.median(w for w, _ in load["warm"]),
        "load_cpu_s": statistics.median(c for _, c in load["warm"]),
    }
