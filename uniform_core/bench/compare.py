"""`bench --compare`: our STDiT3 and the UniForm ``xl`` DiT against a plain SDPA transformer of the same size.

The plain model is the speed floor for the same work: the same linear layers (qkv, proj, cross-attention, MLP),
the same spatial-then-temporal attention over the same (B, T, S, C) tokens through
``F.scaled_dot_product_attention``, but nothing else (no adaLN modulation, q/k norm, RoPE or embedders). Our
model / plain = what those extras and our layout cost.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..model.stdit3 import STDiT3, STDiT3Config
from ..model.uniform_dit import PRESETS, UniFormDiT
from .meters import sync


class PlainBlock(nn.Module):
    """Pre-norm self-attention, cross-attention and MLP through SDPA, over frames (spatial) or positions."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, temporal: bool):
        super().__init__()
        self.heads, self.temporal = heads, temporal
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.q, self.kv, self.cross_proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, int(dim * mlp_ratio)), nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B, T, S, C = x.shape
        pattern = "B T S C -> (B S) T C" if self.temporal else "B T S C -> (B T) S C"
        seq = rearrange(self.norm1(x), pattern)
        q, k, v = rearrange(self.qkv(seq), "N L (three h d) -> three N h L d", three=3, h=self.heads)
        h = rearrange(F.scaled_dot_product_attention(q, k, v), "N h L d -> N L (h d)")
        back = "(B S) T C -> B T S C" if self.temporal else "(B T) S C -> B T S C"
        x = x + rearrange(self.proj(h), back, B=B)
        q = rearrange(self.q(x.reshape(B, T * S, C)), "B N (h d) -> B h N d", h=self.heads)
        k, v = rearrange(self.kv(y), "B L (two h d) -> two B h L d", two=2, h=self.heads)
        h = rearrange(F.scaled_dot_product_attention(q, k, v), "B h N d -> B N (h d)")
        x = x + self.cross_proj(h).reshape(B, T, S, C)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class PlainTransformer(nn.Module):
    def __init__(self, dim: int, heads: int, depth: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.blocks = nn.ModuleList(PlainBlock(dim, heads, mlp_ratio, temporal=i % 2 == 1) for i in range(2 * depth))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, y)
        return x


def compare_with_plain(depth: int = 2, frames: int = 5, side: int = 16, repeats: int = 5, device: str = "cpu") -> dict:
    """Median seconds of one CFG-batch (2) forward of STDiT3-XL/2 and UniForm xl (``depth`` block pairs each) and
    of the plain transformer on the same token grids; calls interleaved; CPU time on the CPU, wall on a GPU."""
    dev = torch.device(device)
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    xl = dataclasses.replace(PRESETS["xl"], depth=depth)
    stdit = STDiT3(STDiT3Config(depth=depth)).to(dev, dtype).eval()
    uniform = UniFormDiT(xl).to(dev, dtype).eval()
    c, L = xl, 20
    video = torch.randn(2, 4, frames, side, side, device=dev)
    audio = torch.randn(2, c.audio_in_channels, 5 * frames, c.audio_freq, device=dev)
    t = torch.full((2,), 500.0, device=dev)
    s_video = (side // 2) ** 2
    s_uniform = c.tokens_per_frame(side, side)
    plain = PlainTransformer(c.hidden_size, c.num_heads, depth).to(dev, dtype).eval()
    y = torch.randn(2, L, c.hidden_size, device=dev, dtype=dtype)
    caption, t5 = torch.randn(2, 1, L, 4096, device=dev), torch.randn(2, L, c.caption_channels, device=dev)
    mask = torch.ones(2, L, device=dev)
    tokens_video = torch.randn(2, frames, s_video, c.hidden_size, device=dev, dtype=dtype)
    tokens_uniform = torch.randn(2, frames, s_uniform, c.hidden_size, device=dev, dtype=dtype)
    calls = {
        "stdit3_xl2": lambda: stdit(video, t, caption, mask),
        "plain_stdit3_tokens": lambda: plain(tokens_video, y),
        "uniform_xl": lambda: uniform(video, audio, t, t5, task=0),
        "plain_uniform_tokens": lambda: plain(tokens_uniform, y),
    }
    clock = time.process_time if dev.type == "cpu" else time.perf_counter
    runs: dict[str, list[float]] = {k: [] for k in calls}
    with torch.no_grad():
        for fn in calls.values():
            fn()
        for _ in range(repeats):
            for name, fn in calls.items():
                sync(dev)
                start = clock()
                fn()
                sync(dev)
                runs[name].append(clock() - start)
    median = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "depth": depth,
        "latent": [frames, side, side],
        "dtype": str(dtype).removeprefix("torch."),
        "clock": clock.__name__,
        "median_s": median,
        "stdit3_over_plain": median["stdit3_xl2"] / median["plain_stdit3_tokens"],
        "uniform_over_plain": median["uniform_xl"] / median["plain_uniform_tokens"],
    }
