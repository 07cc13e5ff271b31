"""The extract stage: every process encodes its share of the data set with the frozen codecs into latent shards.

Under ``accelerate launch`` each process streams its share (``shard_stream.ClipStream``, epoch 0 of the recipe's
seed), encodes ``data.extract_batch`` clips per encoder call (video VAE, audio VAE, text encoder: whatever the
recipe loaded) and writes a shard of ``data.shard_clips`` clips at a time (``latent_shards``), atomically. A shard
records the stream position after its last clip, so a rerun skips the complete shards and goes on from there; the
encoder calls never straddle two shards, so a rerun writes the very shards an uninterrupted run writes. When every
process is done the main process writes ``index.json``; a folder whose index matches is reused as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import torch
from accelerate import Accelerator

from ..atomic import write_text
from ..codecs.audio import AudioCodec
from ..codecs.text import TextEncoder
from ..codecs.video_vae import VideoVAE
from ..errors import InputError
from .config import DataConfig
from .latent_cache import encode_clips, fingerprint
from .latent_shards import INDEX_FILE, done_name, read_index, shard_info, shard_name, write_index, write_shard
from .shard_stream import ClipStream, format_skips, usable_clips
from .sources import open_source

logger = logging.getLogger(__name__)


def extraction_fingerprint(data: DataConfig, seed: int, max_text_tokens: int, *encoders: torch.nn.Module) -> str:
    """Equal fingerprints mean equal shards: the data settings, the stream's seed, the caption cut and the
    encoders' weights."""
    base = fingerprint(dataclasses.replace(data, decode_workers=0), *encoders)  # threads do not change shards
    return hashlib.sha256(f"{base}:{seed}:{max_text_tokens}".encode()).hexdigest()[:16]


@torch.no_grad()
def extract_latents(
    data: DataConfig,
    folder: str | Path,
    video_vae: VideoVAE,
    audio_codec: AudioCodec,
    text_encoder: TextEncoder,
    accelerator: Accelerator,
    seed: int,
    max_text_tokens: int,
) -> dict:
    """Write (or finish, or reuse) the latent shards of ``data`` in ``folder`` on every process; returns the index.

    The encoders must be on this process's device. A folder made with other encoders or data settings, or by
    another number of processes, is an InputError naming it: nothing in it is overwritten."""
    folder = Path(folder)
    rank, world = accelerator.process_index, accelerator.num_processes
    expected = extraction_fingerprint(data, seed, max_text_tokens, video_vae, audio_codec, text_encoder)
    if (folder / INDEX_FILE).is_file():
        index = read_index(folder)
        _check_same(folder / INDEX_FILE, index, expected, None)  # a finished folder serves any number of processes
        logger.info("latent shards in %s reused (%d clips)", folder, index["clips"])
        return index
    done_path = folder / done_name(rank)
    if done_path.is_file():
        _check_same(done_path, json.loads(done_path.read_text()), expected, world)
    else:
        done = _extract_share(data, folder, (video_vae, audio_codec, text_encoder), rank, world, seed, max_text_tokens,
                              expected)  # fmt: skip
        write_text(done_path, json.dumps(done, indent=1) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        dones = [json.loads((folder / done_name(r)).read_text()) for r in range(world)]
        for r, done in enumerate(dones):
            _check_same(folder / done_name(r), done, expected, world)
        if not any(done["shards"] for done in dones):
            raise InputError(f"data set: no usable clip (skipped: {format_skips(Counter(dones[0]['skipped']))})")
        index = write_index(folder, expected, world, dones)
        log = logger.warning if index["skipped"] else logger.info
        log("extract: %d clips in %d shards in %s; skipped %s", index["clips"], len(index["shards"]), folder,
            format_skips(Counter(index["skipped"])))  # fmt: skip
    accelerator.wait_for_everyone()
    return read_index(folder)


def _check_same(path: Path, record: dict, expected: str, world: int | None) -> None:
    if record["fingerprint"] != expected:
        raise InputError(
            f"{path} was extracted with other encoders or data settings (fingerprint {record['fingerprint']}, these "
            f"give {expected}); remove {path.parent} to extract again"
        )
    if world is not None and record["processes"] != world:
        raise InputError(
            f"{path} was extracted by {record['processes']} process(es), this run has {world}: rerun with "
            f"{record['processes']} to finish it, or remove {path.parent} to extract again"
        )


def _extract_share(data, folder, encoders, rank, world, seed, max_text_tokens, expected) -> dict:
    """Encode this process's share from where its last complete shard ends; returns its done record."""
    shards, position, skipped = _resume_point(folder, rank, world, expected)
    stream = ClipStream(open_source(data), seed, 0, rank, world, data.shuffle_buffer, position=position)
    if shards:
        logger.info("extract: process %d goes on after its %d complete shard(s)", rank, len(shards))
    pending: list = []  # (key, clip) not yet encoded
    shard: dict[str, list] = {"keys": [], "captions": [], "video": [], "audio": [], "text": [], "text_mask": []}

    def encode() -> None:
        latents = encode_clips([c for _, c in pending], *encoders, max_text_tokens)
        for name, latent in zip(("video", "audio", "text", "text_mask"), latents, strict=True):
            shard[name].append(latent)
        shard["keys"] += [k for k, _ in pending]
        shard["captions"] += [c.caption for _, c in pending]
        pending.clear()

    def flush() -> None:
        length = max(t.shape[1] for t in shard["text"])
        tensors = {
            "video": torch.cat(shard["video"]),
            "audio": torch.cat(shard["audio"]),
            "text": torch.cat([torch.nn.functional.pad(t, (0, 0, 0, length - t.shape[1])) for t in shard["text"]]),
            "text_mask": torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for m in shard["text_mask"]]),
        }
        name = shard_name(rank, len(shards))
        meta = {"fingerprint": expected, "processes": world, "text_length": length, "position": position}
        meta["skipped"] = dict(skipped)
        write_shard(folder / name, tensors, shard["keys"], shard["captions"], meta)
        shards.append({"file": name, "clips": len(shard["keys"]), "text_length": length})
        logger.info("extract: process %d wrote %s (%d clips)", rank, name, len(shard["keys"]))
        for value in shard.values():
            value.clear()

    for ref, clip, after in usable_clips(stream, skipped, data.decode_workers):
        pending.append((ref["key"], clip))
        position = after
        if len(pending) == min(data.extract_batch, data.shard_clips - len(shard["keys"])):
            encode()
            if len(shard["keys"]) == data.shard_clips:
                flush()
    position = stream.position()  # the end: the last shard also counts the clips skipped after its last clip
    if pending:
        encode()
    if shard["keys"]:
        flush()
    return {"fingerprint": expected, "processes": world, "shards": shards, "skipped": dict(skipped)}


def _resume_point(folder: Path, rank: int, world: int, expected: str) -> tuple[list[dict], dict | None, Counter]:
    """This process's complete shards (checked), the stream position after the last one and the skip counts."""
    shards, info = [], None
    files = sorted(folder.glob(f"{rank:04d}-*.safetensors"))
    for k, path in enumerate(files):
        if path.name != shard_name(rank, k):
            raise InputError(f"{folder}: latent shard {shard_name(rank, k)} is missing before {path.name}")
        info = shard_info(path)
        _check_same(path, info, expected, world)
        shards.append({"file": path.name, "clips": len(info["keys"]), "text_length": info["text_length"]})
    if info is None:
        return [], None, Counter()
    return shards, info["position"], Counter(info["skipped"])
