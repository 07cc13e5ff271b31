"""Live previews while sampling: the current x0 estimate of both modalities as one small picture, without a decoder.

As ComfyUI's ``latent_rgb_factors`` do for image models, the video latent goes through a linear map of its channels
to RGB and the audio latent through one of its channels to a log-mel level (a spectrogram strip). Both maps are
fitted by least squares to what the bundle's own VAEs decode from the latents of synthetic clips
(:func:`fit_preview_map`), and stored beside the bundle as ``preview.json`` (``uniform-av fit-preview``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from .atomic import write_text
from .errors import CheckpointError
from .tasks import VIDEO_DOWNSAMPLE

PREVIEW_FILE = "preview.json"
FIT_SEEDS = (0, 1, 2, 3)  # synthetic clips the maps are fitted on
HELDOUT_SEEDS = (1_000_000, 1_000_001)  # and checked on


@dataclass(frozen=True)
class PreviewMap:
    """Linear maps from latent channels to what the decoders make of them, per latent cell."""

    video_rgb: tuple[tuple[float, ...], ...]  # [video latent channels][R, G, B], RGB in [-1, 1] like the decoder
    video_bias: tuple[float, float, float]
    audio_level: tuple[float, ...]  # [audio latent channels] -> log-mel level of the cell (mean over 4x4 mel bins)
    audio_bias: float
    audio_range: tuple[float, float]  # log-mel levels drawn black and white (the fitting clips' 1st, 99th pct)

    def video_to_rgb(self, z: torch.Tensor) -> torch.Tensor:
        """Video latent ``(C, T, h, w)`` -> RGB ``(T, h, w, 3)`` about [-1, 1]."""
        w = torch.tensor(self.video_rgb, dtype=torch.float32)
        return rearrange(z.float().cpu(), "c t h w -> t h w c") @ w + torch.tensor(self.video_bias)

    def audio_to_level(self, z: torch.Tensor) -> torch.Tensor:
        """Audio latent ``(C, L, F)`` -> log-mel level ``(L, F)``."""
        w = torch.tensor(self.audio_level, dtype=torch.float32)
        return rearrange(z.float().cpu(), "c l f -> l f c") @ w + self.audio_bias


def preview_image(preview_map: PreviewMap, video: torch.Tensor, audio: torch.Tensor, frames: int = 4) -> torch.Tensor:
    """One picture of a clip's latents: ``frames`` video latent frames side by side (evenly spread over the clip)
    over a spectrogram strip of the whole sound (low pitches at the bottom).

    video: ``(C, T, h, w)``, audio: ``(C, L, F)`` latents of one item. Returns ``(H, W, 3)`` uint8, at about
    pixel scale (each latent cell drawn 8 px wide).
    """
    rgb = ((preview_map.video_to_rgb(video) + 1) / 2).clamp(0, 1)
    picked = torch.linspace(0, rgb.shape[0] - 1, min(frames, rgb.shape[0])).round().long()
    strip = rearrange(rgb[picked], "n h w c -> 1 c h (n w)")
    strip = F.interpolate(strip, scale_factor=VIDEO_DOWNSAMPLE, mode="bilinear", align_corners=False)[0]
    low, high = preview_map.audio_range
    level = ((preview_map.audio_to_level(audio) - low) / (high - low)).clamp(0, 1)
    level = rearrange(level.flip(-1), "l f -> 1 1 f l")  # time left to right, low frequencies at the bottom
    height = max(16, strip.shape[1] // 3)
    sound = F.interpolate(level, size=(height, strip.shape[2]), mode="bilinear", align_corners=False)[0]
    gap = torch.zeros(3, 2, strip.shape[2])
    picture = torch.cat([strip, gap, sound.expand(3, -1, -1)], dim=1)
    return (rearrange(picture, "c h w -> h w c") * 255).round().to(torch.uint8)


class LivePreview:
    """The sampler's ``preview`` callback: every ``every`` steps (and at the last) the first batch item's x0
    estimate as a picture, handed to ``show(step, total, image)``."""

    def __init__(self, preview_map: PreviewMap, every: int, show: Callable[[int, int, torch.Tensor], None]):
        self.preview_map, self.every, self.show = preview_map, every, show

    def __call__(self, step: int, total: int, video: torch.Tensor, audio: torch.Tensor) -> None:
        if step % self.every == 0 or step == total:
            self.show(step, total, preview_image(self.preview_map, video[0], audio[0]))


# ---- fitting ----------------------------------------------------------------------------------------------


@torch.no_grad()
def decoded_cells(video_vae, audio_codec, seed: int) -> tuple[torch.Tensor, ...]:
    """The latents of synthetic clip ``seed`` and what the VAEs decode from them, averaged over each latent cell.

    Returns (video latent cells ``[N, Cv]``, their decoded RGB ``[N, 3]`` in [-1, 1], audio latent cells
    ``[M, Ca]``, their decoded log-mel levels ``[M]``). A latent frame stands for the pixel frames it encodes
    (the first frame of a chunk alone, then 4 each).
    """
    from .train.synthetic import make_clip  # numpy rendering; only needed to fit

    clip = make_clip(seed)
    cfg, device = video_vae.config, video_vae.scale.device
    frames = rearrange(clip.frames, "t h w c -> 1 c t h w").to(device) * 2 - 1
    z = video_vae.encode(frames, deterministic=True)
    pixels = video_vae.decode(z, frames.shape[2]).float().cpu()[0]  # (3, T, H, W)
    per_chunk = torch.arange(cfg.micro_frame_size) * (cfg.latent_chunk_frames - 1)
    in_chunk = (per_chunk + cfg.micro_frame_size - 2) // (cfg.micro_frame_size - 1)  # ceil: 0, 1 1 1 1, 2 ...
    chunk = torch.arange(pixels.shape[1]) // cfg.micro_frame_size
    latent_of_frame = chunk * cfg.latent_chunk_frames + in_chunk[torch.arange(pixels.shape[1]) % cfg.micro_frame_size]
    pooled = F.avg_pool2d(pixels, cfg.spatial_downsample)  # (3, T, h, w)
    target = torch.zeros(3, z.shape[2], *pooled.shape[2:]).index_add_(1, latent_of_frame, pooled)
    target /= torch.bincount(latent_of_frame, minlength=z.shape[2]).view(1, -1, 1, 1)
    audio_z = audio_codec.encode(clip.waveform.view(1, -1).to(device), deterministic=True)
    mel = audio_codec.vae.decode(audio_z / audio_codec.scaling_factor).float().cpu()  # (1, 4L, 4F)
    d = audio_codec.vae.config.downsample
    level = F.avg_pool2d(mel, d)[0]  # (L, F)
    return (
        rearrange(z.float().cpu()[0], "c t h w -> (t h w) c"),
        rearrange(target, "c t h w -> (t h w) c"),
        rearrange(audio_z.float().cpu()[0], "c l f -> (l f) c"),
        level.flatten(),
    )


def fit_preview_map(video_vae, audio_codec, seeds=FIT_SEEDS) -> PreviewMap:
    """Least-squares linear maps (with bias) from the latent cells of synthetic clips ``seeds`` to what the
    VAEs decode from them (:func:`decoded_cells`)."""
    cells = [decoded_cells(video_vae, audio_codec, s) for s in seeds]
    video_z, rgb, audio_z, level = (torch.cat(parts).double() for parts in zip(*cells, strict=True))
    video_w = _least_squares(video_z, rgb)
    audio_w = _least_squares(audio_z, level[:, None])[:, 0]
    low, high = torch.quantile(level, torch.tensor([0.01, 0.99], dtype=level.dtype)).tolist()
    return PreviewMap(
        video_rgb=tuple(tuple(row) for row in video_w[:-1].tolist()),
        video_bias=tuple(video_w[-1].tolist()),
        audio_level=tuple(audio_w[:-1].tolist()),
        audio_bias=float(audio_w[-1]),
        audio_range=(low, high if high > low else low + 1.0),
    )


def preview_errors(preview_map: PreviewMap, video_vae, audio_codec, seeds=HELDOUT_SEEDS) -> dict[str, float]:
    """Mean absolute error per latent cell of the maps against the decoders on clips ``seeds`` (RGB in 0..1 units,
    the audio level as a fraction of the drawn range), and of the best constant (each clip set's mean) for scale."""
    cells = [decoded_cells(video_vae, audio_codec, s) for s in seeds]
    video_z, rgb, audio_z, level = (torch.cat(parts) for parts in zip(*cells, strict=True))
    low, high = preview_map.audio_range
    rgb_map = ((preview_map.video_to_rgb(rearrange(video_z, "n c -> c 1 1 n"))[0, 0] - rgb).abs().mean() / 2).item()
    level_map = (preview_map.audio_to_level(rearrange(audio_z, "n c -> c 1 n"))[0] - level).abs().mean()
    return {
        "video_rgb_mae": rgb_map,
        "video_rgb_mae_of_mean_colour": ((rgb - rgb.mean(0)).abs().mean() / 2).item(),
        "audio_level_mae": (level_map / (high - low)).item(),
        "audio_level_mae_of_mean_level": ((level - level.mean()).abs().mean() / (high - low)).item(),
    }


def _least_squares(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """W [C + 1, K] minimising |[x, 1] W - y|^2 (the last row is the bias)."""
    a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    return torch.linalg.lstsq(a, y).solution


# ---- stored beside a bundle -------------------------------------------------------------------------------


def save_preview_map(preview_map: PreviewMap, folder: str | os.PathLike, errors: dict[str, float]) -> Path:
    """Write ``preview.json`` in ``folder``, with the held-out ``errors`` it was checked at."""
    data = {**asdict(preview_map), "heldout_errors": errors}
    return write_text(Path(folder) / PREVIEW_FILE, json.dumps(data, indent=1) + "\n")


def load_preview_map(folder: str | os.PathLike) -> PreviewMap | None:
    """The map stored in ``folder``'s ``preview.json``, or None when there is none."""
    path = Path(folder) / PREVIEW_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return PreviewMap(
            video_rgb=tuple(tuple(float(v) for v in row) for row in data["video_rgb"]),
            video_bias=tuple(float(v) for v in data["video_bias"]),
            audio_level=tuple(float(v) for v in data["audio_level"]),
            audio_bias=float(data["audio_bias"]),
            audio_range=tuple(float(v) for v in data["audio_range"]),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a preview map ({e}); write it again with uniform-av fit-preview") from e
