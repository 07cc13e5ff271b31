"""What the trainer needs to know about parameters that FSDP2 shards (accelerate's FSDP with ``fsdp_version: 2``).

Under FSDP2 every parameter of the prepared model is a DTensor on a one-dimensional device mesh, sharded along dim
0 in process order (``Shard(0)``, split as ``torch.chunk`` splits it); its local tensor is this process's shard.
The trainer keeps the EMA of those local shards, each process writes its own shards (``sharded_checkpoint``), and
whole tensors are gathered only for a bundle, by ``DTensor.full_tensor``. Nothing here moves data itself: the
collectives are torch.distributed's. Without FSDP a tensor is its own whole shard and these functions pass it
through.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, Replicate, Shard

from ..errors import InputError


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model``'s parameters are FSDP2 shards."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of ``t``: the local shard of a DTensor, else ``t``."""
    return t.to_local() if isinstance(t, DTensor) else t


def layout(t: torch.Tensor) -> dict:
    """How ``t`` is split over the processes: its whole shape and the dim its shards are cut along (None: every
    process holds all of it). Only the one-dimensional meshes FSDP2's full shard uses are supported."""
    if not isinstance(t, DTensor):
        return {"shape": list(t.shape), "shard_dim": None}
    (placement,) = t.placements if t.device_mesh.ndim == 1 else (None,)
    if isinstance(placement, Replicate):
        return {"shape": list(t.shape), "shard_dim": None}
    if not isinstance(placement, Shard):
        raise InputError(
            f"a parameter is placed {t.placements} on a {t.device_mesh.ndim}-d mesh; sharded checkpoints support "
            "FSDP's full shard on one mesh dimension (accelerate's FSDP config, fsdp_version 2, FULL_SHARD)"
        )
    return {"shape": list(t.shape), "shard_dim": placement.dim}


def local_parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    """``model``'s parameters as this process holds them, sharing their storage: what the EMA follows. A shard
    keeps its parameter's ``requires_grad`` (diffusers' EMAModel copies frozen parameters instead of averaging)."""
    shards = []
    for p in model.parameters():
        shards.append(p.to_local().detach().requires_grad_(p.requires_grad) if isinstance(p, DTensor) else p)
    return shards


def like(reference: torch.Tensor, shard: torch.Tensor) -> torch.Tensor:
    """``shard`` (a local tensor) placed as ``reference`` is: a DTensor on its mesh, or ``shard`` itself."""
    if not isinstance(reference, DTensor):
        return shard
    shard = shard.to(device=reference.to_local().device)
    return DTensor.from_local(
        shard, reference.device_mesh, reference.placements, run_check=False, shape=reference.shape,
        stride=reference.stride(),
    )  # fmt: skip


def full(reference: torch.Tensor, shard: torch.Tensor | None = None) -> torch.Tensor:
    """The whole tensor on the CPU: ``reference``'s, or that of ``shard`` placed as ``reference``. For a DTensor
    this is a collective: every process must call it, in the same order."""
    t = reference if shard is None else like(reference, shard)
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu()
