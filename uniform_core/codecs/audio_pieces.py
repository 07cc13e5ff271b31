"""The audio VAE's decoder over time pieces: memory beyond the mel stays that of one piece however long the clip,
and the mel equals the whole-clip decode to float rounding.

diffusers' ``Decoder`` is convolutional over time except for two couplings across the whole clip: the mid block's
self-attention and every GroupNorm's statistics (a mean and variance over all of time). So the latent-resolution
part (``conv_in`` and the mid block, attention included) runs whole, and the up path (up blocks, ``conv_norm_out``,
``conv_out``) runs in pieces with :func:`halo_steps` of context on each side, each run :data:`RUN_STEPS` long.
Each up-path GroupNorm normalises with the whole clip's statistics, gathered one norm at a time: a pass over the
pieces that stops at that norm and sums its input over the pieces' kept steps (the norms before it already fixed).
That costs one partial pass per norm (about half the norms' count in whole decodes), the price of exactness with
a whole-clip norm; a clip of up to :data:`RUN_STEPS` runs whole, as before.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import CheckpointError

RUN_STEPS = 100  # latent steps (4 s of audio) the up path decodes at once, halos included: its memory, not the clip's


class _Stop(Exception):
    """Ends a statistics pass at the norm it gathers for; nothing after it is needed."""


def halo_steps(decoder: nn.Module) -> int:
    """Latent steps on each side that can reach a kept output row through the up path's convolutions: each
    ``k``-tap convolution reaches ``k // 2`` rows at its own resolution, i.e. that many latent steps divided by its
    upsampling so far. Rounded up, plus one for the nearest-neighbour upsampling's alignment."""
    reach, scale = 0.0, 1
    for block in decoder.up_blocks:
        reach += sum(conv.kernel_size[0] // 2 for r in block.resnets for conv in (r.conv1, r.conv2)) / scale
        for up in block.upsamplers or ():
            scale *= 2
            reach += up.conv.kernel_size[0] // 2 / scale
    return math.ceil(reach + decoder.conv_out.kernel_size[0] // 2 / scale) + 1


def pieces(length: int, piece: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(lo, hi, start, stop) per piece of a ``length``-step sequence: steps start..stop are kept from a run over
    lo..hi, ``halo`` steps of context each side where the sequence has them (the vocoder's pieces too)."""
    return [
        (max(0, s - halo), min(length, s + piece + halo), s, min(s + piece, length)) for s in range(0, length, piece)
    ]


class _Norm:
    """One GroupNorm of the up path in a piece pass: ``sums`` gathers its input over the kept rows; ``stats``
    (mean, 1 / std per batch item and group) normalises with the whole clip's values."""

    def __init__(self, norm: nn.GroupNorm):
        self.norm, self.sums, self.stats = norm, [], None
        self.kept = (0, 0)  # the kept rows of the current piece, in latent steps from its start, and its length

    def gather(self, x: torch.Tensor) -> None:
        b, c, rows, w = x.shape
        rows //= self.kept[2]
        kept = x.view(b, self.norm.num_groups, c // self.norm.num_groups, -1, w)
        var, mean = torch.var_mean(
            kept[:, :, :, self.kept[0] * rows : self.kept[1] * rows], dim=(2, 3, 4), correction=0
        )
        count = torch.full_like(mean, (self.kept[1] - self.kept[0]) * rows * w * c // self.norm.num_groups)
        self.sums.append(torch.stack([count, mean, var]).double())  # merged in fix(): no piece-sized copy here
        raise _Stop

    def fix(self) -> None:
        """The whole clip's mean and variance from the pieces' (Chan et al.'s pairwise merge, in float64)."""
        count, mean, var = torch.stack(self.sums).unbind(1)
        total = count.sum(0)
        whole = (count * mean).sum(0) / total
        var = (count * (var + (mean - whole).square())).sum(0) / total
        self.stats = whole, (var + self.norm.eps).rsqrt()

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """GroupNorm with the fixed statistics, in place on one new tensor (a piece's memory, as F.group_norm)."""
        mean, inv_std = (s.to(x.dtype)[..., None] for s in self.stats)
        y = x.reshape(x.shape[0], self.norm.num_groups, -1) - mean
        y = y.mul_(inv_std).view(x.shape)
        if self.norm.affine:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = y.mul_(self.norm.weight.view(shape)).add_(self.norm.bias.view(shape))
        return y


@contextmanager
def _patched(norms: list[_Norm], gathering: _Norm | None):
    """Each norm's forward replaced for a pass: the fixed ones apply their stats, ``gathering`` gathers."""
    for n in norms:
        if n is gathering:
            n.norm.forward = n.gather
        elif n.stats is not None:
            n.norm.forward = n.apply
    try:
        yield
    finally:
        for n in norms:
            n.norm.__dict__.pop("forward", None)


def _up_path(decoder: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The decoder's forward after the mid block (diffusers' ``Decoder.forward``, no latent embeddings)."""
    for block in decoder.up_blocks:
        h = block(h)
    return decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(h)))


def _norms_in_order(decoder: nn.Module) -> list[nn.GroupNorm]:
    """The up path's GroupNorms in the order its forward calls them (resnets' norm1, norm2, then the final norm)."""
    inner = [m for block in decoder.up_blocks for r in block.resnets for m in (r.norm1, r.norm2)]
    return [*inner, decoder.conv_norm_out]


def decode_in_pieces(decoder: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """diffusers ``Decoder`` output ``(B, C_out, L * d, W * d)`` for the unscaled latent ``z`` ``(B, C, L, W)``
    (after ``post_quant_conv``), decoded as the module docstring says. A latent of at most :data:`RUN_STEPS` steps
    runs the whole decoder at once, bit for bit as before. Gradients flow (the audio VAE stage trains through it on
    1 s crops); the flat memory of long clips is that of a decode without them, as ``AudioCodec.decode`` runs."""
    length, halo = z.shape[2], halo_steps(decoder)
    if length <= RUN_STEPS:
        return decoder(z)
    piece = RUN_STEPS - 2 * halo
    if piece < 1:
        raise CheckpointError(
            f"the audio VAE decoder reaches {halo} latent steps each side, too many for runs of {RUN_STEPS}"
        )
    h = decoder.mid_block(decoder.conv_in(z))
    upscale = 2 ** sum(bool(b.upsamplers) for b in decoder.up_blocks)
    norms = [_Norm(n) for n in _norms_in_order(decoder)]
    runs = pieces(length, piece, halo)
    for gathering in [*norms, None]:
        out = None
        with _patched(norms, gathering):
            for lo, hi, start, stop in runs:
                if gathering is not None:
                    gathering.kept = (start - lo, stop - lo, hi - lo)
                try:
                    y = _up_path(decoder, h[:, :, lo:hi])
                except _Stop:
                    continue
                if out is None:
                    out = y.new_empty(y.shape[0], y.shape[1], length * upscale, y.shape[3])
                out[:, :, start * upscale : stop * upscale] = y[:, :, (start - lo) * upscale : (stop - lo) * upscale]
                del y  # freed before the next piece decodes
        if gathering is not None:
            gathering.fix()
    return out
