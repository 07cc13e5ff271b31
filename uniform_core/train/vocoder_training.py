"""Training the HiFi-GAN vocoder on the synthetic clips: mel of the levelled clip -> the clip as it was.

The generator is trained as HiFi-GAN's paper trains it (Kong et al. 2020, eq. 1-6): least-squares GAN losses
against the multi-period and multi-scale discriminators (``discriminators``), feature matching (weight 2) and
log-mel L1 (weight 45), plus a multi-resolution STFT loss (Parallel WaveGAN) that includes 4 ms and 8 ms windows,
whose log magnitudes punish any sound before an impact's onset. The first ``adversarial_from`` steps use the
reconstruction losses alone, so the discriminators start on a generator that already makes the right spectrum.

Input and target differ in level on purpose: the vocoder sees the mel of the clip levelled as AudioLDM's encoder
levels it (peak 0.5) and is asked for the clip at its own level, so decoded sound comes out at the level of the
training clips instead of the encoder's -6 dBFS peak.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from ..codecs.audio import Vocoder
from ..codecs.mel import MelFrontEnd
from .codec_training import ClipPool, crops
from .config import CodecTrainConfig
from .discriminators import HifiGanDiscriminator, Judgement
from .log import LossLog, progress_bar
from .video_vae_training import cosine_schedule

logger = logging.getLogger(__name__)

VOCODER_CROP_FRAMES = 48  # 0.48 s of mel per vocoder example
STFT_RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (256, 64, 256), (128, 32, 128), (64, 16, 64))
MEL_WEIGHT, FEATURE_WEIGHT, STFT_WEIGHT = 45.0, 2.0, 10.0  # HiFi-GAN's mel and feature weights
LOUDNESS_WEIGHT = 20.0
ENERGY_WINDOW, ENERGY_HOP = 256, 64  # samples at 16 kHz: 16 ms frames every 4 ms


def stft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss (Parallel WaveGAN): spectral convergence + log-magnitude L1, averaged over
    :data:`STFT_RESOLUTIONS` ``(n_fft, hop, window)``. ``pred``, ``target``: ``(B, N)`` waveforms."""
    total = pred.new_zeros(())
    for n_fft, hop, win in STFT_RESOLUTIONS:
        window = torch.hann_window(win, device=pred.device)
        mags = [
            torch.stft(x, n_fft, hop, win, window, return_complex=True).abs().clamp(min=1e-7) for x in (pred, target)
        ]
        convergence = torch.linalg.norm(mags[1] - mags[0]) / torch.linalg.norm(mags[1])
        total = total + convergence + F.l1_loss(mags[0].log(), mags[1].log())
    return total / len(STFT_RESOLUTIONS)


def loudness_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 of log frame energies (16 ms windows every 4 ms): how loud each moment is, whatever its pitch.

    The vocoder is shift-equivariant by whole mel frames, so on a steady mel it can only make sound that repeats
    every hop (harmonics of 100 Hz): a tone between them cannot be hit, and the spectral losses then favour
    leaving it out (energy in a wrong bin costs as much as none). This loss asks for its loudness instead.
    ``(B, N)`` waveforms."""
    frames = [
        F.avg_pool1d(x.unsqueeze(1) ** 2, ENERGY_WINDOW, ENERGY_HOP).clamp(min=1e-8).log() for x in (pred, target)
    ]
    return F.l1_loss(*frames)


def discriminator_loss(real: list[Judgement], fake: list[Judgement]) -> torch.Tensor:
    """LSGAN (HiFi-GAN eq. 1): real logits towards 1, generated towards 0, summed over sub-discriminators."""
    return sum(((1 - r) ** 2).mean() + (g**2).mean() for (r, _), (g, _) in zip(real, fake, strict=True))


def generator_losses(real: list[Judgement], fake: list[Judgement]) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial, feature matching): LSGAN towards 1 (eq. 2) and the L1 between every layer's features of the
    real and the generated waveform (eq. 3), each summed over sub-discriminators."""
    adversarial = sum(((1 - g) ** 2).mean() for g, _ in fake)
    features = sum(
        F.l1_loss(g, r.detach())
        for (_, rs), (_, gs) in zip(real, fake, strict=True)
        for r, g in zip(rs, gs, strict=True)
    )
    return adversarial, features


class VocoderObjective(nn.Module):
    """Batch ``(B, 2, N)``: the levelled crop (its mel is the input) and the crop at the clip's level (the
    target). ``forward`` returns the generated waveform and the reconstruction terms."""

    def __init__(self, vocoder: Vocoder):
        super().__init__()
        self.vocoder, self.mel = vocoder, MelFrontEnd()
        self.loudness = False  # the loudness loss joins at the recipe's loudness_from

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        levelled, target = batch.unbind(1)
        pred = self.vocoder(self.mel(levelled))
        mel_l1 = F.l1_loss(self.mel(pred), self.mel(target))
        stft = stft_loss(pred, target)
        terms = {"loss": MEL_WEIGHT * mel_l1 + STFT_WEIGHT * stft, "stft": stft, "mel_l1": mel_l1}
        if self.loudness:
            terms["loudness"] = loudness_loss(pred, target)
            terms["loss"] = terms["loss"] + LOUDNESS_WEIGHT * terms["loudness"]
        return pred, terms


def train_vocoder(
    pool: ClipPool,
    cfg: CodecTrainConfig,
    accelerator: Accelerator,
    log: LossLog,
    seed: int,
    on_step: Callable[[int, Vocoder, HifiGanDiscriminator | None], None] | None = None,
    resume: tuple[int, Vocoder] | None = None,
) -> Vocoder:
    """A HiFi-GAN generator (preset ``cfg.preset``) trained for ``cfg.steps`` on ``cfg.batch_size`` crops of
    0.48 s; the discriminators (``cfg.disc_width`` of HiFi-GAN's channels) join at step ``cfg.adversarial_from``
    (never when it is None), the loudness loss at ``cfg.loudness_from``; both learning rates follow
    :func:`~.video_vae_training.cosine_schedule`. ``on_step(step, vocoder, discriminator)``
    runs after every step (checkpoints); ``resume`` ``(step, vocoder)`` continues a generator saved at that step
    (with fresh optimizer states and data draws)."""
    torch.manual_seed(seed)
    vocoder = Vocoder.from_preset(cfg.preset) if resume is None else resume[1].train().requires_grad_(True)
    objective = VocoderObjective(vocoder)
    hop = objective.mel.config.hop_length
    both = torch.stack([pool.waveforms, pool.clip_waveforms], dim=-1)  # (N, samples, 2)

    def draw(generator: torch.Generator) -> torch.Tensor:
        return crops(both, cfg.batch_size, VOCODER_CROP_FRAMES * hop, generator, step=hop).transpose(1, 2)

    adversarial = cfg.adversarial_from is not None
    disc = HifiGanDiscriminator(cfg.disc_width) if adversarial else None
    done = 0 if resume is None else resume[0]
    opt_g = torch.optim.AdamW(vocoder.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.0)
    schedules = [cosine_schedule(opt_g, cfg.steps, done)]
    wrapped, opt_g = accelerator.prepare(objective, opt_g)
    if adversarial:
        opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.0)
        schedules.append(cosine_schedule(opt_d, cfg.steps, done))
        disc_wrapped, opt_d = accelerator.prepare(disc, opt_d)
    generator = torch.Generator().manual_seed(accelerator.process_index)
    wrapped.train()
    bar = progress_bar(accelerator, cfg.steps, "vocoder", initial=done)
    for step in range(done + 1, cfg.steps + 1):
        objective.loudness = cfg.loudness_from is not None and step > cfg.loudness_from
        batch = draw(generator).to(accelerator.device)
        pred, terms = wrapped(batch)
        if adversarial and step > cfg.adversarial_from:
            target = batch[:, 1]
            d_loss = discriminator_loss(disc_wrapped(target), disc_wrapped(pred.detach()))
            opt_d.zero_grad(set_to_none=True)
            accelerator.backward(d_loss)
            opt_d.step()
            disc.requires_grad_(False)  # the generator's step needs no discriminator gradients
            terms["adv"], terms["fm"] = generator_losses(disc_wrapped(target), disc_wrapped(pred))
            disc.requires_grad_(True)
            terms["disc"] = d_loss.detach()
            terms["loss"] = terms["loss"] + terms["adv"] + FEATURE_WEIGHT * terms["fm"]
        opt_g.zero_grad(set_to_none=True)
        accelerator.backward(terms["loss"])
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(vocoder.parameters(), cfg.grad_clip)
        opt_g.step()
        for schedule in schedules:
            schedule.step()
        values = {k: accelerator.reduce(v.detach(), "mean").item() for k, v in terms.items()}
        bar.update(1)
        bar.set_postfix(loss=f"{values['loss']:.3f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.write(stage="vocoder", step=step, lr=schedules[0].get_last_lr()[0], **values)
        if on_step is not None:
            on_step(step, vocoder, disc)
    bar.close()
    accelerator.wait_for_everyone()
    return vocoder.eval()
