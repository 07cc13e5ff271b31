"""Attention: the one call to ``F.scaled_dot_product_attention`` and the two attention layers built on it.

Open-Sora 1.2 switches between xformers, flash-attn and a plain softmax inside its blocks; here every attention
goes through :func:`attention`, so the backend is PyTorch's choice in one place. Layer and parameter names follow
Open-Sora (``qkv``, ``q_norm``, ``k_norm``, ``proj``, ``q_linear``, ``kv_linear``) so its checkpoints load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import TableCache


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention with the default 1/sqrt(D) scale.

    q: (B, heads, N, D); k, v: (B, heads, M, D); mask: bool, broadcastable to (B, heads, N, M), True = may attend.
    Returns (B, heads, N, D).
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class RMSNorm(nn.Module):
    """Llama/T5 RMS norm (Open-Sora's q/k norm, one weight shared by all heads). ``F.rms_norm`` accumulates in
    float32 inside the kernel, so bf16 q/k stay bf16 instead of passing through float32 copies."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight.to(x.dtype), self.eps)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over the sequence axis, interleaved pairs (x[2i], x[2i+1]) rotated by pos*freq_i.

    This is rotary_embedding_torch's convention, which Open-Sora uses for the temporal blocks; ``freqs`` is a
    parameter (not trained) because Open-Sora saves it as ``rope.freqs``. The cos/sin tables are built once per
    sequence length, device and dtype (every temporal block of every step shares them) in the compute dtype.
    """

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)
        self.freqs = nn.Parameter(freqs, requires_grad=False)
        self._tables = TableCache()

    def tables(self, n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin, (n, D) each, for positions 0..n-1 (angles computed in float32)."""
        # a reloaded freqs misses the cache; inference tensors (ComfyUI loads and runs under inference_mode) keep no
        # version counter, and cannot be changed in place outside inference mode
        version = 0 if self.freqs.is_inference() else self.freqs._version
        key = (n, device, dtype, self.freqs.data_ptr(), version)
        return self._tables.get(key, lambda: self._compute_tables(n, device, dtype))

    def _compute_tables(self, n, device, dtype):
        pos = torch.arange(n, device=device, dtype=torch.float32)
        angles = torch.outer(pos, self.freqs.float()).repeat_interleave(2, dim=-1)  # (N, D): f0 f0 f1 f1 ...
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., N, D) with positions 0..N-1 along N; returns the rotated x in x's dtype."""
        cos, sin = self.tables(x.shape[-2], x.device, x.dtype)
        pairs = rearrange(x, "... (d r) -> ... d r", r=2)
        rotated = rearrange(torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1), "... d r -> ... (d r)")
        return x * cos + rotated * sin


class SelfAttention(nn.Module):
    """Multi-head self-attention with optional per-head RMS q/k norm and optional RoPE (Open-Sora ``Attention``)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = RMSNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None = None) -> torch.Tensor:
        """x: (B, N, C); RoPE, if given, is applied to q and k after the norm. Returns (B, N, C)."""
        qkv = rearrange(self.qkv(x), "B N (three h d) -> three B h N d", three=3, h=self.num_heads)
        q, k, v = qkv.unbind(0)  # (B, heads, N, D)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q), rope(k)
        out = attention(q, k, v)
        return self.proj(rearrange(out, "B h N d -> B N (h d)"))


class CrossAttention(nn.Module):
    """Multi-head cross-attention from tokens to text (Open-Sora ``MultiHeadCrossAttention``).

    Each sample attends only to its own valid text tokens; a key mask does what xformers' BlockDiagonalMask over
    the packed tokens does in Open-Sora.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, C) queries; y: (B, L, C) text; y_mask: (B, L) bool, True = real token. Returns (B, N, C)."""
        q = rearrange(self.q_linear(x), "B N (h d) -> B h N d", h=self.num_heads)
        kv = rearrange(self.kv_linear(y), "B L (two h d) -> two B h L d", two=2, h=self.num_heads)
        mask = None if y_mask is None else rearrange(y_mask, "B L -> B 1 1 L")
        out = attention(q, kv[0], kv[1], mask)
        return self.proj(rearrange(out, "B h N d -> B N (h d)"))
