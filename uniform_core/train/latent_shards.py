"""Latents of a data set of any size: safetensors shards the extract stage writes, read lazily by the DiT stage.

A latent folder holds, per process ``r`` of the extraction, shards ``RRRR-KKKKKK.safetensors`` of up to
``data.shard_clips`` clips (tensors ``video`` (n, 4, T', H/8, W/8), ``audio`` (n, 8, T'', 16), ``text`` (n, L, D)
with ``text_mask`` (n, L) bool, L the shard's longest caption; metadata: the clips' source ``keys`` and captions,
the fingerprint of the encoders and data settings, and the stream position and skip counts after the shard), a
``done-RRRR.json`` per process that finished, and ``index.json``: every shard with its clip count, the totals, the
skip counts and the fingerprint. :class:`LatentShards` reads one: the trainer's view of a :class:`LatentCache`,
opening only the shards a batch needs (safetensors ``safe_open``), so no data set is ever held in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open

from ..atomic import write_text
from ..checkpoint import read_metadata, save_tensors
from ..errors import CheckpointError

SHARD_KIND = "uniform_latent_shard"
INDEX_KIND = "uniform_latent_shards"
INDEX_FILE = "index.json"
TENSORS = ("video", "audio", "text", "text_mask")


def shard_name(rank: int, k: int) -> str:
    return f"{rank:04d}-{k:06d}.safetensors"


def done_name(rank: int) -> str:
    return f"done-{rank:04d}.json"


def write_shard(path: Path, latents: dict[str, torch.Tensor], keys: list[str], captions: list[str], meta: dict):
    """Write one shard atomically; ``meta`` (JSON-able values) goes into its metadata beside keys and captions."""
    info = {"kind": SHARD_KIND, "keys": json.dumps(keys), "captions": json.dumps(captions)}
    save_tensors(path, latents, info | {k: json.dumps(v) for k, v in meta.items()})


def shard_info(path: Path) -> dict:
    """A shard's metadata (its header only), JSON values decoded; a file that is not a shard is a CheckpointError."""
    meta = read_metadata(path)
    if meta.get("kind") != SHARD_KIND:
        raise CheckpointError(f"{path} is not a UniForm latent shard (metadata kind {meta.get('kind')!r})")
    return {k: json.loads(v) if k != "kind" else v for k, v in meta.items()}


def write_index(folder: Path, fingerprint: str, processes: int, dones: list[dict]) -> dict:
    """``index.json`` from every process's done record (its shards, clip counts, text lengths and skip counts)."""
    shards = [s for done in dones for s in done["shards"]]
    skipped: dict[str, int] = {}
    for done in dones:
        for reason, n in done["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + n
    first = folder / shards[0]["file"]
    with safe_open(str(first), framework="pt") as f:
        shapes = {name: f.get_slice(name).get_shape()[1:] for name in TENSORS}
    index = {
        "kind": INDEX_KIND,
        "fingerprint": fingerprint,
        "processes": processes,
        "clips": sum(s["clips"] for s in shards),
        "text_length": max(s["text_length"] for s in shards),
        "caption_channels": shapes["text"][-1],
        "video_shape": shapes["video"],
        "audio_shape": shapes["audio"],
        "skipped": dict(sorted(skipped.items())),
        "shards": shards,
    }
    write_text(folder / INDEX_FILE, json.dumps(index, indent=1) + "\n")
    return index


def read_index(folder: str | os.PathLike) -> dict:
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} holds no {INDEX_FILE}: it is not a finished latent shard folder")
    index = json.loads(path.read_text())
    if index.get("kind") != INDEX_KIND:
        raise CheckpointError(f"{path} is not a UniForm latent shard index (kind {index.get('kind')!r})")
    return index


class LatentShards:
    """The clips of a latent folder in index order, as :class:`LatentCache` gives them to the trainer."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        self.fingerprint = self.index["fingerprint"]
        self.files = [self.folder / s["file"] for s in self.index["shards"]]
        lacking = [str(f) for f in self.files if not f.is_file()]
        if lacking:
            raise CheckpointError(f"latent shards listed in {self.folder / INDEX_FILE} are missing: {lacking[:3]}")
        self.starts = np.cumsum([0] + [s["clips"] for s in self.index["shards"]])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def caption_channels(self) -> int:
        """Width D of the caption embeddings."""
        return self.index["caption_channels"]

    def batch(self, index: torch.Tensor, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Clips ``index`` as ``{"video", "audio", "y", "mask"}`` on ``device``, captions padded to the index's
        longest (zeros, mask False), as the cache pads them."""
        rows = [int(i) for i in index.reshape(-1)]
        if any(not 0 <= r < len(self) for r in rows):
            raise IndexError(f"clip index out of range 0..{len(self) - 1}: {rows}")
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        found: dict[str, list] = {name: [None] * len(rows) for name in TENSORS}
        for shard in sorted(set(shard_of.tolist())):
            with safe_open(str(self.files[shard]), framework="pt") as f:
                slices = {name: f.get_slice(name) for name in TENSORS}
                for i in np.flatnonzero(shard_of == shard).tolist():
                    row = rows[i] - int(self.starts[shard])
                    for name in TENSORS:
                        found[name][i] = slices[name][row : row + 1]
        length = self.index["text_length"]
        text = [F.pad(t, (0, 0, 0, length - t.shape[1])) for t in found["text"]]
        mask = [F.pad(m, (0, length - m.shape[1])) for m in found["text_mask"]]
        return {
            "video": torch.cat(found["video"]).to(device),
            "audio": torch.cat(found["audio"]).to(device),
            "y": torch.cat(text).to(device),
            "mask": torch.cat(mask).bool().to(device),
        }

    def keys(self) -> list[str]:
        """The source key of every clip, in index order (reads each shard's header)."""
        return [key for f in self.files for key in shard_info(f)["keys"]]
