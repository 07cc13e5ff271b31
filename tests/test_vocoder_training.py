"""The recipe's vocoder stage: HiFi-GAN's adversarial training runs on tiny data with finite losses that go down,
and its pieces (discriminators, GAN losses) behave as the paper defines them."""

from __future__ import annotations

import math

import torch

from uniform_core.train import vocoder_training
from uniform_core.train.codec_training import ClipPool
from uniform_core.train.config import CodecTrainConfig, DataConfig
from uniform_core.train.discriminators import MPD_PERIODS, HifiGanDiscriminator
from uniform_core.train.log import LossLog, read_log
from uniform_core.train.recipe import make_accelerator


def test_adversarial_vocoder_stage_runs_with_finite_falling_losses(tmp_path):
    torch.manual_seed(0)
    pool = ClipPool(DataConfig(num_clips=2, seconds=2, size=64), 2)
    acc = make_accelerator(cpu=True)
    discs = []

    def record(step, vocoder, disc):
        discs.append(disc)

    cfg = CodecTrainConfig(
        preset="tiny", steps=12, batch_size=2, lr=2e-3, log_every=1, adversarial_from=4, loudness_from=8
    )
    log = LossLog(tmp_path / "log.jsonl", acc)
    vocoder = vocoder_training.train_vocoder(pool, cfg, acc, log, seed=0, on_step=record)
    rows = read_log(tmp_path / "log.jsonl", "vocoder")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert all(math.isfinite(v) for r in rows for k, v in r.items() if k != "stage")
    assert "disc" not in rows[3] and {"adv", "fm", "disc"} <= set(rows[4])  # discriminators join after step 4
    assert "loudness" not in rows[7] and "loudness" in rows[8]
    assert all(d is discs[0] for d in discs) and isinstance(discs[0], HifiGanDiscriminator)
    assert sum(r["mel_l1"] for r in rows[-3:]) < sum(r["mel_l1"] for r in rows[:3])
    assert not vocoder.training


def test_discriminators_judge_every_period_and_scale():
    torch.manual_seed(0)
    disc = HifiGanDiscriminator(width=0.125)
    judgements = disc(torch.randn(2, 4000))
    assert len(judgements) == len(MPD_PERIODS) + 3
    for logits, features in judgements:
        assert logits.shape[0] == 2 and len(features) >= 6 and all(f.shape[0] == 2 for f in features)


def test_loudness_loss_counts_a_tone_20_db_too_quiet():
    t = torch.arange(8000) / 16000
    noise = 0.003 * torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))
    clip = noise + 0.5 * torch.sin(2 * torch.pi * 262 * t)
    quiet = noise + 0.05 * torch.sin(2 * torch.pi * 262 * t)  # the tone 20 dB too quiet, the floor right
    assert vocoder_training.loudness_loss(clip, clip).item() == 0.0
    assert vocoder_training.loudness_loss(quiet, clip).item() > 0.5


def test_gan_losses_are_the_least_squares_ones():
    ones = [(torch.ones(2, 5), [torch.ones(2, 3)])]
    zeros = [(torch.zeros(2, 5), [torch.zeros(2, 3)])]
    assert vocoder_training.discriminator_loss(ones, zeros).item() == 0.0  # perfect judge
    assert vocoder_training.discriminator_loss(zeros, ones).item() == 2.0
    adversarial, features = vocoder_training.generator_losses(ones, zeros)
    assert (adversarial.item(), features.item()) == (1.0, 1.0)
    adversarial, features = vocoder_training.generator_losses(ones, ones)
    assert (adversarial.item(), features.item()) == (0.0, 0.0)
