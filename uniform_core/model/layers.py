"""Embedders, MLP and the final layer of STDiT3, with Open-Sora 1.2's parameter names and numerics.

Tokens are laid out (B, T, S, C) throughout: T latent frames, S tokens per frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class TableCache:
    """Tables that depend only on shapes (rotary cos/sin, sin-cos positions), built once per key and reused by
    every block of every step. Inside a compiled graph it is bypassed: the graph folds the tables in itself."""

    def __init__(self, size: int = 8):
        self.size = size
        self._tables: dict[tuple, object] = {}

    def get(self, key: tuple, build):
        if torch.compiler.is_compiling():
            return build()
        key = (*key, torch.is_inference_mode_enabled())  # an inference tensor cannot take part in autograd later
        if key not in self._tables:
            if len(self._tables) >= self.size:
                self._tables.clear()
            self._tables[key] = build()
        return self._tables[key]


def t2i_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """PixArt "t2i" adaptive-norm modulation."""
    return x * (1 + scale) + shift


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of t: (B,) float -> (B, dim) float32, laid out [cos | sin] (GLIDE/DiT order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_pos_embed_2d(
    rows: int, cols: int, dim: int, scale: float = 1.0, base_size: int | None = None, device=None
) -> torch.Tensor:
    """2-D sin-cos position embedding, (rows*cols, dim) float32, tokens row-major (index = r*cols + c).

    Open-Sora's PositionEmbedding2D: grid coordinates are index/scale, stretched to ``base_size`` when given;
    the first dim/2 channels encode the column, the rest the row, each half laid out [sin | cos].
    """
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim // 2, 2, dtype=torch.float32, device=device) / (dim // 2)))
    r = torch.arange(rows, dtype=torch.float32, device=device) / scale
    c = torch.arange(cols, dtype=torch.float32, device=device) / scale
    if base_size is not None:
        r = r * (base_size / rows)
        c = c * (base_size / cols)
    grid_r, grid_c = torch.meshgrid(r, c, indexing="ij")

    def embed(p: torch.Tensor) -> torch.Tensor:
        angles = torch.outer(p.reshape(-1), inv_freq)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    return torch.cat([embed(grid_c), embed(grid_r)], dim=-1)


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole residual branch with probability ``p`` in training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Mlp(nn.Module):
    """fc1 -> GELU(tanh) -> fc2 (timm's ``Mlp`` keys)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class TimestepEmbedder(nn.Module):
    """Scalar (diffusion timestep 0..1000, or fps) -> (B, C): sinusoid then Linear-SiLU-Linear (``mlp.{0,2}``)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: (B,) float. Returns (B, C) in the weights' dtype."""
        freq = timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class PatchEmbed3D(nn.Module):
    """Video latent (B, C, T, H, W) -> tokens (B, T', H'*W', hidden), zero-padding T, H, W up to the patch size."""

    def __init__(self, patch_size: tuple[int, int, int], in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv3d(in_channels, hidden_size, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pt, ph, pw = self.patch_size
        t, h, w = x.shape[-3:]
        x = F.pad(x, (0, -w % pw, 0, -h % ph, 0, -t % pt))
        return rearrange(self.proj(x), "B C T H W -> B T (H W) C")


class AudioPatchEmbed(nn.Module):
    """Audio latent (B, C, steps, freq) -> per-video-frame tokens (B, T, k*f, hidden).

    Each video latent frame owns ``steps_per_frame`` consecutive audio latent steps; those are cut into patches
    of ``patch_size`` = (time, freq), giving k = steps_per_frame/time rows of f = freq/freq_patch tokens.

    The patches do not overlap, so the strided convolution ``proj`` (its weight keeps the checkpoint key and shape)
    is applied as one matmul over the flattened patches: oneDNN's bf16 convolution on AMX CPUs (torch 2.14.1) gets
    patches of 64 or more values (8 channels x 8 bins, the tiny preset) wrong by 100 % RMS; the matmul is right.
    """

    def __init__(self, patch_size: tuple[int, int], in_channels: int, hidden_size: int, steps_per_frame: int):
        super().__init__()
        self.steps_per_frame = steps_per_frame
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=tuple(patch_size), stride=tuple(patch_size))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        pt, pf = self.proj.kernel_size
        frames = audio.shape[2] // self.steps_per_frame
        patches = rearrange(audio, "B c (T k pt) (f pf) -> B T (k f) (c pt pf)", T=frames, pt=pt, pf=pf)
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)


class CaptionEmbedder(nn.Module):
    """Text encoder states (B, L, caption_channels) -> (B, L, hidden) through ``y_proj``; holds the null caption.

    ``y_embedding`` (model_max_length, caption_channels) is the classifier-free-guidance null caption. Open-Sora
    keeps it as a fixed buffer; ``learn_null=True`` makes it a parameter so training can learn it (same key).
    """

    def __init__(self, caption_channels: int, hidden_size: int, token_num: int, learn_null: bool = False):
        super().__init__()
        self.y_proj = Mlp(caption_channels, hidden_size, hidden_size)
        null = torch.randn(token_num, caption_channels) / caption_channels**0.5
        if learn_null:
            self.y_embedding = nn.Parameter(null)
        else:
            self.register_buffer("y_embedding", null)

    def null(self, batch: int, length: int) -> torch.Tensor:
        """The null caption, first ``length`` rows, repeated: (batch, length, caption_channels)."""
        return self.y_embedding[:length].unsqueeze(0).expand(batch, -1, -1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.y_proj(y)


class FinalLayer(nn.Module):
    """LayerNorm, modulation by the raw conditioning ``t`` (no SiLU), linear to patch values (PixArt T2IFinalLayer)."""

    def __init__(self, hidden_size: int, num_patch: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, num_patch * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, t0: torch.Tensor | None = None, x_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (B, T, S, C); t, t0: (B, C); x_mask: (B, T) bool, False = frame uses t0. Returns (B, T, S, patch*out)."""
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)  # (B, 1, C) each
        x = t2i_modulate(self.norm_final(x), shift[:, None], scale[:, None])
        if x_mask is not None:
            shift0, scale0 = (self.scale_shift_table[None] + t0[:, None]).chunk(2, dim=1)
            # Open-Sora quirk kept for parity: the t0 branch normalises the already modulated x.
            x0 = t2i_modulate(self.norm_final(x), shift0[:, None], scale0[:, None])
            x = torch.where(x_mask[:, :, None, None], x, x0)
        return self.linear(x)
