"""Video VAE = Open-Sora VAE v1.2: a frame-wise 2D VAE (SDXL-VAE via diffusers) followed by a causal temporal VAE.

Pixels ``[B, 3, T, H, W]`` in [-1, 1] become latents ``[B, 4, T', H/8, W/8]``: every frame is encoded by the 2D VAE
(scaled by 0.18215), the 2D latents are cut into 17-frame micro-chunks and each chunk is compressed 4x in time by
the temporal VAE (17 -> 5 latent frames; a chunk is padded in front on its own), and the result is normalised per
channel with ``(z - shift) / scale``. Decoding needs the pixel frame count because padding is lost in the latent.
Both directions compute what Open-Sora's ``VideoAutoencoderPipeline`` computes: the decoder's output is returned
unclamped (it may overshoot [-1, 1]; clamp where it becomes pixels), and a sampled encode draws its noise in the
reference's order (every 2D micro-batch first, then each chunk's temporal noise), so a seed gives its latents.

Memory: the 2D VAE runs on ``micro_batch_size`` frames at a time and the temporal VAE on one micro-chunk at a time,
writing into preallocated outputs; beyond its output, encoding holds the clip's 2D latents (1/48 of its pixels) and
decoding one chunk. Module names (``spatial_vae.module.*``, ``temporal_vae.*``, ``scale``, ``shift``) follow the
reference pipeline, so ``hpcai-tech/OpenSora-VAE-v1.2`` loads key for key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from .. import checks
from ..checkpoint import load_matching, load_state_dict_file, read_component_config, read_metadata, save_component
from ..empty_init import empty_init
from ..errors import CheckpointError, InputError
from .temporal_vae import TemporalVAE
from .video_chunks import check_join, decode_chunks
from .video_vae_config import PRESETS, VideoVAEConfig, autoencoder_kl_args

KIND = "video_vae"
OPENSORA_PREFIXES = ("spatial_vae.module.", "temporal_vae.")
EXPECTED_FILES = (
    "a UniForm video VAE file (.safetensors written by VideoVAE.save), an Open-Sora VAE v1.2 folder "
    "(config.json + model.safetensors, as in hpcai-tech/OpenSora-VAE-v1.2) or a bare .safetensors with the "
    "Open-Sora VAE v1.2 keys (spatial_vae.module.*, temporal_vae.*, scale, shift)"
)
RANGE_TOLERANCE = 0.5  # resampling overshoot past [-1, 1] is fine; frames in 0..255 are not


class SpatialVAE(nn.Module):
    """Frame-wise diffusers ``AutoencoderKL`` run on ``micro_batch_size`` frames per call (Open-Sora's wrapper)."""

    def __init__(self, config: VideoVAEConfig):
        super().__init__()
        from diffusers import AutoencoderKL  # here, not at import (seconds)

        unknown = sorted(set(config.spatial) - autoencoder_kl_args())
        if unknown:
            raise InputError(f"VideoVAEConfig.spatial has arguments AutoencoderKL does not take: {unknown}")
        self.module = AutoencoderKL(**config.spatial)
        self.micro_batch_size = config.micro_batch_size
        self.latent_scale = config.spatial_scale
        self.latent_channels, self.downsample = config.in_out_channels, config.spatial_downsample

    def encode(
        self, x: torch.Tensor, deterministic: bool, generator: torch.Generator | None, device, dtype
    ) -> torch.Tensor:
        """``x`` ``[B, 3, T, H, W]`` (any device) -> scaled 2D latents ``[B, C, T, H/8, W/8]`` on ``device``:
        posterior means, or samples drawn micro-batch by micro-batch over the ``(B T)`` frames as the reference."""
        frames = rearrange(x, "B C T H W -> (B T) C H W")
        n, _, H, W = frames.shape
        out = torch.empty(
            n, self.latent_channels, H // self.downsample, W // self.downsample, device=device, dtype=dtype
        )
        for start in range(0, frames.shape[0], self.micro_batch_size):
            part = frames[start : start + self.micro_batch_size].to(device=device, dtype=dtype)
            posterior = self.module.encode(part).latent_dist
            latent = posterior.mean if deterministic else posterior.sample(generator=generator)
            out[start : start + part.shape[0]] = latent * self.latent_scale
        return rearrange(out, "(B T) C h w -> B C T h w", B=x.shape[0])

    def decode_into(self, z: torch.Tensor, out: torch.Tensor) -> None:
        """Decode ``z`` ``[B, C, T, h, w]`` into ``out`` ``[B, 3, T, H, W]`` (a view), unclamped."""
        for b in range(z.shape[0]):
            for start in range(0, z.shape[2], self.micro_batch_size):
                stop = min(start + self.micro_batch_size, z.shape[2])
                frames = rearrange(z[b, :, start:stop], "C T h w -> T C h w") / self.latent_scale
                out[b, :, start:stop] = rearrange(self.module.decode(frames).sample, "T C H W -> C T H W")


class VideoVAE(nn.Module):
    """Open-Sora VAE v1.2 pipeline: ``encode`` pixels to normalised latents, ``decode`` them back.

    ``encode(frames [B, 3, T, H, W] in [-1, 1]) -> [B, 4, latent_frames(T), H/8, W/8]``;
    ``decode(z, num_frames) -> [B, 3, num_frames, H, W]``, about [-1, 1] and unclamped. Loaded models come frozen
    (eval mode, no gradients), as UniForm uses them; call ``requires_grad_(True)`` to train one.
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
        checks.integer(num_frames, "num_frames", 1)
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
        (the global RNG when None) in the reference's order: the 2D noise of every frame, then the temporal noise of
        each chunk, drawn in float32 on the generator's device (the CPU when None) as ``torch.randn`` does there.
        On the CPU, ``torch.Generator().manual_seed(s)`` gives the latents Open-Sora gives after
        ``torch.manual_seed(s)``. ``T' = latent_frames(T)``.
        """
        self._check_frames(frames)
        cfg, device, dtype = self.config, self.scale.device, self.scale.dtype
        B, _, T, H, W = frames.shape
        d = cfg.spatial_downsample
        spatial = self.spatial_vae.encode(frames, deterministic, generator, device, dtype)
        z = torch.empty(B, cfg.latent_channels, self.latent_frames(T), H // d, W // d, device=device, dtype=dtype)
        for start in range(0, T, cfg.micro_frame_size):
            mean, logvar = self.temporal_vae.encode(spatial[:, :, start : start + cfg.micro_frame_size])
            if not deterministic:
                noise_device = generator.device if generator is not None else torch.device("cpu")
                noise = torch.randn(mean.shape, generator=generator, device=noise_device, dtype=torch.float32)
                mean = mean + torch.exp(0.5 * logvar) * noise.to(device=device, dtype=dtype)
            first = start // cfg.micro_frame_size * cfg.latent_chunk_frames
            z[:, :, first : first + mean.shape[2]] = mean
        return (z - self.shift) / self.scale

    def decode(self, z: torch.Tensor, num_frames: int, join: str = "separate") -> torch.Tensor:
        """Latents ``[B, 4, T', h, w]`` -> pixels ``[B, 3, num_frames, 8h, 8w]``, about [-1, 1], on this module.

        As Open-Sora's ``VideoAutoencoderPipeline.decode``, the output is not clamped: a decoder may overshoot
        [-1, 1], and only the conversion to pixels (IMAGE 0..1, uint8) clamps. ``num_frames`` is the pixel length that
        was encoded (it must give ``T'`` latent frames). One 5-frame latent chunk is decoded at a time into a
        preallocated output. ``join``: how chunks meet (:mod:`.video_chunks`); the default ``"separate"`` is
        Open-Sora's per-chunk decode, which parity with the reference needs.
        """
        self.check_latents(z, num_frames)
        check_join(join)
        B, _, _, h, w = z.shape
        d = self.config.spatial_downsample
        out = self.scale.new_empty(B, self.config.image_channels, num_frames, h * d, w * d)
        for start, pixels in decode_chunks(self, z, num_frames, join):
            out[:, :, start : start + pixels.shape[2]] = pixels
            del pixels  # freed before the next chunk decodes
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

    def check_latents(self, z, num_frames) -> None:
        """Refuse latents that are not ``[B, 4, latent_frames(num_frames), h, w]`` and finite."""
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

    ``path``: a UniForm video VAE file; an Open-Sora VAE folder (config.json + model.safetensors); a bare
    safetensors with Open-Sora keys, read with the Open-Sora ``config.json`` beside it when there is one (as in
    an HF folder) and as the opensora-v1.2 preset otherwise.
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
    if _is_opensora_config(path.parent / "config.json"):
        return _load_opensora_weights(path.parent / "config.json", path, device, dtype)
    state = load_state_dict_file(path)
    if not any(key.startswith(OPENSORA_PREFIXES) for key in state):
        raise CheckpointError(
            f"{path} holds no Open-Sora VAE keys (first keys: {sorted(state)[:3]}); expected {EXPECTED_FILES}"
        )
    try:
        return _build_frozen(PRESETS["opensora-v1.2"], state, f"Open-Sora VAE file {path}", device, dtype)
    except CheckpointError as e:
        raise CheckpointError(
            f"{e}. With no Open-Sora config.json beside it, the file was read as the 'opensora-v1.2' preset (the "
            "hpcai-tech/OpenSora-VAE-v1.2 config); for another configuration, put its VideoAutoencoderPipeline "
            f"config.json beside the file, in {str(path.parent)!r}"
        ) from e


def _load_opensora_folder(folder: Path, device, dtype) -> VideoVAE:
    config_file, weights = folder / "config.json", folder / "model.safetensors"
    missing = [p.name for p in (config_file, weights) if not p.is_file()]
    if missing:
        raise CheckpointError(
            f"video VAE folder {str(folder)!r} lacks {', '.join(missing)}; expected {EXPECTED_FILES}"
        )
    return _load_opensora_weights(config_file, weights, device, dtype)


def _load_opensora_weights(config_file: Path, weights: Path, device, dtype) -> VideoVAE:
    try:
        config = VideoVAEConfig.from_opensora_json(json.loads(config_file.read_text()), config_file.parent)
    except (json.JSONDecodeError, InputError) as e:
        raise CheckpointError(
            f"{config_file} is not an Open-Sora VideoAutoencoderPipeline config: {e}; expected {EXPECTED_FILES}"
        ) from e
    what = f"Open-Sora VAE {weights} (with the config {config_file})"
    return _build_frozen(config, load_state_dict_file(weights), what, device, dtype)


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
