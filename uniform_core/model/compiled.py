"""``torch.compile`` of the DiT, once per model, with dynamic shapes.

Dynamic from the first call, so prompts of any length, any batch and any clip size reuse one graph instead of
compiling again for each (the default would specialise on the first shapes and recompile on the second).
Hooks registered on the module stay outside the graph, since only ``forward`` is compiled.
"""

from __future__ import annotations

import torch


def compile_dit(dit: torch.nn.Module) -> torch.nn.Module:
    """Replace ``dit.forward`` by its compiled form (a second call changes nothing); returns ``dit``."""
    if not getattr(dit, "_uniform_compiled", False):
        dit.forward = torch.compile(dit.forward, dynamic=True)
        dit._uniform_compiled = True
    return dit
