"""Every codec stage's objective reaches every weight it trains: one backward on a real batch gives each trainable
parameter a finite, non-zero gradient. A ``no_grad`` slipped into a decode path (as the audio VAE's time-piece
decode once had, so its stage trained nothing) fails here, whatever the stage."""

from __future__ import annotations

import json

import pytest
import torch

from uniform_core.codecs.audio import AudioVAE, Vocoder
from uniform_core.codecs.mel import MelFrontEnd
from uniform_core.codecs.video_vae import VideoVAE
from uniform_core.train import codec_training, video_vae_training, vocoder_training
from uniform_core.train.config import DataConfig


@pytest.fixture(scope="module")
def pool():
    return codec_training.ClipPool(DataConfig(num_clips=2, seconds=2, size=64), 2)


def _assert_every_trainable_weight_moves(objective: torch.nn.Module, loss: torch.Tensor) -> None:
    loss.backward()
    trainable = [(n, p) for n, p in objective.named_parameters() if p.requires_grad]
    assert trainable, "the objective trains no parameter at all"
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any()]
    assert not missing, f"{len(missing)} of {len(trainable)} trainable parameters get no gradient: {missing[:5]}"


def test_audio_vae_stage_trains_encoder_and_decoder(pool):
    torch.manual_seed(0)
    objective = codec_training.AudioVAEObjective(AudioVAE.from_preset("tiny"), kl_weight=1e-6)
    mel = MelFrontEnd()(pool.waveforms)[:, : codec_training.AUDIO_CROP_FRAMES]
    _assert_every_trainable_weight_moves(objective, objective(mel)["loss"])


def test_video_vae_stages_train_their_weights(pool):
    torch.manual_seed(0)
    vae = VideoVAE.from_preset("tiny").requires_grad_(True)
    frames = pool.pixels(torch.arange(2))  # (2, 3, T, H, W)
    spatial = codec_training.SpatialVAEObjective(vae, kl_weight=1e-6)
    _assert_every_trainable_weight_moves(spatial.vae.spatial_vae, spatial(frames[:, :, 0])["loss"])
    z2d = torch.randn(2, 4, vae.config.micro_frame_size, 8, 8)
    temporal = codec_training.TemporalVAEObjective(vae, kl_weight=1e-6, latent_var=1.0)
    _assert_every_trainable_weight_moves(temporal.vae.temporal_vae, temporal(z2d)["loss"])


def test_the_temporal_stage_trains_with_its_own_kl_weight(pool, tmp_path):
    """``stage2_kl_weight`` (not the 2D stage's ``kl_weight``) is what the temporal objective charges for its KL."""
    from uniform_core.train.config import CodecTrainConfig
    from uniform_core.train.log import LossLog
    from uniform_core.train.recipe import make_accelerator

    torch.manual_seed(0)
    vae = VideoVAE.from_preset("tiny")
    cfg = CodecTrainConfig(stage2_steps=1, batch_size=2, kl_weight=1e-6, stage2_kl_weight=0.25, log_every=1)
    acc = make_accelerator(cpu=True)
    codec_training.train_temporal_vae(vae, pool, cfg, acc, LossLog(tmp_path / "log.jsonl", acc))
    (line,) = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert line["kl"] > 0 and line["loss"] - line["rec"] == pytest.approx(0.25 * line["kl"], rel=1e-4)


def test_video_decoder_stage_trains_both_decoders_only(pool):
    torch.manual_seed(0)
    vae = VideoVAE.from_preset("tiny")
    pixels = pool.pixels(torch.arange(2))[:, :, : vae.config.micro_frame_size]
    with torch.no_grad():
        z = vae.encode(pixels, deterministic=True)
    objective = video_vae_training.VideoDecoderObjective(vae)
    _assert_every_trainable_weight_moves(objective, objective(z, pixels)["loss"])
    encoders = [vae.spatial_vae.module.encoder, vae.temporal_vae.encoder]
    assert not any(p.requires_grad for e in encoders for p in e.parameters())


def test_vocoder_stage_trains_every_generator_weight(pool):
    torch.manual_seed(0)
    objective = vocoder_training.VocoderObjective(Vocoder.from_preset("tiny"))
    objective.loudness = True
    n = vocoder_training.VOCODER_CROP_FRAMES * objective.mel.config.hop_length
    batch = torch.stack([pool.waveforms[:, :n], pool.clip_waveforms[:, :n]], dim=1)
    _, terms = objective(batch)
    _assert_every_trainable_weight_moves(objective.vocoder, terms["loss"])
