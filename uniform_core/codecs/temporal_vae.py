"""Causal temporal VAE of Open-Sora VAE v1.2 (``VAE_Temporal_SD``), compatible with its checkpoint keys.

A MAGVIT-v2-style 3D conv autoencoder that works on the 4-channel latents of a 2D image VAE: it compresses time
(4x with two strided stages) and leaves height and width alone. Convolutions are causal in time (all temporal
padding is in front), so frame ``t`` of the output only depends on frames ``<= t``. Submodule names follow the
Open-Sora module tree so that ``temporal_vae.*`` keys of ``hpcai-tech/OpenSora-VAE-v1.2`` load verbatim;
the unused ``nn.Identity`` entries of ``conv_blocks`` are kept because they take list index 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

LOGVAR_RANGE = (-30.0, 20.0)  # posterior log-variance clamp of the reference


class CausalConv3d(nn.Module):
    """Conv3d with zero padding only in front in time (causal) and ``k // 2`` on each spatial side."""

    def __init__(self, chan_in: int, chan_out: int, kernel_size: int = 3, time_stride: int = 1, bias: bool = True):
        super().__init__()
        time_pad = (kernel_size - 1) + (1 - time_stride)
        space_pad = kernel_size // 2
        self.padding = (space_pad, space_pad, space_pad, space_pad, time_pad, 0)  # F.pad order: W, H, T
        self.conv = nn.Conv3d(chan_in, chan_out, kernel_size, stride=(time_stride, 1, 1), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ResBlock(nn.Module):
    """GN -> SiLU -> conv3 -> GN -> SiLU -> conv3, plus a 1x1x1 projection of the skip when channels change."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, bias=False)
        self.norm2 = nn.GroupNorm(num_groups, out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, bias=False)
        self.conv3 = CausalConv3d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv3 is None else self.conv3(x)
        return h + skip


def _res_stack(in_channels: int, out_channels: int, count: int, num_groups: int) -> nn.ModuleList:
    """``count`` ResBlocks; only the first one changes the channel count."""
    return nn.ModuleList(
        ResBlock(in_channels if i == 0 else out_channels, out_channels, num_groups) for i in range(count)
    )


class TemporalEncoder(nn.Module):
    """``[B, C, T, H, W] -> [B, out_channels, T / 2**sum(temporal_downsample), H, W]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        filters: int,
        num_res_blocks: int,
        channel_multipliers: tuple[int, ...],
        temporal_downsample: tuple[bool, ...],
        num_groups: int,
    ):
        super().__init__()
        self.conv_in = CausalConv3d(in_channels, filters, 3, bias=False)
        self.block_res_blocks = nn.ModuleList()
        self.conv_blocks = nn.ModuleList()
        prev = filters
        for i, mult in enumerate(channel_multipliers):
            width = filters * mult
            self.block_res_blocks.append(_res_stack(prev, width, num_res_blocks, num_groups))
            prev = width
            if i < len(channel_multipliers) - 1:
                down = temporal_downsample[i]
                self.conv_blocks.append(CausalConv3d(width, width, 3, time_stride=2) if down else nn.Identity())
        self.res_blocks = _res_stack(prev, prev, num_res_blocks, num_groups)
        self.norm1 = nn.GroupNorm(num_groups, prev)
        self.conv2 = CausalConv3d(prev, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for i, blocks in enumerate(self.block_res_blocks):
            for block in blocks:
                x = block(x)
            if i < len(self.conv_blocks):
                x = self.conv_blocks[i](x)
        for block in self.res_blocks:
            x = block(x)
        return self.conv2(F.silu(self.norm1(x)))


class TemporalDecoder(nn.Module):
    """``[B, in_channels, T', H, W] -> [B, out_channels, T' * 2**sum(temporal_downsample), H, W]``.

    Upsampling in time is a conv to twice the channels followed by depth-to-space: channel ``2c + tau`` of latent
    frame ``t`` becomes channel ``c`` of frame ``2t + tau``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        filters: int,
        num_res_blocks: int,
        channel_multipliers: tuple[int, ...],
        temporal_downsample: tuple[bool, ...],
        num_groups: int,
    ):
        super().__init__()
        self.temporal_upsample = tuple(temporal_downsample)
        prev = filters * channel_multipliers[-1]
        self.conv1 = CausalConv3d(in_channels, prev, 3)
        self.res_blocks = _res_stack(prev, prev, num_res_blocks, num_groups)
        # Built top-down like the reference, stored bottom-up: block_res_blocks[i] is level i.
        levels, ups = [], []
        for i in reversed(range(len(channel_multipliers))):
            width = filters * channel_multipliers[i]
            levels.insert(0, _res_stack(prev, width, num_res_blocks, num_groups))
            prev = width
            if i > 0:
                up = temporal_downsample[i - 1]
                ups.insert(0, CausalConv3d(width, width * 2, 3) if up else nn.Identity())
        self.block_res_blocks = nn.ModuleList(levels)
        self.conv_blocks = nn.ModuleList(ups)
        self.norm1 = nn.GroupNorm(num_groups, prev)
        self.conv_out = CausalConv3d(prev, out_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv1(z)
        for block in self.res_blocks:
            x = block(x)
        for i in reversed(range(len(self.block_res_blocks))):
            for block in self.block_res_blocks[i]:
                x = block(x)
            if i > 0 and self.temporal_upsample[i - 1]:
                x = rearrange(self.conv_blocks[i - 1](x), "B (C ts) T H W -> B C (T ts) H W", ts=2)
        return self.conv_out(F.silu(self.norm1(x)))


class TemporalVAE(nn.Module):
    """Open-Sora ``VAE_Temporal``: causal time compression of spatial-VAE latents, no spatial downsampling.

    Field names are the reference's constructor arguments (activation is always SiLU, as in every shipped config).
    """

    def __init__(
        self,
        in_out_channels: int = 4,
        latent_embed_dim: int = 4,
        embed_dim: int = 4,
        filters: int = 128,
        num_res_blocks: int = 4,
        channel_multipliers: tuple[int, ...] = (1, 2, 2, 4),
        temporal_downsample: tuple[bool, ...] = (False, True, True),
        num_groups: int = 32,
    ):
        super().__init__()
        if len(temporal_downsample) != len(channel_multipliers) - 1:
            raise ValueError(
                f"temporal_downsample needs one entry per level transition ({len(channel_multipliers) - 1}); "
                f"got {temporal_downsample!r}"
            )
        self.time_downsample_factor = 2 ** sum(bool(d) for d in temporal_downsample)
        levels = dict(
            filters=filters,
            num_res_blocks=num_res_blocks,
            channel_multipliers=tuple(channel_multipliers),
            temporal_downsample=tuple(temporal_downsample),
            num_groups=num_groups,
        )
        self.encoder = TemporalEncoder(in_out_channels, 2 * latent_embed_dim, **levels)
        self.quant_conv = CausalConv3d(2 * latent_embed_dim, 2 * embed_dim, 1)
        self.post_quant_conv = CausalConv3d(embed_dim, latent_embed_dim, 1)
        self.decoder = TemporalDecoder(latent_embed_dim, in_out_channels, **levels)

    def time_padding(self, num_frames: int) -> int:
        """Zero frames put in front so that ``num_frames`` becomes a multiple of the time downsampling."""
        return -num_frames % self.time_downsample_factor

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for ``num_frames`` input frames encoded in one piece."""
        return (num_frames + self.time_padding(num_frames)) // self.time_downsample_factor

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior of ``x`` ``[B, in_out_channels, T, H, W]``: ``(mean, logvar)``, each ``[B, embed_dim, T', H, W]``.

        ``T' = ceil(T / time_downsample_factor)``; logvar is clamped to [-30, 20] as in the reference.
        """
        x = F.pad(x, (0, 0, 0, 0, self.time_padding(x.shape[2]), 0))
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``z`` ``[B, embed_dim, T', H, W]`` -> ``[B, in_out_channels, num_frames, H, W]``.

        The decoder yields ``T' * time_downsample_factor`` frames; the leading padding frames that encode added
        for ``num_frames`` are dropped.
        """
        x = self.decoder(self.post_quant_conv(z))
        return x[:, :, self.time_padding(num_frames) :]

    def decode_after(
        self, context: torch.Tensor, z: torch.Tensor, num_frames: int, keep: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``z`` with the latent frames ``context`` (a whole chunk's) in front of it, as one causal run.

        Returns ``(tail, frames)``: the last ``keep`` frames decoded for ``context`` in this run and the
        ``num_frames`` frames of ``z`` (its encode padding dropped), ``[B, in_out_channels, n, H, W]`` each.
        """
        x = self.decoder(self.post_quant_conv(torch.cat([context, z], dim=2)))
        split = context.shape[2] * self.time_downsample_factor
        return x[:, :, split - keep : split], x[:, :, split + self.time_padding(num_frames) :]
