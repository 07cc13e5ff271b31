"""Latents and text embeddings of every training clip, encoded once and kept in one safetensors file.

The codecs and the text encoder are frozen while the DiT trains, so encoding a clip again at every step would
only repeat the same work: the cache holds each clip's video latent (posterior mean), audio latent (posterior
mean) and caption embedding, and the trainer reads nothing else. The file's metadata holds a fingerprint of the
data settings and of the encoders' weights; a cache that does not match them is rebuilt instead of reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoint import read_metadata, save_tensors
from ..codecs.audio import AudioCodec
from ..codecs.text import TextEncoder
from ..codecs.video_vae import VideoVAE
from ..errors import CheckpointError
from .config import DataConfig
from .data import TrainingClip, clip_source

logger = logging.getLogger(__name__)

CACHE_KIND = "uniform_latent_cache"


@dataclass
class LatentCache:
    """Per clip i: ``video[i]`` (4, 5 s, H/8, W/8), ``audio[i]`` (8, 25 s, 16), ``text[i]`` (L, D) with
    ``text_mask[i]`` (L,) bool (True = a real token), all float32 on the CPU; ``seeds[i]`` made the clip (for a
    folder: ``first_seed`` + its index)."""

    video: torch.Tensor
    audio: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor
    seeds: torch.Tensor
    captions: list[str]
    fingerprint: str = ""

    def __len__(self) -> int:
        return self.video.shape[0]

    @property
    def caption_channels(self) -> int:
        """Width D of the caption embeddings (what the DiT's caption projection must take)."""
        return self.text.shape[-1]

    def batch(self, index: torch.Tensor, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Items ``index`` as ``{"video", "audio", "y", "mask"}`` on ``device``."""
        return {
            "video": self.video[index].to(device),
            "audio": self.audio[index].to(device),
            "y": self.text[index].to(device),
            "mask": self.text_mask[index].to(device),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the cache to ``path`` atomically."""
        tensors = {
            "video": self.video.contiguous(),
            "audio": self.audio.contiguous(),
            "text": self.text.contiguous(),
            "text_mask": self.text_mask.contiguous(),
            "seeds": self.seeds.contiguous(),
        }
        meta = {"kind": CACHE_KIND, "fingerprint": self.fingerprint, "captions": json.dumps(self.captions)}
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentCache:
        meta = read_metadata(path)
        if meta.get("kind") != CACHE_KIND:
            raise CheckpointError(f"{path} is not a UniForm latent cache (metadata kind {meta.get('kind')!r})")
        t = load_file(str(path))
        return cls(
            t["video"], t["audio"], t["text"], t["text_mask"].bool(), t["seeds"], json.loads(meta["captions"]),
            meta["fingerprint"],
        )  # fmt: skip


def fingerprint(data: DataConfig, *modules: torch.nn.Module) -> str:
    """A short hash of the data settings and the modules' weights: equal fingerprints mean equal cache contents."""
    h = hashlib.sha256(json.dumps(data.__dict__, sort_keys=True).encode())
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def build_latent_cache(
    data: DataConfig,
    video_vae: VideoVAE,
    audio_codec: AudioCodec,
    text_encoder: TextEncoder,
    max_text_tokens: int,
    chunk: int = 16,
    progress: Callable[[int], None] | None = None,
) -> LatentCache:
    """Encode every training clip (see ``data.clip_source``) once, ``chunk`` clips per encoder call.

    Latents are posterior means, as the pipeline encodes conditions; captions are cut to ``max_text_tokens`` (the
    DiT's ``model_max_length``). ``progress(n)`` is called with the number of clips done after each chunk.
    """
    total, get = clip_source(data)
    videos, audios, texts, masks, captions = [], [], [], [], []
    for start in range(0, total, chunk):
        clips = [get(i) for i in range(start, min(start + chunk, total))]
        latents = encode_clips(clips, video_vae, audio_codec, text_encoder, max_text_tokens)
        for out, latent in zip((videos, audios, texts, masks), latents, strict=True):
            out.append(latent)
        captions += [c.caption for c in clips]
        if progress is not None:
            progress(len(captions))
    length = max(t.shape[1] for t in texts)
    text = torch.cat([torch.nn.functional.pad(t, (0, 0, 0, length - t.shape[1])) for t in texts])
    text_mask = torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for m in masks])
    return LatentCache(
        torch.cat(videos), torch.cat(audios), text, text_mask, torch.arange(total) + data.first_seed, captions,
        fingerprint(data, video_vae, audio_codec, text_encoder),
    )  # fmt: skip


@torch.no_grad()
def encode_clips(
    clips: list[TrainingClip],
    video_vae: VideoVAE,
    audio_codec: AudioCodec,
    text_encoder: TextEncoder,
    max_text_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One encoder call each for ``clips``: video latents (B, 4, T', H/8, W/8) and audio latents (B, 8, T'', 16)
    (posterior means), caption embeddings (B, L, D) cut to ``max_text_tokens`` and their mask (B, L) bool, all
    float32 (the mask bool) on the CPU."""
    device = next(video_vae.parameters()).device
    pixels = torch.stack([c.frames for c in clips]).permute(0, 4, 1, 2, 3) * 2 - 1  # (B, 3, T, H, W)
    video = video_vae.encode(pixels.to(device), deterministic=True).float().cpu()
    audio = audio_codec.encode(torch.stack([c.waveform for c in clips]).to(device), deterministic=True).float().cpu()
    emb, mask = text_encoder.encode([c.caption for c in clips])
    return video, audio, emb[:, :max_text_tokens].float().cpu(), mask[:, :max_text_tokens].bool().cpu()


def load_or_build(path: str | os.PathLike, data: DataConfig, video_vae, audio_codec, text_encoder, **kwargs):
    """The cache at ``path`` if its fingerprint matches these encoders and data, else a new one written there."""
    path = Path(path)
    expected = fingerprint(data, video_vae, audio_codec, text_encoder)
    if path.is_file():
        cache = LatentCache.load(path)
        if cache.fingerprint == expected:
            logger.info("latent cache %s reused (%d clips)", path, len(cache))
            return cache
        logger.info(
            "latent cache %s is stale (fingerprint %s, expected %s); rebuilding", path, cache.fingerprint, expected
        )
    cache = build_latent_cache(data, video_vae, audio_codec, text_encoder, **kwargs)
    cache.save(path)
    return cache


__all__ = ["LatentCache", "build_latent_cache", "encode_clips", "fingerprint", "load_or_build"]
