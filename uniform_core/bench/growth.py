"""DiT step cost against clip length: one CFG step (batch 2) of the DiT for each duration, runs interleaved, and
the exponent of a power-law fit (1.0 = linear in the clip)."""

from __future__ import annotations

import math
import statistics
import time

import torch

from ..model.uniform_dit import UniFormDiT
from .meters import sync


def bench_dit_growth(
    preset: str = "tiny", seconds: tuple[int, ...] = (1, 2, 4, 8, 16), repeats: int = 5, device: str = "cpu"
) -> dict:
    """Median time of one DiT call per clip length (64x64 for tiny, 256x256 for xl), CPU time on the CPU (what the
    other jobs of a shared machine disturb least), wall time on a GPU; ``exponent``: slope of log time against
    log length over all lengths; ``last_exponent``: between the two longest."""
    dev = torch.device(device)
    torch.manual_seed(0)
    dit = UniFormDiT.from_preset(preset).to(dev).eval()
    c, side = dit.config, 8 if preset == "tiny" else 32
    clock = time.process_time if dev.type == "cpu" else time.perf_counter
    inputs = {}
    for s in seconds:
        T = 5 * s
        inputs[s] = dict(
            video=torch.randn(2, c.in_channels, T, side, side, device=dev),
            audio=torch.randn(2, c.audio_in_channels, 5 * T, c.audio_freq, device=dev),
            timestep=torch.full((2,), 500.0, device=dev),
            y=torch.randn(2, 20, c.caption_channels, device=dev),
            task=0,
        )
    runs: dict[int, list[float]] = {s: [] for s in seconds}
    with torch.no_grad():
        for s in seconds:
            dit(**inputs[s])
        for _ in range(repeats):
            for s in seconds:
                sync(dev)
                start = clock()
                dit(**inputs[s])
                sync(dev)
                runs[s].append(clock() - start)
    median = {s: statistics.median(runs[s]) for s in seconds}
    xs, ys = [math.log(s) for s in seconds], [math.log(median[s]) for s in seconds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    last = math.log(median[seconds[-1]] / median[seconds[-2]]) / math.log(seconds[-1] / seconds[-2])
    return {"preset": preset, "clock": clock.__name__, "step_s": median, "exponent": slope, "last_exponent": last}
