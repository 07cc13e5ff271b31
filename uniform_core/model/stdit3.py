"""STDiT3, the Open-Sora 1.2 spatial-temporal DiT, re-implemented to load ``hpcai-tech/OpenSora-STDiT-v3`` verbatim.

:class:`STDiT3Backbone` holds every Open-Sora module (key names as in the reference state dict) and the steps both
models share: conditioning, text embedding and the alternating spatial/temporal blocks over (B, T, S, C) tokens.
:class:`STDiT3` is the Open-Sora video model on top of it; ``uniform_dit.UniFormDiT`` is the audio-video one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import InputError
from ..tasks import VIDEO_DOWNSAMPLE, VIDEO_FPS
from .attention import CrossAttention, RotaryEmbedding, SelfAttention
from .layers import (
    CaptionEmbedder,
    DropPath,
    FinalLayer,
    Mlp,
    PatchEmbed3D,
    TableCache,
    TimestepEmbedder,
    sincos_pos_embed_2d,
    t2i_modulate,
)

CPU_BLOCK_TOKENS = 1024  # tokens per piece of a block on the CPU: its activations stay in the caches

# Open-Sora / Hugging Face config.json keys that change neither the weights nor the computation.
IGNORED_OPENSORA_KEYS = frozenset(
    {
        "input_size",
        "enable_flash_attn",
        "enable_layernorm_kernel",
        "enable_sequence_parallelism",
        "only_train_temporal",
        "freeze_y_embedder",
        "skip_y_embedder",
        "architectures",
        "model_type",
        "torch_dtype",
        "transformers_version",
    }
)


@dataclass(frozen=True)
class STDiT3Config:
    """STDiT3 hyper-parameters under Open-Sora 1.2's field names; the defaults are STDiT3-XL/2 (OpenSora-STDiT-v3)."""

    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) in latent cells
    in_channels: int = 4
    caption_channels: int = 4096  # text-encoder width (T5-v1.1-XXL for Open-Sora)
    model_max_length: int = 300  # text tokens; rows of the null caption
    mlp_ratio: float = 4.0
    qk_norm: bool = True
    pred_sigma: bool = True  # second half of the output channels is the learned variance
    input_sq_size: int = 512  # pixel side that the position-embedding scale refers to
    class_dropout_prob: float = 0.1  # probability a caption is replaced by the null caption in training
    drop_path: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise InputError(
                f"hidden_size ({self.hidden_size}) must split into num_heads ({self.num_heads}) heads of even size"
            )
        if self.hidden_size % 4:
            raise InputError(f"hidden_size must be a multiple of 4 (2-D sin-cos embedding); got {self.hidden_size}")

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.pred_sigma else self.in_channels

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a dict of field values; Open-Sora's config.json keys that change nothing are accepted."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields - IGNORED_OPENSORA_KEYS)
        if unknown:
            raise InputError(f"unknown {cls.__name__} fields {unknown}; allowed: {sorted(fields)}")
        return cls(**{k: v for k, v in d.items() if k in fields})


class STDiT3Block(nn.Module):
    """Self-attention (over S in a frame, or over T at a position), text cross-attention, MLP; adaLN-single."""

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_ratio: float, qk_norm: bool, drop_path: float, temporal: bool
    ):
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(hidden_size, num_heads, qk_norm=qk_norm)
        self.cross_attn = CrossAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), hidden_size)
        self.drop_path = DropPath(drop_path)
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)

    def forward(self, x, y, y_mask, t_mlp, t0_mlp=None, x_mask=None, rope=None):
        """x: (B, T, S, C); y: (B, L, C); y_mask: (B, L) bool or None; t_mlp, t0_mlp: (B, 6C);
        x_mask: (B, T) bool, False = frame modulated by t0_mlp (timestep 0); rope: temporal blocks' RoPE.
        Returns (B, T, S, C)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self._modulation(t_mlp, x_mask, t0_mlp)
        h = self._self_attention(t2i_modulate(self.norm1(x), shift_msa, scale_msa), rope)
        x = x + self.drop_path(gate_msa * h)

        h = self.cross_attn(rearrange(x, "B T S C -> B (T S) C"), y, y_mask)  # no gate, as in Open-Sora
        x = x + rearrange(h, "B (T S) C -> B T S C", T=x.shape[1])

        h = self.mlp(t2i_modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x + self.drop_path(gate_mlp * h)

    def _self_attention(self, h, rope):
        """Over the S tokens of each frame (spatial block) or over the T frames at each position (temporal)."""
        if self.temporal:
            seq = rearrange(h, "B T S C -> (B S) T C")
            return rearrange(self.attn(seq, rope), "(B S) T C -> B T S C", S=h.shape[2])
        seq = rearrange(h, "B T S C -> (B T) S C")
        return rearrange(self.attn(seq), "(B T) S C -> B T S C", T=h.shape[1])

    def _modulation(self, t_mlp, x_mask, t0_mlp):
        """Six (B, T or 1, 1, C) tensors; with x_mask, frames where it is False take the timestep-0 values."""
        mod = self.scale_shift_table[None] + rearrange(t_mlp, "B (six C) -> B six C", six=6)
        mod = rearrange(mod, "B six C -> six B 1 1 C")
        if x_mask is not None:
            mod0 = self.scale_shift_table[None] + rearrange(t0_mlp, "B (six C) -> B six C", six=6)
            mod = torch.where(x_mask[None, :, :, None, None], mod, rearrange(mod0, "B six C -> six B 1 1 C"))
        return mod.unbind(0)


class STDiT3Backbone(nn.Module):
    """The Open-Sora STDiT3 modules and the steps every model built on them shares (no ``forward`` of its own)."""

    def __init__(self, config: STDiT3Config, learn_null_caption: bool = False):
        super().__init__()
        self.config = config
        c = config
        self.gradient_checkpointing = False  # recompute blocks in backward to save memory when training
        self.rope = RotaryEmbedding(c.head_dim)
        self.pos_tables = TableCache()
        self.x_embedder = PatchEmbed3D(c.patch_size, c.in_channels, c.hidden_size)
        self.t_embedder = TimestepEmbedder(c.hidden_size)
        self.fps_embedder = TimestepEmbedder(c.hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(c.hidden_size, 6 * c.hidden_size))
        self.y_embedder = CaptionEmbedder(c.caption_channels, c.hidden_size, c.model_max_length, learn_null_caption)
        drop = torch.linspace(0, c.drop_path, c.depth, device="cpu").tolist()
        self.spatial_blocks = nn.ModuleList(
            STDiT3Block(c.hidden_size, c.num_heads, c.mlp_ratio, c.qk_norm, drop[i], temporal=False)
            for i in range(c.depth)
        )
        self.temporal_blocks = nn.ModuleList(
            STDiT3Block(c.hidden_size, c.num_heads, c.mlp_ratio, c.qk_norm, drop[i], temporal=True)
            for i in range(c.depth)
        )
        num_patch = c.patch_size[0] * c.patch_size[1] * c.patch_size[2]
        self.final_layer = FinalLayer(c.hidden_size, num_patch, c.out_channels)

    def initialize_weights(self) -> None:
        """Open-Sora's init: xavier Linear weights, zero biases, fps embedder output at zero, and zero output
        projections in every temporal block so each starts as the identity."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.fps_embedder.mlp[0].weight, std=0.02)
        nn.init.zeros_(self.fps_embedder.mlp[2].weight)
        for block in self.temporal_blocks:
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.cross_attn.proj.weight)
            nn.init.zeros_(block.mlp.fc2.weight)

    @property
    def dtype(self) -> torch.dtype:
        return self.x_embedder.proj.weight.dtype

    def embed_time(self, timestep: torch.Tensor, fps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """timestep: (B,) on the 0..1000 scale; fps: (B,). Returns t (B, C) for the final layer and
        t_mlp (B, 6C) for the blocks."""
        t = self.t_embedder(timestep) + self.fps_embedder(fps)
        return t, self.t_block(t)

    def embed_text(self, y: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """y: (B, L, caption_channels); mask: (B', L) with nonzero = real token, B' dividing B (a CFG batch may
        share its prompt's mask). Returns (B, L, C) tokens and a (B, L) bool key mask (None = all tokens)."""
        y = self.y_embedder(y.to(self.dtype))
        if mask is None or (mask.device.type == "cpu" and not torch.compiler.is_compiling() and bool(mask.all())):
            return y, None  # no padding: attention without a mask (flash-capable); only host masks are read
        mask = mask.to(y.device) != 0
        return y, mask.repeat(y.shape[0] // mask.shape[0], 1)

    def video_pos_embed(self, rows: int, cols: int, height: float, width: float) -> torch.Tensor:
        """Open-Sora's per-frame position embedding for a rows x cols patch grid of a height x width pixel video:
        (rows*cols, C), scaled so positions keep their pixel meaning across resolutions."""
        scale = (height * width) ** 0.5 / self.config.input_sq_size
        base_size = round((rows * cols) ** 0.5)
        device, dtype, dim = self.x_embedder.proj.weight.device, self.dtype, self.config.hidden_size

        def build():
            return sincos_pos_embed_2d(rows, cols, dim, scale, base_size, device).to(dtype)

        if isinstance(scale, torch.Tensor):  # a tensor height/width: its value is not read on the host
            return build()
        return self.pos_tables.get(("video", rows, cols, scale, device, dtype), build)

    def run_blocks(self, x, y, y_mask, t_mlp, t0_mlp=None, x_mask=None) -> torch.Tensor:
        """Spatial block i then temporal block i, for every i. x: (B, T, S, C) -> (B, T, S, C)."""
        for spatial, temporal in zip(self.spatial_blocks, self.temporal_blocks, strict=True):
            for block, rope in ((spatial, None), (temporal, self.rope)):
                if self.gradient_checkpointing and torch.is_grad_enabled():
                    x = checkpoint(block, x, y, y_mask, t_mlp, t0_mlp, x_mask, rope, use_reentrant=False)
                else:
                    x = self._run_block_in_pieces(block, x, y, y_mask, t_mlp, t0_mlp, x_mask, rope)
        return x

    def _run_block_in_pieces(self, block, x, y, y_mask, t_mlp, t0_mlp, x_mask, rope) -> torch.Tensor:
        """One block, on the CPU over pieces of at most ``CPU_BLOCK_TOKENS`` tokens (same result: a spatial block
        never mixes frames, a temporal block never mixes token positions). A block's activations for a long clip
        (a 16 s tiny clip: 4,320 tokens, a 8.8 MB MLP hidden state) outgrow the CPU caches and every op slows
        down; in cache-sized pieces the step time grows linearly with the clip (BENCHMARKS.md, cost growth). On a
        GPU, or when traced, the block runs whole."""
        B, T, S, _ = x.shape
        axis = 2 if block.temporal else 1
        pieces = min(x.shape[axis], -(-B * T * S // CPU_BLOCK_TOKENS))
        if x.device.type != "cpu" or pieces <= 1 or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return block(x, y, y_mask, t_mlp, t0_mlp, x_mask, rope)
        x_masks = [x_mask] * pieces
        if x_mask is not None and axis == 1:
            x_masks = x_mask.tensor_split(pieces, dim=1)
        parts = [
            block(part, y, y_mask, t_mlp, t0_mlp, part_mask, rope)
            for part, part_mask in zip(x.tensor_split(pieces, dim=axis), x_masks, strict=True)
        ]
        return torch.cat(parts, dim=axis)


def default_conditions(batch: int, latent_h: int, latent_w: int, fps, height, width, device):
    """Fill in fps (default 17) and the pixel height/width (default 8 x latent size) as Open-Sora reads them."""
    fps = torch.as_tensor(VIDEO_FPS if fps is None else fps, dtype=torch.float32, device=device).reshape(-1)
    if fps.numel() not in (1, batch):
        raise InputError(f"fps must be a number or have shape ({batch},); got {tuple(fps.shape)}")
    fps = fps.expand(batch)
    height = float(latent_h * VIDEO_DOWNSAMPLE if height is None else _first(height))
    width = float(latent_w * VIDEO_DOWNSAMPLE if width is None else _first(width))
    return fps, height, width


def _first(value):
    """A number as it is (a tensor read here would break a compiled graph); else the first entry, as Open-Sora."""
    return value if isinstance(value, (int, float)) else torch.as_tensor(value).reshape(-1)[0]


def drop_padding_tail(y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut y (B, L, C) and mask (B', L) after the last token that any sample uses: the same output, but a 300-token
    Open-Sora caption with 20 real tokens costs 20 tokens in the text projection and cross-attention, as Open-Sora's
    packed tokens do. Reads the mask on the host once (so does Open-Sora); the UniForm sampler never needs it."""
    used = (mask != 0).any(0).nonzero()
    if used.numel() == 0:
        return y, mask
    length = int(used[-1]) + 1
    return y[:, :length], mask[:, :length]


class STDiT3(STDiT3Backbone):
    """Open-Sora 1.2 STDiT3 video DiT; same state-dict keys and outputs as the reference."""

    def __init__(self, config: STDiT3Config):
        super().__init__(config)
        self.initialize_weights()

    def forward(self, x, timestep, y, mask=None, x_mask=None, fps=None, height=None, width=None) -> torch.Tensor:
        """Predict noise/velocity and variance for a video latent.

        x: (B, in_channels, T, H, W) latent; timestep: (B,) on the 0..1000 scale;
        y: (B, 1, L, caption_channels) text-encoder states ((B, L, caption_channels) is accepted too);
        mask: (B, L) text mask or None (all L tokens used); x_mask: (B, T) bool, False marks clean conditioning
        frames (modulated as timestep 0); fps: (B,) frames per second (default 17);
        height, width: pixel size of the video ((B,) tensors or numbers; only the first is read; default 8x latent).
        Returns (B, out_channels, T, H, W) float32.
        """
        B, _, Tx, Hx, Wx = x.shape
        pt, ph, pw = self.config.patch_size
        rows, cols = -(-Hx // ph), -(-Wx // pw)  # patches per frame after zero padding
        fps, height, width = default_conditions(B, Hx, Wx, fps, height, width, x.device)
        timestep = timestep.to(self.dtype)  # Open-Sora casts first, so bf16 inference quantises the timestep

        t, t_mlp = self.embed_time(timestep, fps)
        t0 = t0_mlp = None
        if x_mask is not None:
            t0, t0_mlp = self.embed_time(torch.zeros_like(timestep), fps)
        y = y.squeeze(1) if y.ndim == 4 else y  # Open-Sora passes (B, 1, L, C)
        if self.training and self.config.class_dropout_prob > 0:
            drop = torch.rand(B, device=y.device) < self.config.class_dropout_prob
            y = torch.where(drop[:, None, None], self.y_embedder.null(B, y.shape[1]).to(y), y)
        if mask is not None:
            y, mask = drop_padding_tail(y, mask)
        y, y_mask = self.embed_text(y, mask)

        tokens = self.x_embedder(x.to(self.dtype)) + self.video_pos_embed(rows, cols, height, width)
        tokens = self.run_blocks(tokens, y, y_mask, t_mlp, t0_mlp, x_mask)
        out = self.final_layer(tokens, t, t0, x_mask)
        out = rearrange(
            out,
            "B T (h w) (tp hp wp c) -> B c (T tp) (h hp) (w wp)",
            h=rows,
            tp=pt,
            hp=ph,
            wp=pw,
        )
        return out[:, :, :Tx, :Hx, :Wx].float()
