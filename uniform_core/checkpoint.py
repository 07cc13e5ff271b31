"""Self-describing weight files and the one function that matches a checkpoint to a model.

A UniForm component file is a single safetensors file whose metadata holds ``uniform_component`` (what it is)
and ``config`` (JSON of the config it was built from), so a file alone is enough to rebuild its module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .atomic import atomic_path
from .errors import CheckpointError

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def save_component(module: torch.nn.Module, path: str | os.PathLike, kind: str, config: dict) -> None:
    """Write ``module``'s state dict with ``kind`` and ``config`` in the file's metadata (atomically)."""
    metadata = {"uniform_component": kind, "config": json.dumps(config, sort_keys=True)}
    save_tensors(path, module.state_dict(), metadata)


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write ``tensors`` (copied to the CPU) and string ``metadata`` as one safetensors file, whole or not at all."""
    state = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # tied weights (T5's shared / encoder.embed_tokens) are written once per key: safetensors refuses shared memory
    seen: set[int] = set()
    for k, v in state.items():
        if v.numel() and v.untyped_storage().data_ptr() in seen:
            state[k] = v.clone()
        seen.add(v.untyped_storage().data_ptr())
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty for files written without any)."""
    path = _existing_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e


def read_component_config(path: str | os.PathLike, kind: str) -> dict:
    """The config stored in a UniForm component file, after checking the file holds a ``kind``."""
    meta = read_metadata(path)
    found = meta.get("uniform_component")
    if found != kind:
        raise CheckpointError(
            f"{path} holds {found!r} weights, expected a UniForm {kind!r} file "
            "(one written by save_component, with 'uniform_component' and 'config' in its metadata)"
        )
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: its metadata 'config' must be the JSON of the {kind} config ({e!r})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: its metadata 'config' must be a JSON object; got {type(config).__name__}")
    return config


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; pickle-based files are read with ``weights_only=True`` only."""
    path = _existing_file(path)
    if path.suffix in PICKLE_SUFFIXES:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for unsafe or corrupt pickles
            raise CheckpointError(f"{path} could not be loaded safely (weights_only=True): {e}") from e
        for key in ("state_dict", "module", "model", "ema"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        return state
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e


def load_matching(
    module: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str, assign: bool = False
) -> None:
    """Load ``state_dict`` into ``module`` exactly, or raise naming missing, unexpected and mis-shaped keys.

    ``assign=True`` makes the file's tensors the module's (for a module built on the meta device: no random init
    and no second copy of the weights in memory).
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or misshaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                shown = ", ".join(keys[:12]) + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")
                parts.append(f"{label} keys: {shown}")
        raise CheckpointError(f"{what} does not fit the model's config; " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True, assign=assign)


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist or is not a file")
    return path
