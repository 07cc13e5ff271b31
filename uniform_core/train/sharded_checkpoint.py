"""Sharded DiT checkpoints: under FSDP each process writes its own shard of the model, EMA and optimizer.

No FSDP process holds the whole model, so none can write ``model.safetensors``. Instead process r of W writes,
into the usual step folder (``step_folders``: filled under a temporary name, a marker listing every process's
files with their SHA-256, renamed into place)::

    model_shard_{r}_of_{W}.safetensors      its local tensor of every model state-dict entry
    ema_shard_{r}_of_{W}.safetensors        its local tensor of every parameter's EMA, the EMA counters as JSON
    optimizer_shard_{r}_of_{W}.safetensors  its optimizer state (the moments of its shards; ``state_file`` tree)

A model or EMA shard's metadata names the process, the number of processes, the DiT config and every tensor's
layout (whole shape, the dim it is cut along), so :func:`assemble` rebuilds whole tensors from the files alone,
without a process group, and :func:`export_dit` writes the one-file checkpoint the loaders read. Everything is
safetensors + JSON; torch.distributed.checkpoint is not used (its ``.metadata`` file is a pickle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..checkpoint import read_metadata, save_tensors
from ..errors import CheckpointError
from .distributed import layout, like, local
from .state_file import load_state, save_state

SHARD_KIND = "uniform_dit_shard"
EMA_COUNTERS = ("decay", "min_decay", "optimization_step", "update_after_step", "use_ema_warmup", "inv_gamma", "power")


def shard_name(what: str, process: int, processes: int) -> str:
    """``what`` (model, ema, optimizer) shard file of process ``process`` of ``processes``."""
    return f"{what}_shard_{process}_of_{processes}.safetensors"


def is_tensor_shard(name: str) -> bool:
    return name.startswith(("model_shard_", "ema_shard_"))


# ---- writing: each process its own files ------------------------------------------------------------------------


def save_tensor_shard(
    path: Path, tensors: dict[str, torch.Tensor], process: int, processes: int, config: dict, extra: dict | None = None
) -> None:
    """Write this process's local part of ``tensors`` (DTensors or whole tensors) with their layouts."""
    meta = {
        "kind": SHARD_KIND, "process": str(process), "processes": str(processes), "config": json.dumps(config),
        "layout": json.dumps({name: layout(t) for name, t in tensors.items()}), "extra": json.dumps(extra or {}),
    }  # fmt: skip
    save_tensors(path, {name: local(t) for name, t in tensors.items()}, meta)


def save_shards(
    folder: Path, model: torch.nn.Module, ema, optimizer, process: int, processes: int, config: dict
) -> None:
    """Write this process's model, EMA and optimizer shards into ``folder``."""
    save_tensor_shard(folder / shard_name("model", process, processes), model.state_dict(), process, processes, config)
    params = dict(model.named_parameters())
    ema_state = ema.state_dict()
    shadows = {name: like(p, s) for (name, p), s in zip(params.items(), ema_state["shadow_params"], strict=True)}
    counters = {k: ema_state[k] for k in EMA_COUNTERS}
    save_tensor_shard(folder / shard_name("ema", process, processes), shadows, process, processes, config, counters)
    save_state(folder / shard_name("optimizer", process, processes), _local_tree(optimizer.state_dict()))


def _local_tree(value):
    if isinstance(value, torch.Tensor):
        return local(value)
    if isinstance(value, dict):
        return {k: _local_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_local_tree(v) for v in value)
    return value


# ---- reading: a process its own files, or the exporter all of them ----------------------------------------------


def read_shard_header(path: Path) -> dict:
    """The metadata of a model or EMA shard (only the header is read); CheckpointError naming the file otherwise."""
    meta = read_metadata(path)
    if meta.get("kind") != SHARD_KIND or not {"process", "processes", "layout", "config"} <= set(meta):
        raise CheckpointError(f"{path} is not a UniForm DiT shard file (kind {meta.get('kind')!r})")
    return meta


def read_tensor_shard(path: Path, process: int, processes: int) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(local tensors, layouts, metadata) of the shard ``path`` that process ``process`` of ``processes`` wrote;
    a shard written by another process or process count, or one that does not read, is a CheckpointError naming
    the file."""
    meta = read_shard_header(path)
    if (meta["process"], meta["processes"]) != (str(process), str(processes)):
        raise CheckpointError(
            f"{path} was written by process {meta['process']} of {meta['processes']}, not {process} of "
            f"{processes}: shard files are not interchangeable; resume with the process count that wrote them"
        )
    try:
        tensors = load_file(str(path))
        layouts = json.loads(meta["layout"])
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable UniForm DiT shard file: {e!r}") from e
    if set(tensors) != set(layouts):
        raise CheckpointError(f"{path}: its tensors and its layout list different names")
    return tensors, layouts, meta


def load_shards(folder: Path, model: torch.nn.Module, ema, optimizer, process: int, processes: int) -> None:
    """Read this process's shards from ``folder`` and, once every one has been read and fits, restore them into
    the (FSDP-prepared) ``model``, ``ema`` and ``optimizer``."""
    model_path, ema_path = (folder / shard_name(w, process, processes) for w in ("model", "ema"))
    model_tensors, _, _ = read_tensor_shard(model_path, process, processes)
    ema_tensors, _, ema_meta = read_tensor_shard(ema_path, process, processes)
    optimizer_path = folder / shard_name("optimizer", process, processes)
    optimizer_state = load_state(optimizer_path)
    targets = model.state_dict()
    _check_fit(model_path, model_tensors, {k: local(v) for k, v in targets.items()})
    params = dict(model.named_parameters())
    _check_fit(ema_path, ema_tensors, {k: local(v) for k, v in params.items()})
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    try:
        for i, entry in optimizer_state["state"].items():
            optimizer_state["state"][i] = {k: _placed(flat[i], v) for k, v in entry.items()}
        optimizer.load_state_dict(optimizer_state)
        ema.load_state_dict({**json.loads(ema_meta["extra"]), "shadow_params": [ema_tensors[n] for n in params]})
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {folder} does not fit this trainer ({optimizer_path.name}): {e!r}") from e
    with torch.no_grad():
        for name, target in targets.items():
            local(target).copy_(model_tensors[name])


def _check_fit(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    if set(tensors) != set(expected):
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise CheckpointError(f"{path} does not fit the model: missing {missing[:6]}, unexpected {unexpected[:6]}")
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise CheckpointError(
                f"{path}: {name} has shard shape {tuple(t.shape)}, this process holds {tuple(expected[name].shape)}"
            )


def _placed(param: torch.Tensor, value):
    """An optimizer state entry read back: a moment of a shard becomes a DTensor like its parameter again."""
    if isinstance(value, torch.Tensor) and value.shape == local(param).shape and value.ndim > 0:
        return like(param, value)
    return value


def assemble(folder: str | os.PathLike, what: str, processes: int) -> tuple[dict[str, torch.Tensor], dict]:
    """The whole tensors of every ``what`` (model or ema) shard in ``folder`` and the DiT config they carry: a
    tensor cut along dim d is the concatenation of its shards in process order (how ``torch.chunk`` cut it)."""
    folder = Path(folder)
    parts = [read_tensor_shard(folder / shard_name(what, r, processes), r, processes) for r in range(processes)]
    layouts, config = parts[0][1], json.loads(parts[0][2]["config"])
    whole = {}
    for name, spec in layouts.items():
        pieces = [tensors[name] for tensors, _, _ in parts]
        whole[name] = pieces[0] if spec["shard_dim"] is None else torch.cat(pieces, dim=spec["shard_dim"])
        if list(whole[name].shape) != spec["shape"]:
            raise CheckpointError(
                f"checkpoint {str(folder)!r}: the {what} shards of {name} make {tuple(whole[name].shape)}, "
                f"its layout says {tuple(spec['shape'])}"
            )
    return whole, config
