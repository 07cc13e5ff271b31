"""Turn a trainer step folder, sharded (FSDP) or not, into the one-file DiT checkpoint the loaders read.

``uniform-av train --export STEP_FOLDER --out dit.safetensors`` runs :func:`export_dit` in one process, with no
process group: a sharded folder's whole tensors are rebuilt from its shard files (``sharded_checkpoint.assemble``),
then written in ``UniFormDiT.save``'s format (config in the metadata), as ``load_bundle`` and ``UniFormDiT.load``
read it. The EMA weights are the default, as a training run's bundle holds them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoint import load_matching
from ..empty_init import empty_init
from ..errors import CheckpointError, InputError
from ..model.uniform_dit import UniFormConfig, UniFormDiT
from . import step_folders
from .sharded_checkpoint import assemble
from .state_file import load_state
from .trainer import MODEL_FILE, STATE_FILES

WEIGHTS = ("ema", "model")


def export_dit(folder: str | os.PathLike, out: str | os.PathLike, weights: str = "ema") -> Path:
    """Write the DiT of step folder ``folder`` to ``out`` (atomically): its EMA weights, or with
    ``weights="model"`` the trained weights themselves. The folder is checked against its marker first."""
    if weights not in WEIGHTS:
        raise InputError(f"weights must be one of {WEIGHTS}; got {weights!r}")
    folder = Path(folder)
    info = step_folders.verify(folder)
    if info.get("sharded"):
        state, config = assemble(folder, "model", info["processes"])
        if weights == "ema":
            state.update(assemble(folder, "ema", info["processes"])[0])
        with empty_init():
            dit = UniFormDiT(UniFormConfig.from_dict(config))
        dit.to_empty(device="cpu")
        load_matching(dit, state, f"checkpoint {str(folder)!r}")
    else:
        dit = UniFormDiT.load(folder / MODEL_FILE)
        if weights == "ema":
            shadow = load_state(folder / STATE_FILES["ema"])["shadow_params"]
            params = list(dit.parameters())
            if len(shadow) != len(params) or any(s.shape != p.shape for s, p in zip(shadow, params, strict=False)):
                raise CheckpointError(f"{folder / STATE_FILES['ema']} does not hold one EMA tensor per DiT parameter")
            with torch.no_grad():
                for p, s in zip(params, shadow, strict=True):
                    p.copy_(s)
    dit.save(out)
    return Path(out)
