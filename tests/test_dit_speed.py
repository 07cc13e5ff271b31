"""The DiT's step-cost measures change nothing but speed: blocks run in cache-sized pieces on the CPU give the whole
block's result, and the rotary/position tables are built once per shape."""

from __future__ import annotations

import torch

import uniform_core.model.stdit3 as stdit3
from uniform_core.model.stdit3 import STDiT3, STDiT3Config
from uniform_core.model.uniform_dit import UniFormDiT


def _dit_inputs(model, seconds=2, batch=2):
    c, T = model.config, 5 * seconds
    g = torch.Generator().manual_seed(0)
    return dict(
        video=torch.randn(batch, 4, T, 8, 8, generator=g),
        audio=torch.randn(batch, 8, 5 * T, c.audio_freq, generator=g),
        timestep=torch.full((batch,), 400.0),
        y=torch.randn(batch, 12, c.caption_channels, generator=g),
        mask=torch.tensor([[1] * 12, [1] * 5 + [0] * 7]),
        task=torch.tensor([0, 2]),
    )


def test_blocks_in_pieces_give_the_whole_blocks_result(monkeypatch):
    torch.manual_seed(0)
    model = UniFormDiT.from_preset("tiny").eval()
    for p in model.parameters():  # non-zero temporal outputs, so the temporal blocks matter
        p.data.add_(torch.randn_like(p) * 0.02)
    inputs = _dit_inputs(model)
    with torch.no_grad():
        monkeypatch.setattr(stdit3, "CPU_BLOCK_TOKENS", 10**9)
        whole = model(**inputs)
        monkeypatch.setattr(stdit3, "CPU_BLOCK_TOKENS", 64)  # 2 x 10 frames x 27 tokens -> 9 pieces
        pieces = model(**inputs)
    for w, p in zip(whole, pieces, strict=True):
        torch.testing.assert_close(p, w, rtol=1e-5, atol=1e-5)
        assert not torch.equal(w, torch.zeros_like(w))


def test_blocks_in_pieces_keep_the_conditioning_frames_of_an_x_mask(monkeypatch):
    torch.manual_seed(1)
    cfg = STDiT3Config(hidden_size=64, depth=2, num_heads=4, caption_channels=32, model_max_length=8)
    model = STDiT3(cfg).eval()
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.02)
    x, t = torch.randn(2, 4, 6, 8, 8), torch.tensor([300.0, 700.0])
    y, x_mask = torch.randn(2, 1, 8, 32), torch.tensor([[False, True, True, True, True, False]] * 2)
    with torch.no_grad():
        monkeypatch.setattr(stdit3, "CPU_BLOCK_TOKENS", 10**9)
        whole = model(x, t, y, x_mask=x_mask)
        monkeypatch.setattr(stdit3, "CPU_BLOCK_TOKENS", 40)
        pieces = model(x, t, y, x_mask=x_mask)
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-5)


def test_rotary_tables_are_built_once_per_shape_and_match_the_formula():
    rope = UniFormDiT.from_preset("tiny").rope
    first = rope.tables(10, torch.device("cpu"), torch.float32)
    assert rope.tables(10, torch.device("cpu"), torch.float32)[0] is first[0]
    assert rope.tables(11, torch.device("cpu"), torch.float32)[0] is not first[0]
    angles = torch.arange(10.0)[:, None] * rope.freqs.repeat_interleave(2)[None]
    torch.testing.assert_close(first[0], angles.cos())
    torch.testing.assert_close(first[1], angles.sin())
    bf16 = rope(torch.randn(3, 10, rope.freqs.numel() * 2).bfloat16())
    assert bf16.dtype == torch.bfloat16  # q/k stay in the compute dtype


def test_a_table_built_without_grad_serves_a_training_step():
    model = UniFormDiT.from_preset("tiny")
    inputs = _dit_inputs(model, seconds=1)
    with torch.inference_mode():
        model(**inputs)
    video, audio = model(**inputs)  # tables from inference mode are not reused with autograd on
    (video.mean() + audio.mean()).backward()
    assert model.x_embedder.proj.weight.grad is not None
