"""Configs of AudioLDM's audio codec: the mel VAE (diffusers ``AutoencoderKL`` arguments) and the HiFi-GAN
vocoder (transformers ``SpeechT5HifiGanConfig`` fields), with their presets. Kept apart from the modules so a config
can be read from a ``config.json`` or a file's metadata without building anything."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..errors import CheckpointError


def _tuples(value):
    """JSON lists back to the nested tuples a frozen config holds."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _from_dict(cls, data: dict, what: str):
    """Build config ``cls`` from the known keys of ``data`` (e.g. a diffusers/transformers config.json)."""
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{k: _tuples(v) for k, v in data.items() if k in names})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{what} has a config that does not describe a {cls.__name__}: {e}") from e


@dataclass(frozen=True)
class AudioVAEConfig:
    """diffusers ``AutoencoderKL`` arguments for a mel VAE; ``scaling_factor`` is learnt per checkpoint."""

    block_out_channels: tuple[int, ...] = (128, 256, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    latent_channels: int = 8
    in_channels: int = 1
    out_channels: int = 1
    act_fn: str = "silu"
    sample_size: int = 512
    scaling_factor: float = 0.9227914214134216

    @property
    def downsample(self) -> int:
        """Factor by which the latent is smaller than the mel, in time and in mel bins."""
        return 2 ** (len(self.block_out_channels) - 1)

    def diffusers_kwargs(self) -> dict:
        n = len(self.block_out_channels)
        return {
            **asdict(self),
            "down_block_types": ("DownEncoderBlock2D",) * n,
            "up_block_types": ("UpDecoderBlock2D",) * n,
        }

    @classmethod
    def from_dict(cls, data: dict, what: str = "audio VAE config") -> AudioVAEConfig:
        for key, block in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            if any(b != block for b in data.get(key, ())):
                raise CheckpointError(f"{what}: {key} must all be {block!r}; got {data[key]}")
        return _from_dict(cls, data, what)


@dataclass(frozen=True)
class VocoderConfig:
    """transformers ``SpeechT5HifiGanConfig`` arguments; the product of ``upsample_rates`` is the mel hop."""

    model_in_dim: int = 64
    sampling_rate: int = 16_000
    upsample_initial_channel: int = 1024
    upsample_rates: tuple[int, ...] = (5, 4, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    leaky_relu_slope: float = 0.1
    initializer_range: float = 0.01
    normalize_before: bool = False

    @property
    def hop_length(self) -> int:
        """Waveform samples per mel frame."""
        return math.prod(self.upsample_rates)

    @classmethod
    def from_dict(cls, data: dict, what: str = "vocoder config") -> VocoderConfig:
        return _from_dict(cls, data, what)


AUDIO_VAE_PRESETS: dict[str, AudioVAEConfig] = {
    "audioldm-s-full": AudioVAEConfig(),
    "tiny": AudioVAEConfig(block_out_channels=(32, 32, 32), layers_per_block=1, norm_num_groups=8, scaling_factor=1.0),
}
VOCODER_PRESETS: dict[str, VocoderConfig] = {
    "audioldm-s-full": VocoderConfig(),
    "tiny": VocoderConfig(upsample_initial_channel=32),
    # 3 upsampling stages (8, 5, 4) and HiFi-GAN V3's lighter residual stacks: 16 channels at 16 kHz where "tiny"
    # has 1 (too few to make a tone), at about the same CPU cost per step; 0.54 M parameters.
    "small": VocoderConfig(
        upsample_initial_channel=128,
        upsample_rates=(8, 5, 4),
        upsample_kernel_sizes=(16, 10, 8),
        resblock_kernel_sizes=(3, 5, 7),
        resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)),
    ),
}
