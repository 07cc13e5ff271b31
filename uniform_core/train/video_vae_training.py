"""Stage 3 of the video VAE: both decoders (temporal, then 2D) fitted to pixels with the encoders frozen.

The DiT is trained on the encoders' latents, so only the decoders may change after it: this stage keeps every
latent bit for bit and teaches the decoders to give back the object's colour, edges and shape from them. Latents
are encoded once per clip; a step decodes one chunk of several clips as :meth:`VideoVAE.decode` decodes it (each
chunk on its own), drawn among all of a clip's chunks, a shorter tail chunk included. The loss is pixel L1 + MSE
plus L1 on the spatial gradients (edges), with the pixels on and around the object weighted :data:`OBJECT_WEIGHT`
times: the object covers ~5 % of a frame, and a halo around it, a soft edge or a colour that drifts toward another
palette colour are what the picture metrics read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from ..codecs.video_vae import VideoVAE
from .config import CodecTrainConfig
from .log import LossLog, progress_bar

logger = logging.getLogger(__name__)

OBJECT_WEIGHT = 10.0  # loss weight of pixels on or within NEAR_OBJECT_PX of the object
NEAR_OBJECT_PX = 2  # the halo band around the object that weighs as the object does
FOREGROUND_DISTANCE = 0.1  # summed RGB difference (in [-1, 1] units) from the row's median that marks the object
EDGE_WEIGHT = 1.0  # weight of the spatial-gradient L1 beside the pixel L1 + MSE
FINAL_LR_SHARE = 0.05  # the cosine schedule ends at this share of the peak learning rate


def cosine_schedule(optimizer: torch.optim.Optimizer, steps: int, done: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The codec stages' learning rate: a cosine from the optimizer's rate down to :data:`FINAL_LR_SHARE` of it over
    ``steps`` steps (stepped once per optimizer step), ``done`` of them already taken (a resumed stage)."""
    total = max(steps, 1)

    def share(step: int) -> float:
        at = min(step + done, total)
        return FINAL_LR_SHARE + (1 - FINAL_LR_SHARE) * 0.5 * (1 + math.cos(math.pi * at / total))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, share)


def object_weights(target: torch.Tensor) -> torch.Tensor:
    """``(B, 1, T, H, W)`` loss weights for ``target`` ``(B, 3, T, H, W)`` in [-1, 1]: :data:`OBJECT_WEIGHT` on
    pixels that stand out from their row's median colour (the backdrop and floor are horizontal bands) and on the
    band of :data:`NEAR_OBJECT_PX` around them, 1 elsewhere."""
    background = target.median(dim=-1, keepdim=True).values
    on_object = ((target - background).abs().sum(1, keepdim=True) > FOREGROUND_DISTANCE).float()
    k = 2 * NEAR_OBJECT_PX + 1
    near = F.max_pool3d(on_object, (1, k, k), stride=1, padding=(0, NEAR_OBJECT_PX, NEAR_OBJECT_PX))
    return 1 + (OBJECT_WEIGHT - 1) * near


def decoder_loss(recon: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Object-weighted pixel L1 + MSE and spatial-gradient L1 of ``recon`` against ``target`` ``(B, 3, T, H, W)``."""
    w = object_weights(target)
    err = (recon - target).abs()
    pixels = ((err + err**2) * w).mean() / w.mean()
    edges = recon.new_zeros(())
    for dim in (-1, -2):
        grad_err = (torch.diff(recon, dim=dim) - torch.diff(target, dim=dim)).abs()
        wd = w.narrow(dim, 1, w.shape[dim] - 1)
        edges = edges + (grad_err * wd).mean() / wd.mean()
    return {"loss": pixels + EDGE_WEIGHT * edges, "pixels": pixels, "edges": edges}


class VideoDecoderObjective(nn.Module):
    """Frozen-encoder latents ``(B, 4, T', h, w)`` -> decoded clip -> :func:`decoder_loss` against its pixels
    ``(B, 3, T, H, W)``. Only the decoders (``post_quant_conv`` + ``decoder`` of both stages) take gradients."""

    def __init__(self, vae: VideoVAE):
        super().__init__()
        self.vae = vae.requires_grad_(False)
        for part in (vae.temporal_vae.post_quant_conv, vae.temporal_vae.decoder):
            part.requires_grad_(True)
        for part in (vae.spatial_vae.module.post_quant_conv, vae.spatial_vae.module.decoder):
            part.requires_grad_(True)

    def forward(self, z: torch.Tensor, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return decoder_loss(self.vae.decode(z, num_frames=pixels.shape[2]), pixels)


def chunk_spans(vae: VideoVAE, num_frames: int) -> list[tuple[slice, slice]]:
    """``(latent frames, pixel frames)`` of every chunk that :meth:`VideoVAE.decode` decodes on its own."""
    cfg = vae.config
    n_lat = cfg.latent_chunk_frames
    return [
        (slice(i * n_lat, i * n_lat + n_lat), slice(start, min(start + cfg.micro_frame_size, num_frames)))
        for i, start in enumerate(range(0, num_frames, cfg.micro_frame_size))
    ]


@torch.no_grad()
def encode_clips(vae: VideoVAE, pixels: Callable[[torch.Tensor], torch.Tensor], count: int) -> torch.Tensor:
    """Posterior-mean latents of clips ``0..count-1`` (``pixels(index)`` gives ``(B, 3, T, H, W)``), 8 at a time."""
    return torch.cat([vae.encode(pixels(i), deterministic=True) for i in torch.arange(count).split(8)])


def finetune_video_decoders(
    vae: VideoVAE,
    pool,
    cfg: CodecTrainConfig,
    accelerator: Accelerator,
    log: LossLog,
    seed: int,
    on_step: Callable[[int], None] | None = None,
) -> VideoVAE:
    """Stage 3: ``cfg.stage3_steps`` AdamW steps of :class:`VideoDecoderObjective`, each on one chunk (drawn per
    step) of ``cfg.stage3_batch_size`` clips of ``pool`` (a :class:`~.codec_training.ClipPool`); the learning rate
    follows a cosine from ``cfg.lr`` to :data:`FINAL_LR_SHARE` of it. Seeded on its own, so it gives the same
    decoders whether it runs right after stage 2 or later on a saved VAE. ``on_step(step)`` is called after every
    step (e.g. to save a checkpoint). Returns ``vae`` frozen, on the CPU."""
    torch.manual_seed(seed + 1000)
    vae = vae.cpu().eval()
    latents = encode_clips(vae, pool.pixels, len(pool))
    objective = VideoDecoderObjective(vae)
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.0)
    schedule = cosine_schedule(optimizer, cfg.stage3_steps)
    wrapped, optimizer = accelerator.prepare(objective, optimizer)
    generator = torch.Generator().manual_seed(accelerator.process_index)
    spans = chunk_spans(vae, pool.frames.shape[1])
    bar = progress_bar(accelerator, cfg.stage3_steps, "video_vae.decoders")
    for step in range(1, cfg.stage3_steps + 1):
        index = torch.randint(len(pool), (cfg.stage3_batch_size,), generator=generator)
        z_span, pixel_span = spans[int(torch.randint(len(spans), (1,), generator=generator))]
        z, pixels = latents[index][:, :, z_span], pool.pixels(index)[:, :, pixel_span]
        terms = wrapped(z.to(accelerator.device), pixels.to(accelerator.device))
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(terms["loss"])
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        schedule.step()
        values = {k: accelerator.reduce(v.detach(), "mean").item() for k, v in terms.items()}
        bar.update(1)
        bar.set_postfix(loss=f"{values['loss']:.4f}")
        if step % cfg.log_every == 0 or step == cfg.stage3_steps:
            log.write(stage="video_vae.decoders", step=step, lr=schedule.get_last_lr()[0], **values)
        if on_step is not None:
            on_step(step)
    bar.close()
    accelerator.wait_for_everyone()
    return vae.cpu().requires_grad_(False).eval()
