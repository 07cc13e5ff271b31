"""Decoding a video latent one chunk at a time, and how neighbouring chunks are joined (``join``).

Open-Sora VAE v1.2 encodes every 17-frame chunk on its own, and Open-Sora decodes every 5-frame latent chunk on its
own too: each decoder run starts from zero causal padding and has its own GroupNorm statistics (taken over time),
so every 1 s chunk boundary (and every window seam of a long clip, which falls on one) is where the picture may
jump.

- ``"separate"``: each chunk decoded on its own, what Open-Sora's ``VideoAutoencoderPipeline.decode`` computes
  (the parity tests hold :meth:`VideoVAE.decode` to it, and real Open-Sora weights expect it).
- ``"context"``: the temporal decoder sees the previous chunk's latent frames in front of the new chunk's, as one
  causal run, and only the new chunk's frames are kept: the frames after a boundary follow from those before it.
- ``"crossfade"``: as ``"context"``, and the previous chunk's last ``fade`` frames are faded from its own decode
  into the ones the new chunk's run decodes for them, so the boundary itself falls inside one decoder run.

``"separate"`` is also what the pipeline uses (``VIDEO_JOIN``), because it measured best with uniform-tiny's VAE,
whose decoder was trained on chunks alone: held-out clips through the VAE and back jump at chunk boundaries no
more than inside chunks with it (mean percentile rank 0.56), while a decoder run that starts on the previous chunk
jumps there (0.71, error up 9%); on sampled long clips too, "context" and "crossfade" raised the native chunk
boundaries' frame difference from 0.027 to 0.033 (``scripts/long_clips_report.py --parts joins seams``). A VAE
trained to decode after a context chunk would want ``"context"``.

Memory beyond the output: one chunk's (``"separate"``) or two chunks' (the others) temporal-decoder run, and the
2D decoder on one chunk's frames.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..errors import InputError

JOINS = ("separate", "context", "crossfade")
FADE_FRAMES = 4  # crossfade length in frames, at the end of the earlier chunk
VIDEO_JOIN = "separate"  # what the pipeline decodes with (pipeline.decode_video): see the README's "Long clips"


def check_join(join: str) -> str:
    if join not in JOINS:
        raise InputError(f"chunk join must be one of {', '.join(JOINS)}; got {join!r}")
    return join


def decode_chunks(vae, z: torch.Tensor, num_frames: int, join: str = "separate") -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, pixels [B, 3, n, H, W])`` pieces that together cover frames ``0 .. num_frames`` once, in order,
    unclamped, on ``vae``'s device; ``z`` is the normalised latent ``[B, 4, T', h, w]`` (checked by the caller)."""
    check_join(join)
    cfg, temporal = vae.config, vae.temporal_vae
    device, dtype = vae.scale.device, vae.scale.dtype
    per_chunk, total = cfg.latent_chunk_frames, z.shape[2]
    fade = FADE_FRAMES if join == "crossfade" else 0
    previous = held = None  # the previous chunk's latent; its last `fade` frames, not yet given out
    for index, first in enumerate(range(0, total, per_chunk)):
        chunk = z[:, :, first : first + per_chunk].to(device=device, dtype=dtype) * vae.scale + vae.shift
        start = index * cfg.micro_frame_size
        length = min(cfg.micro_frame_size, num_frames - start)
        if previous is None or join == "separate":
            tail, spatial = None, temporal.decode(chunk, num_frames=length)
        else:
            tail, spatial = temporal.decode_after(previous, chunk, length, keep=fade)
        if held is not None:
            ramp = torch.linspace(0, 1, fade + 2, device=device, dtype=dtype)[1:-1].view(1, 1, fade, 1, 1)
            yield start - fade, torch.lerp(held, _pixels(vae, tail), ramp)
        pixels = _pixels(vae, spatial)
        held = None
        if fade and first + per_chunk < total:
            held, pixels = pixels[:, :, length - fade :], pixels[:, :, : length - fade]
        yield start, pixels
        del pixels, spatial, tail  # freed before the next chunk decodes
        previous = chunk


def _pixels(vae, spatial: torch.Tensor) -> torch.Tensor:
    """2D-VAE decode of ``spatial`` ``[B, C, n, h, w]`` into a new ``[B, 3, n, H, W]``."""
    B, _, n, h, w = spatial.shape
    d = vae.config.spatial_downsample
    out = spatial.new_empty(B, vae.config.image_channels, n, h * d, w * d)
    vae.spatial_vae.decode_into(spatial, out)
    return out
