"""Offload that costs one host-to-device copy per part, and none while the parts fit on the device.

Every part keeps one host copy of its weights (in pinned memory when CUDA runs it, so copies to the device are
non-blocking DMA). A part is brought to the device when it runs and stays there until another part needs the
room (:attr:`Offloader.budget_bytes`); sending it back only points its weights at the host copy again, with no
copy back, since the pipeline's parts are frozen (``requires_grad`` off, never written while inference runs). So a
generate call moves each part at most once, and a second call moves nothing when everything fits.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    """The parameters and buffers whose storage moves (``.data`` is swapped, the Parameter objects stay)."""
    return [*module.parameters(), *module.buffers()]


class Offloader:
    """Parts on the CPU that visit ``device`` while they run, the most recently used staying while they fit.

    ``budget_bytes``: the weights the device may hold at once; ``None`` keeps one part at a time (the lowest peak,
    what ``--offload`` asks for), 0 or more evicts the least recently used parts until the next one fits.
    ``moves`` counts the host-to-device transfers of each part (by its ``id``)."""

    def __init__(self, modules: list[nn.Module], device: torch.device, budget_bytes: int | None = None):
        self.device, self.budget_bytes = device, budget_bytes
        pin = device.type == "cuda" and torch.cuda.is_available()
        self._host: dict[int, list[torch.Tensor]] = {}
        for module in modules:
            module.to("cpu")
            tensors = [t.data.pin_memory() if pin else t.data for t in _tensors(module)]
            for t, host in zip(_tensors(module), tensors, strict=True):
                t.data = host
            self._host[id(module)] = tensors
        self._resident: list[nn.Module] = []  # least recently used first
        self.moves: dict[int, int] = dict.fromkeys(self._host, 0)

    @staticmethod
    def size_bytes(module: nn.Module) -> int:
        return sum(t.numel() * t.element_size() for t in _tensors(module))

    @contextlib.contextmanager
    def use(self, module: nn.Module):
        """``module`` on the device for the block; it stays there afterwards until another part needs the room."""
        if module in self._resident:
            self._resident.remove(module)
        else:
            self._make_room(self.size_bytes(module))
            for t, host in zip(_tensors(module), self._host[id(module)], strict=True):
                t.data = host.to(self.device, non_blocking=True)
            self.moves[id(module)] += 1
        self._resident.append(module)
        yield module

    def _make_room(self, needed: int) -> None:
        while self._resident and (
            self.budget_bytes is None or sum(map(self.size_bytes, self._resident)) + needed > self.budget_bytes
        ):
            self._evict(self._resident.pop(0))

    def _evict(self, module: nn.Module) -> None:
        for t, host in zip(_tensors(module), self._host[id(module)], strict=True):
            t.data = host
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
