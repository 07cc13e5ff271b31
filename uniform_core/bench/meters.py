"""Meters for `uniform-av bench`: wall time after a warm-up, peak memory growth (CUDA allocator, CPU RSS, or the
live tensor storages of a block), and the device's name."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


@dataclass
class Measurement:
    """One row: median and all timed runs in seconds, peak memory growth in MB, row-specific numbers."""

    name: str
    median_s: float
    runs_s: list[float]
    peak_mb: float
    extra: dict = field(default_factory=dict)


class PeakMemory:
    """Peak memory growth (MB) of the block it wraps: the CUDA allocator's peak, or the sampled RSS on the CPU.

    ``total_mb`` is the absolute peak (CUDA: everything allocated, resident weights included; CPU: the RSS).
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.peak_mb = self.total_mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = rss_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc) -> bool:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, rss_bytes())
        self.peak_mb, self.total_mb = (peak - self._base) / 2**20, peak / 2**20
        return False


class TensorPeak(TorchDispatchMode):
    """Peak bytes of the tensor storages created inside the block and still referenced: the CPU stand-in for
    ``torch.cuda.max_memory_allocated``, exact where the RSS hides reuse of memory freed earlier in the process.
    Storages of ``existing`` tensors (weights, inputs) are not counted."""

    def __init__(self, existing: Iterable[torch.Tensor] = ()):
        super().__init__()
        self._skip = {t.untyped_storage().data_ptr() for t in existing}
        self._owners: dict[int, set[int]] = {}
        self._sizes: dict[int, int] = {}
        self.live = self.peak = 0

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                key = t.untyped_storage().data_ptr()
                if key not in self._skip:
                    self._hold(t, key)
        return out

    def _hold(self, t: torch.Tensor, key: int) -> None:
        owners = self._owners.setdefault(key, set())
        if not owners:
            self._sizes[key] = t.untyped_storage().nbytes()
            self.live += self._sizes[key]
            self.peak = max(self.peak, self.live)
        if id(t) not in owners:
            owners.add(id(t))
            weakref.finalize(t, self._release, key, id(t))

    def _release(self, key: int, ident: int) -> None:
        self._owners[key].discard(ident)
        if not self._owners[key]:
            self.live -= self._sizes.pop(key)
            del self._owners[key]


def measure(name: str, fn: Callable[[], object], device: torch.device, repeats: int) -> Measurement:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up, and the largest peak of those runs."""
    fn()
    runs, peak, total = [], 0.0, 0.0
    for _ in range(repeats):
        sync(device)
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            fn()
            sync(device)
            runs.append(time.perf_counter() - start)
        peak, total = max(peak, mem.peak_mb), max(total, mem.total_mb)
    extra = {"total_peak_mb": total} if device.type == "cuda" else {}
    return Measurement(name, statistics.median(runs), runs, peak, extra)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
