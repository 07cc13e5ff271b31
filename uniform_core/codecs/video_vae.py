"""Video VAE = Open-Sora VAE v1.2: a frame-wise 2D VAE (SDXL-VAE via diffusers) followed by a causal temporal VAE.

Pixels ``[B, 3, T, H, W]`` in [-1, 1] become latents ``[B, 4, T', H/8, W/8]``: every frame is encoded by the 2D VAE
(scaled by 0.18215), the 2D latents are cut into 17-frame micro-chunks and each chunk is compressed 4x in time by
the temporal VAE (17 -> 5 latent frames; a chunk is padded in front on its own), and the result is normalised per
channel with ``(z - shift) / scale``. Decoding needs the pixel frame count because padding is lost in the latent.

Memory: both directions walk the clip one micro-chunk at a time and run the 2D VAE on ``micro_batch_size`` frames
at a time, writing into one preallocated output, so the working memory is that of one chunk whatever the length.
Module names (``spatial_vae.module.*``, ``temporal_vae.*``, ``scale``, ``shift``) follow the reference pipeline, so
``hpcai-tech/OpenSora-VAE-v1.2`` loads key for key.
"""

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

import torch
from einops import rearrange
from torch import nn

from ..checkpoint import load_matching, load_state_dict_file, read_component_config, read_metadata, save_component
from ..empty_init import empty_init
from ..errors import CheckpointError, InputError
from .temporal_vae import TemporalVAE

logger = logging.getLogger(__name__)

KIND = "video_vae"
OPENSORA_PREFIXES = ("spatial_vae.module.", "temporal_vae.")
EXPECTED_FILES = (
    "a UniForm video VAE file (.safetensors written by VideoVAE.save), an Open-Sora VAE v1.2 folder "
    "(config.json + model.safetensors, as in hpcai-tech/OpenSora-VAE-v1.2) or a bare .safetensors with the "
    "Open-Sora VAE v1.2 keys (spatial_vae.module.*, temporal_vae.*, scale, shift)"
)
RANGE_TOLERANCE = 0.5  # resampling overshoot past [-1, 1] is fine; frames in 0..255 are not

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
def _autoencoder_kl_args() -> frozenset[str]:
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
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"VideoVAEConfig.{name} must be a positive integer; got {value!r}")

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
            return {k: v for k, v in found.items() if k in _autoencoder_kl_args()}
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


class SpatialVAE(nn.Module):
    """Frame-wise diffusers ``AutoencoderKL`` run on ``micro_batch_size`` frames per call (Open-Sora's wrapper)."""

    def __init__(self, config: VideoVAEConfig):
        super().__init__()
        from diffusers import AutoencoderKL  # here, not at import (seconds)

        unknown = sorted(set(config.spatial) - _autoencoder_kl_args())
        if unknown:
            raise InputError(f"VideoVAEConfig.spatial has arguments AutoencoderKL does not take: {unknown}")
        self.module = AutoencoderKL(**config.spatial)
        self.micro_batch_size = config.micro_batch_size
        self.latent_scale = config.spatial_scale

    def encode(self, x: torch.Tensor, deterministic: bool, generator: torch.Generator | None) -> torch.Tensor:
        """``[B, 3, T, H, W]`` -> scaled 2D latents ``[B, C, T, H/8, W/8]`` (posterior mean or a sample)."""
        frames = rearrange(x, "B C T H W -> (B T) C H W")
        parts = []
        for start in range(0, frames.shape[0], self.micro_batch_size):
            posterior = self.module.encode(frames[start : start + self.micro_batch_size]).latent_dist
            parts.append(posterior.mean if deterministic else posterior.sample(generator=generator))
        return rearrange(torch.cat(parts) * self.latent_scale, "(B T) C H W -> B C T H W", B=x.shape[0])

    def decode_into(self, z: torch.Tensor, out: torch.Tensor) -> None:
        """Decode ``z`` ``[B, C, T, h, w]`` into ``out`` ``[B, 3, T, H, W]`` (a view), clamped to [-1, 1]."""
        for b in range(z.shape[0]):
            for start in range(0, z.shape[2], self.micro_batch_size):
                stop = min(start + self.micro_batch_size, z.shape[2])
                frames = rearrange(z[b, :, start:stop], "C T h w -> T C h w") / self.latent_scale
                pixels = self.module.decode(frames).sample.clamp(-1, 1)
                out[b, :, start:stop] = rearrange(pixels, "T C H W -> C T H W")


class VideoVAE(nn.Module):
    """Open-Sora VAE v1.2 pipeline: ``encode`` pixels to normalised latents, ``decode`` them back.

    ``encode(frames [B, 3, T, H, W] in [-1, 1]) -> [B, 4, latent_frames(T), H/8, W/8]``;
    ``decode(z, num_frames) -> [B, 3, num_frames, H, W]`` in [-1, 1]. Loaded models come frozen (eval mode, no
    gradients), as UniForm uses them; call ``requires_grad_(True)`` to train one.
    """

    def __init__(self, config: VideoVAEConfig):
        super().__init__()
        self.config = config
        self.spatial_vae = SpatialVAE(config)
        self.temporal_vae = TemporalVAE(**config.temporal_kwargs())
        self.register_buffer("scale", torch.tensor(config.scale).view(1, -1, 1, 1, 1))
        self.register_buffer("shift", torch.tensor(config.shift).view(1, -1, 1, 1, 1))

    @classmethod
    def from_preset(cls, name: str) -> VideoVAE:
        if name not in PRESETS:
            raise InputError(f"video VAE preset must be one of {', '.join(PRESETS)}; got {name!r}")
        return cls(PRESETS[name])

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for ``num_frames`` pixel frames: each 17-frame chunk gives 5, a shorter tail ceil(n/4)."""
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise InputError(f"num_frames must be a positive integer; got {num_frames!r}")
        full, rest = divmod(num_frames, self.config.micro_frame_size)
        return full * self.config.latent_chunk_frames + (self.temporal_vae.latent_frames(rest) if rest else 0)

    def set_normalization(self, shift: tuple[float, ...], scale: tuple[float, ...]) -> None:
        """Set the per-channel latent ``shift``/``scale`` (e.g. measured after training), in buffers and config."""
        self.config = dataclasses.replace(self.config, shift=tuple(shift), scale=tuple(scale))
        self.shift.copy_(torch.tensor(self.config.shift).view(1, -1, 1, 1, 1))
        self.scale.copy_(torch.tensor(self.config.scale).view(1, -1, 1, 1, 1))

    def encode(
        self, frames: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Pixels ``[B, 3, T, H, W]`` in [-1, 1] (any device) -> latents ``[B, 4, T', H/8, W/8]`` on this module.

        ``deterministic`` takes the posterior means of both stages; otherwise both are sampled with ``generator``
        as in the reference. ``T' = latent_frames(T)``.
        """
        self._check_frames(frames)
        cfg, device, dtype = self.config, self.scale.device, self.scale.dtype
        B, _, T, H, W = frames.shape
        d = cfg.spatial_downsample
        z = torch.empty(B, cfg.latent_channels, self.latent_frames(T), H // d, W // d, device=device, dtype=dtype)
        for start in range(0, T, cfg.micro_frame_size):
            chunk = frames[:, :, start : start + cfg.micro_frame_size].to(device=device, dtype=dtype)
            mean, logvar = self.temporal_vae.encode(self.spatial_vae.encode(chunk, deterministic, generator))
            if not deterministic:
                from diffusers.utils.torch_utils import randn_tensor

                noise = randn_tensor(mean.shape, generator=generator, device=device, dtype=dtype)
                mean = mean + torch.exp(0.5 * logvar) * noise
            first = start // cfg.micro_frame_size * cfg.latent_chunk_frames
            z[:, :, first : first + mean.shape[2]] = mean
        return (z - self.shift) / self.scale

    def decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Latents ``[B, 4, T', h, w]`` -> pixels ``[B, 3, num_frames, 8h, 8w]`` in [-1, 1] on this module.

        ``num_frames`` is the pixel length that was encoded (it must give ``T'`` latent frames). One 5-frame latent
        chunk is decoded at a time into a preallocated output.
        """
        self._check_latents(z, num_frames)
        cfg, device, dtype = self.config, self.scale.device, self.scale.dtype
        B, _, T_lat, h, w = z.shape
        d = cfg.spatial_downsample
        out = torch.empty(B, cfg.image_channels, num_frames, h * d, w * d, device=device, dtype=dtype)
        for index, first in enumerate(range(0, T_lat, cfg.latent_chunk_frames)):
            chunk = z[:, :, first : first + cfg.latent_chunk_frames].to(device=device, dtype=dtype)
            start = index * cfg.micro_frame_size
            length = min(cfg.micro_frame_size, num_frames - start)
            spatial = self.temporal_vae.decode(chunk * self.scale + self.shift, num_frames=length)
            self.spatial_vae.decode_into(spatial, out[:, :, start : start + length])
        return out

    def save(self, path: str | os.PathLike) -> None:
        """One self-describing safetensors file (weights + config)."""
        save_component(self, path, KIND, self.config.to_dict())

    @classmethod
    def load(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> VideoVAE:
        """A file written by :meth:`save`, frozen, on ``device`` in ``dtype``."""
        try:
            config = VideoVAEConfig.from_dict(read_component_config(path, KIND))
        except InputError as e:
            raise CheckpointError(f"{path}: its config does not describe a video VAE: {e}") from e
        return _build_frozen(config, load_state_dict_file(path), f"video VAE file {path}", device, dtype)

    def _check_frames(self, frames) -> None:
        cfg = self.config
        shape = f"[B, {cfg.image_channels}, T, H, W]"
        if not isinstance(frames, torch.Tensor) or not frames.is_floating_point():
            raise InputError(f"video frames must be a float tensor {shape} in [-1, 1]; got {_describe(frames)}")
        if frames.ndim != 5 or frames.shape[1] != cfg.image_channels:
            raise InputError(f"video frames must have shape {shape}; got {tuple(frames.shape)}")
        if min(frames.shape) < 1:
            raise InputError(f"video frames must not be empty; got shape {tuple(frames.shape)}")
        H, W, d = frames.shape[3], frames.shape[4], cfg.spatial_downsample
        if H % d or W % d:
            raise InputError(f"video height and width must be multiples of {d} px; got {H}x{W}")
        low, high = (v.item() for v in torch.aminmax(frames))  # one pass, no clip-sized temporary
        if not (math.isfinite(low) and math.isfinite(high)):
            raise InputError("video frames contain NaN or infinite values")
        if max(-low, high) > 1 + RANGE_TOLERANCE:
            raise InputError(
                f"video frames must be in [-1, 1] (IMAGE 0..1 maps as x * 2 - 1); got [{low:.3g}, {high:.3g}]"
            )

    def _check_latents(self, z, num_frames) -> None:
        shape = f"[B, {self.config.latent_channels}, T', h, w]"
        if not isinstance(z, torch.Tensor) or not z.is_floating_point():
            raise InputError(f"video latents must be a float tensor {shape}; got {_describe(z)}")
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels or min(z.shape) < 1:
            raise InputError(f"video latents must have shape {shape}; got {tuple(z.shape)}")
        expected = self.latent_frames(num_frames)
        if z.shape[2] != expected:
            raise InputError(
                f"num_frames={num_frames} gives {expected} latent frames ({self.config.micro_frame_size}-frame chunks "
                f"-> {self.config.latent_chunk_frames}), but the latents have {z.shape[2]}"
            )
        if not all(math.isfinite(v.item()) for v in torch.aminmax(z)):
            raise InputError("video latents contain NaN or infinite values")


def load_video_vae(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> VideoVAE:
    """Load a video VAE, frozen, on ``device`` in ``dtype``.

    ``path``: a UniForm video VAE file; an Open-Sora VAE v1.2 folder (config.json + model.safetensors), or the
    model.safetensors inside one; or a bare safetensors with Open-Sora keys (read as the opensora-v1.2 preset).
    """
    path = Path(path)
    if path.is_dir():
        return _load_opensora_folder(path, device, dtype)
    if not path.is_file():
        raise CheckpointError(f"video VAE {str(path)!r} does not exist; expected {EXPECTED_FILES}")
    try:
        meta = read_metadata(path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; expected {EXPECTED_FILES}") from e
    if "uniform_component" in meta:
        return VideoVAE.load(path, device, dtype)
    if path.name == "model.safetensors" and _is_opensora_config(path.parent / "config.json"):
        return _load_opensora_folder(path.parent, device, dtype)  # a file picked inside an HF folder
    state = load_state_dict_file(path)
    if not any(key.startswith(OPENSORA_PREFIXES) for key in state):
        raise CheckpointError(
            f"{path} holds no Open-Sora VAE keys (first keys: {sorted(state)[:3]}); expected {EXPECTED_FILES}"
        )
    return _build_frozen(PRESETS["opensora-v1.2"], state, f"Open-Sora VAE file {path}", device, dtype)


def _load_opensora_folder(folder: Path, device, dtype) -> VideoVAE:
    config_file, weights = folder / "config.json", folder / "model.safetensors"
    missing = [p.name for p in (config_file, weights) if not p.is_file()]
    if missing:
        raise CheckpointError(
            f"video VAE folder {str(folder)!r} lacks {', '.join(missing)}; expected {EXPECTED_FILES}"
        )
    try:
        config = VideoVAEConfig.from_opensora_json(json.loads(config_file.read_text()), folder)
    except (json.JSONDecodeError, InputError) as e:
        raise CheckpointError(
            f"{config_file} is not an Open-Sora VideoAutoencoderPipeline config: {e}; expected {EXPECTED_FILES}"
        ) from e
    return _build_frozen(config, load_state_dict_file(weights), f"Open-Sora VAE {weights}", device, dtype)


def _is_opensora_config(config_file: Path) -> bool:
    if not config_file.is_file():
        return False
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError:  # some other tool's file; the weights are then read as a bare checkpoint
        return False
    return isinstance(config, dict) and config.get("model_type") == "VideoAutoencoderPipeline"


def _build_frozen(config: VideoVAEConfig, state: dict, what: str, device, dtype) -> VideoVAE:
    """Build without random init (meta device), take the tensors of ``state`` (exact keys), freeze."""
    with empty_init():
        model = VideoVAE(config)
    load_matching(model, state, what, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
