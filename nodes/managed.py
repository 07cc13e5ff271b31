"""UniForm's model parts as models of ComfyUI's own memory management.

In ComfyUI each part (DiT, video VAE, audio VAE + vocoder, text encoder) is wrapped in ComfyUI's ModelPatcher on
the devices ComfyUI picks for that kind of model, and loaded through ``load_models_gpu`` right before it runs: ComfyUI
frees memory first (unloading its own or our other models, least recently used first), counts ours by their size,
and unloads ours when something else needs the room or on ``/free``. The weights load whole (our layers are plain
torch modules, which ComfyUI's partial --lowvram loading cannot stream). Outside ComfyUI (tests, scripts) a part is
a plain module on the CPU and nothing moves.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from uniform_core.errors import InputError
from uniform_core.precision import part_name
from uniform_core.previews import PreviewMap

from . import host

OFFLOAD_MODES = ["auto", "offload", "keep on device"]


@dataclass
class Component:
    """A loaded model part, plus ComfyUI's handle on it (None outside ComfyUI)."""

    module: torch.nn.Module
    name: str
    offload: str  # one of OFFLOAD_MODES
    patcher: object | None = None  # comfy.model_patcher.ModelPatcher
    preview: PreviewMap | None = None  # a DiT's live-preview maps (fitted to the VAEs of its bundle)


def prepare(module: torch.nn.Module, name: str, precision: str = "auto", offload: str = "auto") -> Component:
    """Cast ``module`` to the chosen precision and hand it to ComfyUI's model management.

    ``offload``: ``auto`` leaves it to ComfyUI (loaded while there is room, unloaded when memory is needed; kept on
    the GPU with ``--highvram``), ``offload`` unloads it right after each use, ``keep on device`` makes the GPU its
    offload device too, so once loaded it never leaves.
    """
    if offload not in OFFLOAD_MODES:
        raise InputError(f"offload must be one of {', '.join(OFFLOAD_MODES)}; got {offload!r}")
    part = part_name(module)
    module = module.to(dtype=host.choose_dtype(module, precision, host.load_device(part))).eval().requires_grad_(False)
    patcher = host.model_patcher(module, part, keep_on_device=offload == "keep on device")
    return Component(module, name, offload, patcher)


@contextlib.contextmanager
def running(component: Component, memory_required: int = 0):
    """Yield the component's module loaded on its device by ComfyUI, which first frees ``memory_required`` bytes
    (the activations the run needs) plus the weights' size."""
    if component.patcher is None:
        yield component.module
        return
    host.load_models([component.patcher], memory_required)
    try:
        yield component.module
    finally:
        if component.offload == "offload":
            host.unload_model(component.patcher)
