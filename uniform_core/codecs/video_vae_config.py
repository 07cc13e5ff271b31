"""Configuration of the Open-Sora VAE v1.2 pipeline: one frozen dataclass, its presets, and its reading from an
Open-Sora ``VideoAutoencoderPipeline`` config.json (``hpcai-tech/OpenSora-VAE-v1.2``)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import checks
from ..errors import InputError

logger = logging.getLogger(__name__)

SDXL_VAE = {  # the 2D VAE of Open-Sora VAE v1.2 (PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers, subfolder vae)
    "act_fn": "silu",
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "force_upcast": False,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.13025,  # diffusers' own factor, unused: the pipeline scales by spatial_scale
    "up_block_types": ("UpDecoderBlock2D",) * 4,
}
TINY_2D_VAE = {
    **SDXL_VAE,
    "block_out_channels": (32, 32, 32, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
}
TEMPORAL_FIELDS = (
    "in_out_channels",
    "latent_embed_dim",
    "embed_dim",
    "filters",
    "num_res_blocks",
    "channel_multipliers",
    "temporal_downsample",
    "num_groups",
)
# Constructor defaults of the reference ``VAE_Temporal`` class (note its temporal_downsample differs from _SD's).
REFERENCE_VAE_TEMPORAL = {
    "in_out_channels": 4,
    "latent_embed_dim": 4,
    "embed_dim": 4,
    "filters": 128,
    "num_res_blocks": 4,
    "channel_multipliers": (1, 2, 2, 4),
    "temporal_downsample": (True, True, False),
    "num_groups": 32,
}


@functools.cache
def autoencoder_kl_args() -> frozenset[str]:
    """Keyword arguments of diffusers ``AutoencoderKL``."""
    from diffusers import AutoencoderKL  # here, not at import: diffusers pulls in torch._dynamo (seconds)

    return frozenset(inspect.signature(AutoencoderKL.__init__).parameters) - {"self"}


def _tuples(value):
    """JSON lists back to tuples, recursively, so configs compare equal after a round trip."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class VideoVAEConfig:
    """Open-Sora VAE v1.2 pipeline settings; temporal field names are ``VAE_Temporal``'s constructor arguments.

    ``spatial``: keyword arguments of diffusers ``AutoencoderKL``. ``micro_frame_size``: pixel frames per temporal
    chunk. ``micro_batch_size``: frames per 2D VAE call. ``spatial_scale``: factor on 2D latents.
    ``shift``/``scale``: per-channel latent normalisation, ``z = (z_temporal - shift) / scale``.
    """

    spatial: dict = field(default_factory=lambda: dict(SDXL_VAE))
    in_out_channels: int = 4
    latent_embed_dim: int = 4
    embed_dim: int = 4
    filters: int = 128
    num_res_blocks: int = 4
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 4)
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    num_groups: int = 32
    micro_frame_size: int = 17
    micro_batch_size: int = 4
    spatial_scale: float = 0.18215
    shift: tuple[float, ...] = (-0.10, 0.34, 0.27, 0.98)
    scale: tuple[float, ...] = (3.85, 2.32, 2.33, 3.06)

    def __post_init__(self):
        if not isinstance(self.spatial, dict):
            raise InputError(f"VideoVAEConfig.spatial must be a dict of AutoencoderKL arguments; got {self.spatial!r}")
        object.__setattr__(self, "spatial", {k: _tuples(v) for k, v in self.spatial.items()})
        for name in ("channel_multipliers", "temporal_downsample", "shift", "scale"):
            object.__setattr__(self, name, _tuples(getattr(self, name)))
        if self.spatial.get("latent_channels", 4) != self.in_out_channels:
            raise InputError(
                f"VideoVAEConfig: the 2D VAE's latent_channels ({self.spatial.get('latent_channels', 4)}) must equal "
                f"the temporal VAE's in_out_channels ({self.in_out_channels})"
            )
        if len(self.temporal_downsample) != len(self.channel_multipliers) - 1:
            raise InputError(
                f"VideoVAEConfig.temporal_downsample needs {len(self.channel_multipliers) - 1} entries (one per level "
                f"transition of channel_multipliers {self.channel_multipliers}); got {self.temporal_downsample}"
            )
        for name in ("shift", "scale"):
            values = getattr(self, name)
            if len(values) != self.embed_dim:
                raise InputError(
                    f"VideoVAEConfig.{name} needs {self.embed_dim} values (one per latent channel); got {values!r}"
                )
        if any(s == 0 for s in self.scale):
            raise InputError(f"VideoVAEConfig.scale must not contain 0; got {self.scale!r}")
        for name in ("micro_frame_size", "micro_batch_size"):
            value = getattr(self, name)
            checks.integer(value, f"VideoVAEConfig.{name}", 1)

    @property
    def image_channels(self) -> int:
        return self.spatial.get("in_channels", 3)

    @property
    def latent_channels(self) -> int:
        return self.embed_dim

    @property
    def spatial_downsample(self) -> int:
        """Pixels per latent cell along H and W (every 2D down block but the last halves the size)."""
        return 2 ** (len(self.spatial.get("block_out_channels", (64,))) - 1)

    @property
    def time_downsample(self) -> int:
        return 2 ** sum(bool(d) for d in self.temporal_downsample)

    @property
    def latent_chunk_frames(self) -> int:
        """Latent frames of one full ``micro_frame_size`` chunk (17 -> 5 for v1.2)."""
        return math.ceil(self.micro_frame_size / self.time_downsample)

    def temporal_kwargs(self) -> dict:
        return {name: getattr(self, name) for name in TEMPORAL_FIELDS}

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> VideoVAEConfig:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InputError(f"unknown VideoVAEConfig fields {unknown}")
        return cls(**data)

    @classmethod
    def from_opensora_json(cls, config: dict, folder: str | os.PathLike | None = None) -> VideoVAEConfig:
        """Config of an Open-Sora ``VideoAutoencoderPipeline`` config.json (HF ``hpcai-tech/OpenSora-VAE-v1.2``).

        The file names its 2D VAE by hub id; unless that id is a local folder (relative to ``folder``) holding a
        diffusers config.json, the SDXL-VAE config that Open-Sora v1.2 uses is assumed (nothing is downloaded).
        ``vae_temporal`` is either ``VAE_Temporal_SD`` or ``VAE_Temporal`` with explicit arguments.
        """
        if not isinstance(config, dict):
            raise InputError(f"an Open-Sora VAE config must be a JSON object; got {type(config).__name__}")
        vae_2d, temporal = config.get("vae_2d") or {}, config.get("vae_temporal") or {}
        if vae_2d.get("type") != "VideoAutoencoderKL":
            raise InputError(f"vae_2d.type must be 'VideoAutoencoderKL'; got {vae_2d.get('type')!r}")
        if temporal.get("type") == "VAE_Temporal_SD":
            temporal_kwargs = cls().temporal_kwargs()
        elif temporal.get("type") == "VAE_Temporal":
            temporal_kwargs = {k: temporal.get(k, v) for k, v in REFERENCE_VAE_TEMPORAL.items()}
        else:
            raise InputError(
                f"vae_temporal.type must be 'VAE_Temporal_SD' or 'VAE_Temporal'; got {temporal.get('type')!r}"
            )
        if temporal.get("activation_fn", "swish") != "swish":
            raise InputError(f"vae_temporal.activation_fn must be 'swish'; got {temporal['activation_fn']!r}")
        if config.get("micro_frame_size") is None:
            raise InputError(
                "micro_frame_size is null (whole-clip temporal encoding); only chunked VAEs are supported"
            )
        base = cls()
        return cls(
            spatial=_spatial_config(vae_2d, folder),
            **temporal_kwargs,
            micro_frame_size=config["micro_frame_size"],
            micro_batch_size=vae_2d.get("micro_batch_size") or base.micro_batch_size,
            shift=config.get("shift", base.shift),
            scale=config.get("scale", base.scale),
        )


def _spatial_config(vae_2d: dict, folder: str | os.PathLike | None) -> dict:
    name = vae_2d.get("from_pretrained")
    if name and folder is not None:
        local = Path(folder, name, vae_2d.get("subfolder") or "", "config.json")
        if local.is_file():
            found = json.loads(local.read_text())
            return {k: v for k, v in found.items() if k in autoencoder_kl_args()}
    logger.info("2D VAE %r is not a local folder; using the SDXL-VAE config of Open-Sora v1.2", name)
    return dict(SDXL_VAE)


PRESETS = {
    "opensora-v1.2": VideoVAEConfig(),
    # 64x64 clips: still /8 spatial, 4 latent channels, 4x time, 17 -> 5; about 0.9M parameters.
    "tiny": VideoVAEConfig(
        spatial=TINY_2D_VAE,
        filters=16,
        num_res_blocks=1,
        channel_multipliers=(1, 1, 2, 2),
        num_groups=4,
        shift=(0.0, 0.0, 0.0, 0.0),
        scale=(1.0, 1.0, 1.0, 1.0),
    ),
}
