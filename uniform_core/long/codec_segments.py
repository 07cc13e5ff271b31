"""The audio codec over a long clip, one window-sized segment at a time.

The audio VAE and vocoder are convolutional over time, so a segment decoded (or encoded) on its own differs from
the whole clip's near its edges. Each segment is therefore run with ``context`` latent steps of the clip on both
sides and only its middle is kept: the result matches the whole-clip run (to float rounding once the context
covers the networks' receptive field) with the memory of one window. The waveform is levelled once for the whole
clip (as :meth:`AudioCodec.encode` does per call), so quiet passages stay quiet relative to loud ones.
"""

from __future__ import annotations

import torch

from ..codecs.audio import AudioCodec
from ..codecs.mel import normalize_waveform
from ..errors import InputError


def segments(length: int, span: int, context: int) -> list[tuple[int, int, int, int]]:
    """(lo, hi, start, stop) per segment of a ``length``-step latent: steps start..stop are kept from the run over
    lo..hi, which adds up to ``context`` steps each side and is at most ``span`` steps long. A latent of at most
    ``span`` steps is one segment, run whole."""
    if not 0 <= 2 * context < span:
        raise InputError(f"segment context {context} must leave room in a span of {span} latent steps")
    if length <= span:
        return [(0, length, 0, length)]
    step = span - 2 * context
    out = []
    for start in range(0, length, step):
        stop = min(start + step, length)
        out.append((max(0, start - context), min(length, stop + context), start, stop))
    return out


@torch.no_grad()
def decode_audio_long(codec: AudioCodec, z: torch.Tensor, span: int, context: int) -> torch.Tensor:
    """Waveforms (B, L * 640) float32 on the CPU from the scaled audio latent ``z`` (B, 8, L, 16), decoded in
    segments of at most ``span`` latent steps with ``context`` steps of overlap (see the module docstring)."""
    hop = codec.samples_per_latent_step
    out = torch.empty(z.shape[0], z.shape[2] * hop)
    for lo, hi, start, stop in segments(z.shape[2], span, context):
        wave = codec.decode(z[:, :, lo:hi]).float().cpu()
        out[:, start * hop : stop * hop] = wave[:, (start - lo) * hop : (stop - lo) * hop]
    return out


@torch.no_grad()
def encode_audio_long(codec: AudioCodec, waveform: torch.Tensor, span: int, context: int) -> torch.Tensor:
    """The scaled posterior-mean latent (1, 8, N / 640, 16) of a mono 16 kHz ``waveform`` (N,), N a multiple of
    640, levelled once as a whole and encoded in segments (see the module docstring)."""
    hop = codec.samples_per_latent_step
    if waveform.dim() != 1 or waveform.shape[0] % hop or waveform.shape[0] == 0:
        raise InputError(f"waveform must be (N,) with N a positive multiple of {hop}; got {tuple(waveform.shape)}")
    levelled = normalize_waveform(waveform.float().unsqueeze(0))
    param = next(codec.vae.parameters())
    length = waveform.shape[0] // hop
    out = torch.empty(1, codec.latent_channels, length, codec.latent_width)
    for lo, hi, start, stop in segments(length, span, context):
        mel = codec.mel(levelled[:, lo * hop : hi * hop].to(param.device))
        z = codec.vae.encode(mel.to(param.dtype)).mode() * codec.scaling_factor
        out[:, :, start:stop] = z[:, :, start - lo : stop - lo].float().cpu()
    return out
