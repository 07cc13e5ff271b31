"""Training state (optimizer, LR schedule, EMA, RNG states) as safetensors + JSON, never as a pickle.

``torch.save`` and accelerate's ``save_state`` write pickles, and loading a pickle can run any code it names. A
state here is a tree of dicts, lists and tuples whose leaves are tensors or JSON scalars: the tensors go into a
safetensors file and the tree, with each tensor replaced by its key, into that file's metadata as JSON. Reading it
back parses two data formats and calls nothing.

Tree encoding: a tensor is ``{"tensor": key}``, a dict ``{"dict": [[key, value], ...]}`` (keys may be ints, as
in an optimizer's state), a list ``{"list": [...]}``, a tuple ``{"tuple": [...]}``; scalars are themselves.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..checkpoint import read_metadata, save_tensors
from ..errors import CheckpointError

STATE_KIND = "uniform_training_state"
SCALARS = (str, int, float, bool, type(None))


def save_state(path: str | os.PathLike, state) -> Path:
    """Write the tree ``state`` to ``path`` atomically (tensors are copied to the CPU)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "state")
    return save_tensors(path, tensors, {"kind": STATE_KIND, "tree": json.dumps(tree)})


def load_state(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """The tree written by :func:`save_state`; a file that is not one is a CheckpointError naming it."""
    path = Path(path)
    try:
        meta = check_state_file(path)
        tensors = load_file(str(path), device=str(device))
        return _decode(json.loads(meta["tree"]), tensors)
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable UniForm training-state file: {e!r}") from e


def check_state_file(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a file :func:`save_state` wrote (only its header is read); CheckpointError otherwise."""
    meta = read_metadata(path)
    if meta.get("kind") != STATE_KIND or "tree" not in meta:
        raise CheckpointError(f"{path} is not a UniForm training-state file (kind {meta.get('kind')!r})")
    return meta


def rng_states() -> dict:
    """This process's Python, NumPy, torch CPU and CUDA random states as a tree :func:`save_state` can write."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_states(state: dict) -> None:
    """Set the random states :func:`rng_states` took (CUDA's only where both runs had CUDA)."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _encode(value, tensors: dict[str, torch.Tensor], where: str):
    if isinstance(value, torch.Tensor):
        tensors[where] = value.detach().cpu()
        return {"tensor": where}
    if isinstance(value, dict):
        return {"dict": [[k, _encode(v, tensors, f"{where}.{k}")] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, tensors, f"{where}.{i}") for i, v in enumerate(value)]
        return {"tuple" if isinstance(value, tuple) else "list": items}
    if isinstance(value, SCALARS):
        return value
    raise TypeError(f"training state {where} is a {type(value).__name__}; only tensors, containers and scalars")


def _decode(node, tensors: dict[str, torch.Tensor]):
    if isinstance(node, SCALARS):
        return node
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"unexpected node {str(node)[:80]}")
    ((tag, body),) = node.items()
    if tag == "tensor":
        return tensors[body]
    if tag == "dict":
        return {_scalar_key(k): _decode(v, tensors) for k, v in body}
    if tag in ("list", "tuple"):
        items = [_decode(v, tensors) for v in body]
        return tuple(items) if tag == "tuple" else items
    raise ValueError(f"unknown node tag {tag!r}")


def _scalar_key(key):
    if not isinstance(key, (str, int)):
        raise ValueError(f"dict key {key!r} is not a str or an int")
    return key
