"""Training the tiny codecs on the synthetic clips: video VAE and audio VAE (the vocoder: ``vocoder_training``).

Each codec is trained alone, before the DiT, on the same training seeds:

- video VAE: object-weighted pixel L1 + MSE and edge reconstruction of frames (2D VAE,
  :func:`.video_vae_training.decoder_loss`) and MSE of 2D latents (temporal VAE), plus a small KL term on each
  posterior, then both decoders on pixels with the encoders frozen (:mod:`.video_vae_training`);
- audio VAE: L1 reconstruction of the AudioLDM log-mel, plus a small KL term;
- vocoder: HiFi-GAN, mel -> waveform (``uniform_core.train.vocoder_training``).

Every stage's learning rate follows one cosine (:func:`.video_vae_training.cosine_schedule`). After training, each
VAE's latent scaling factor is set to 1 / std of its latents on the training clips, so the diffusion model sees
unit-variance latents (as Stable Diffusion's and AudioLDM's factors do).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from einops import rearrange
from torch import nn

from ..codecs.audio import AudioVAE
from ..codecs.mel import MelFrontEnd, normalize_waveform
from ..codecs.video_vae import VideoVAE
from .config import CodecTrainConfig, DataConfig
from .log import LossLog, progress_bar
from .shard_stream import first_clips
from .sources import open_source
from .video_vae_training import cosine_schedule, decoder_loss, finetune_video_decoders

logger = logging.getLogger(__name__)

AUDIO_CROP_FRAMES = 100  # 1 s of mel per audio-VAE example (a multiple of the VAE's 4x downsampling)


class ClipPool:
    """The first ``count`` usable training clips, read once and held in memory: frames uint8 ``(N, T, H, W, 3)``,
    waveforms levelled as AudioLDM does ``(N, samples)`` and as the clips are (``clip_waveforms``)."""

    def __init__(self, data: DataConfig, count: int):
        clips = first_clips(open_source(data), count)
        self.frames = torch.stack([(c.frames * 255).round().to(torch.uint8) for c in clips])
        self.clip_waveforms = torch.stack([c.waveform for c in clips])
        self.waveforms = normalize_waveform(self.clip_waveforms)

    def __len__(self) -> int:
        return self.frames.shape[0]

    def pixels(self, index: torch.Tensor) -> torch.Tensor:
        """Frames of clips ``index`` as the video VAE's input ``(B, 3, T, H, W)`` in [-1, 1]."""
        return self.frames[index].permute(0, 4, 1, 2, 3).float() / 127.5 - 1


def fit(
    name: str,
    objective: nn.Module,
    draw: Callable[[torch.Generator], torch.Tensor],
    cfg: CodecTrainConfig,
    accelerator: Accelerator,
    log: LossLog,
) -> None:
    """AdamW with gradient clipping for ``cfg.steps`` steps, the learning rate on :func:`cosine_schedule`.
    ``draw(generator)`` gives a batch; ``objective(batch)`` returns ``{"loss": ..., other terms}``; it is called
    through accelerate's wrapper so gradients sync."""
    optimizer = torch.optim.AdamW(objective.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.0)
    schedule = cosine_schedule(optimizer, cfg.steps)
    wrapped, optimizer = accelerator.prepare(objective, optimizer)
    generator = torch.Generator().manual_seed(accelerator.process_index)
    wrapped.train()
    bar = progress_bar(accelerator, cfg.steps, name)
    for step in range(1, cfg.steps + 1):
        terms = wrapped(draw(generator).to(accelerator.device))
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(terms["loss"])
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(wrapped.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.step()
        values = {k: accelerator.reduce(v.detach(), "mean").item() for k, v in terms.items()}
        bar.update(1)
        bar.set_postfix(loss=f"{values['loss']:.4f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.write(stage=name, step=step, lr=schedule.get_last_lr()[0], **values)
    bar.close()
    accelerator.wait_for_everyone()
    objective.eval()


# ---- video VAE ----------------------------------------------------------------------------------------------------


class SpatialVAEObjective(nn.Module):
    """Stage 1 of the video VAE: frames reconstructed by the 2D VAE under :func:`decoder_loss` (the object and a
    2 px band around it weigh 10x, plus L1 on the spatial gradients) plus ``kl_weight`` x its per-element KL. Input:
    frames ``(B, 3, H, W)`` in [-1, 1]. The object covers ~5 % of a frame: without the weights and the edge term a
    small VAE spends its run on the plain background and its latent keeps the colour but not the shape."""

    def __init__(self, vae: VideoVAE, kl_weight: float):
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        model = self.vae.spatial_vae.module
        posterior = model.encode(frames).latent_dist
        recon = model.decode(posterior.sample()).sample
        rec = decoder_loss(recon.unsqueeze(2), frames.unsqueeze(2))["loss"]
        kl = posterior.kl().mean() / frames[0].numel()
        return {"loss": rec + self.kl_weight * kl, "rec": rec, "kl": kl}


class TemporalVAEObjective(nn.Module):
    """Stage 2 of the video VAE (as Open-Sora v1.2 trains it): the temporal VAE reconstructs the frozen 2D VAE's
    latents of 17-frame chunks ``(B, 4, 17, h, w)``; MSE relative to the latents' variance ``latent_var`` plus
    ``kl_weight`` x the per-element KL."""

    def __init__(self, vae: VideoVAE, kl_weight: float, latent_var: float):
        super().__init__()
        self.vae, self.kl_weight, self.latent_var = vae, kl_weight, latent_var

    def forward(self, z2d: torch.Tensor) -> dict[str, torch.Tensor]:
        temporal = self.vae.temporal_vae
        mean, logvar = temporal.encode(z2d)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        rec = F.mse_loss(temporal.decode(z, num_frames=z2d.shape[2]), z2d) / self.latent_var
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).mean()
        return {"loss": rec + self.kl_weight * kl, "rec": rec, "kl": kl}


def train_video_vae(
    pool: ClipPool, cfg: CodecTrainConfig, accelerator: Accelerator, log: LossLog, seed: int
) -> VideoVAE:
    """A tiny video VAE: the 2D VAE on single frames (``cfg.steps``, ``cfg.batch_size`` frames per step), then the
    temporal VAE and its latent normalisation (:func:`train_temporal_vae`), then both decoders
    (:func:`~.video_vae_training.finetune_video_decoders`)."""
    torch.manual_seed(seed)
    vae = VideoVAE.from_preset(cfg.preset).requires_grad_(True)
    frames = pool.frames.flatten(0, 1)  # (N * T, H, W, 3) uint8

    def draw_frames(generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(frames.shape[0], (cfg.batch_size,), generator=generator)
        return frames[index].permute(0, 3, 1, 2).float() / 127.5 - 1

    fit("video_vae.spatial", SpatialVAEObjective(vae, cfg.kl_weight), draw_frames, cfg, accelerator, log)
    train_temporal_vae(vae.cpu(), pool, cfg, accelerator, log)
    return finetune_video_decoders(vae, pool, cfg, accelerator, log, seed)


def train_temporal_vae(vae: VideoVAE, pool: ClipPool, cfg: CodecTrainConfig, accelerator: Accelerator, log: LossLog):
    """Stage 2: ``vae``'s temporal VAE on its frozen 2D VAE's latents of the pool's 17-frame chunks
    (``cfg.stage2_steps``, ``cfg.batch_size`` chunks per step); then its per-channel latent shift and scale are set
    from the latents of the pool's clips. Changes ``vae`` in place."""
    spatial, chunk = vae.spatial_vae, vae.config.micro_frame_size
    channels = vae.config.in_out_channels
    vae.set_normalization((0.0,) * channels, (1.0,) * channels)  # measured below on the raw latents
    frames = pool.frames.flatten(0, 1)
    with torch.no_grad():  # 2D posterior means of every pool frame, as the temporal VAE will see them
        pixels = frames.permute(0, 3, 1, 2).float() / 127.5 - 1
        z2d = torch.cat([spatial.module.encode(x).latent_dist.mean for x in pixels.split(256)]) * spatial.latent_scale
    z2d = rearrange(z2d, "(N T) C h w -> N C T h w", N=len(pool))
    chunks = torch.cat(z2d.split(chunk, dim=2)[: z2d.shape[2] // chunk])  # (N * T / 17, C, 17, h, w)

    def draw_chunks(generator: torch.Generator) -> torch.Tensor:
        return chunks[torch.randint(chunks.shape[0], (cfg.batch_size,), generator=generator)]

    stage2 = dataclasses.replace(cfg, steps=cfg.stage2_steps)
    kl_weight = cfg.kl_weight if cfg.stage2_kl_weight is None else cfg.stage2_kl_weight
    objective = TemporalVAEObjective(vae, kl_weight, chunks.var().item())
    vae.temporal_vae.requires_grad_(True)
    fit("video_vae.temporal", objective, draw_chunks, stage2, accelerator, log)
    vae.cpu().requires_grad_(False)
    with torch.no_grad():
        z = torch.cat(
            [vae.encode(pool.pixels(i), deterministic=True) for i in torch.arange(min(len(pool), 128)).split(16)]
        )
    shift, scale = z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4))
    vae.set_normalization(tuple(shift.tolist()), tuple(scale.tolist()))
    logger.info("video VAE latent shift %s scale %s", shift.tolist(), scale.tolist())


# ---- audio VAE ----------------------------------------------------------------------------------------------------


class AudioVAEObjective(nn.Module):
    """Log-mel L1 reconstruction plus ``kl_weight`` x the per-element KL of the posterior."""

    def __init__(self, vae: AudioVAE, kl_weight: float):
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        posterior = self.vae.encode(mel)
        recon = self.vae.decode(posterior.sample())
        rec = F.l1_loss(recon, mel)
        kl = posterior.kl().mean() / mel[0].numel()
        return {"loss": rec + self.kl_weight * kl, "rec": rec, "kl": kl}


def train_audio_vae(
    pool: ClipPool, cfg: CodecTrainConfig, accelerator: Accelerator, log: LossLog, seed: int
) -> AudioVAE:
    """A tiny mel VAE trained to reconstruct 1 s log-mel crops of the pool's sounds; its scaling factor is then
    set from its latents' spread."""
    torch.manual_seed(seed)
    vae = AudioVAE.from_preset(cfg.preset)
    mel_fn = MelFrontEnd()
    with torch.no_grad():
        mels = torch.cat([mel_fn(w) for w in pool.waveforms.split(64)])  # (N, T, 64)

    def draw(generator: torch.Generator) -> torch.Tensor:
        return crops(mels, cfg.batch_size, AUDIO_CROP_FRAMES, generator)

    fit("audio_vae", AudioVAEObjective(vae, cfg.kl_weight), draw, cfg, accelerator, log)
    vae.cpu()
    with torch.no_grad():
        std = torch.cat([vae.encode(m).mode() for m in mels[:256].split(32)]).std().item()
    scaled = AudioVAE(dataclasses.replace(vae.config, scaling_factor=1.0 / std))
    scaled.model.load_state_dict(vae.model.state_dict())
    logger.info("audio VAE latent std %.4f -> scaling factor %.4f", std, 1.0 / std)
    return scaled.eval()


def crops(x: torch.Tensor, count: int, length: int, generator: torch.Generator, step: int = 1) -> torch.Tensor:
    """``count`` random crops of ``length`` along dim 1 of ``x`` ``(N, L, ...)``, starting on multiples of
    ``step``."""
    rows = torch.randint(x.shape[0], (count,), generator=generator).tolist()
    starts = torch.randint(math.floor((x.shape[1] - length) / step) + 1, (count,), generator=generator) * step
    return torch.stack([x[r, s : s + length] for r, s in zip(rows, starts.tolist(), strict=True)])
