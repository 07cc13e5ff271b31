"""AudioLDM's audio codec: log-mel -> diffusers ``AutoencoderKL`` latent, and back through a HiFi-GAN vocoder.

The VAE and vocoder are diffusers' and transformers' own classes built from AudioLDM's configs, so the public
``cvssp/audioldm*`` files load with their keys verbatim. UniForm component files hold the same keys plus the config
in their metadata. Layout: mel ``(B, 1, T, 64)`` (time on H, mel bins on W) -> latent ``(B, 8, T/4, 16)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import checks
from ..checkpoint import load_matching, load_state_dict_file, read_component_config, read_metadata, save_component
from ..empty_init import empty_init
from ..errors import CheckpointError, InputError
from .audio_config import AUDIO_VAE_PRESETS, VOCODER_PRESETS, AudioVAEConfig, VocoderConfig
from .audio_pieces import decode_in_pieces, pieces
from .mel import MelConfig, MelFrontEnd, check_waveform

if TYPE_CHECKING:
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

logger = logging.getLogger(__name__)

AUDIO_VAE_KIND = "audio_vae"
VOCODER_KIND = "vocoder"
VAE_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
VOCODER_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")


VOCODER_PIECE_FRAMES = 200  # mel frames (2 s) the vocoder runs at once; its memory is this, not the clip


def _preset(presets: dict, name: str, what: str):
    if name not in presets:
        raise InputError(f"{what} preset must be one of {', '.join(presets)}; got {name!r}")
    return presets[name]


class AudioVAE(nn.Module):
    """The mel VAE. ``model`` is a diffusers ``AutoencoderKL``; its state dict is what files hold, key for key."""

    def __init__(self, config: AudioVAEConfig):
        super().__init__()
        self.config = config
        from diffusers import AutoencoderKL  # here, not at import: diffusers pulls in torch._dynamo (seconds)

        self.model = AutoencoderKL(**config.diffusers_kwargs())

    @classmethod
    def from_preset(cls, name: str) -> AudioVAE:
        return cls(_preset(AUDIO_VAE_PRESETS, name, "audio VAE"))

    def encode(self, mel: torch.Tensor) -> DiagonalGaussianDistribution:
        """``mel``: ``(B, T, n_mels)`` log-mel, T a multiple of ``downsample``. Posterior over unscaled latents
        ``(B, C, T / d, n_mels / d)``."""
        return self.model.encode(mel.unsqueeze(1)).latent_dist

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Unscaled latent ``(B, C, L, W)`` -> log-mel ``(B, L * d, W * d)``, in time pieces (``audio_pieces``):
        memory beyond the mel does not grow with the clip, and the mel is the whole-clip decode's."""
        if self.model.post_quant_conv is not None:
            latent = self.model.post_quant_conv(latent)
        return decode_in_pieces(self.model.decoder, latent).squeeze(1)

    def save(self, path: str | os.PathLike) -> None:
        save_component(self.model, path, AUDIO_VAE_KIND, asdict(self.config))

    @classmethod
    def load(cls, path: str | os.PathLike) -> AudioVAE:
        """A UniForm ``audio_vae`` component file."""
        config = AudioVAEConfig.from_dict(read_component_config(path, AUDIO_VAE_KIND), f"audio VAE file {path}")
        with empty_init():  # no random init: every weight comes from the file
            vae = cls(config)
        load_matching(vae.model, load_state_dict_file(path), f"audio VAE file {path}", assign=True)
        return vae


class Vocoder(nn.Module):
    """HiFi-GAN mel -> waveform. ``model`` is a transformers ``SpeechT5HifiGan`` holding the files' keys verbatim."""

    def __init__(self, config: VocoderConfig):
        super().__init__()
        self.config = config
        from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig  # here, not at import (seconds)

        self.model = SpeechT5HifiGan(SpeechT5HifiGanConfig(**asdict(config)))

    @classmethod
    def from_preset(cls, name: str) -> Vocoder:
        return cls(_preset(VOCODER_PRESETS, name, "vocoder"))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel``: ``(B, T, model_in_dim)`` log-mel -> waveform ``(B, T * hop_length)`` in [-1, 1].

        HiFi-GAN's transposed convolutions give a few extra samples (``160 T + 32`` for AudioLDM); they are cut so
        that each mel frame is exactly one hop of audio.
        """
        if mel.dim() != 3 or mel.shape[-1] != self.config.model_in_dim:
            raise InputError(
                f"vocoder input must be a log-mel of shape (batch, frames, {self.config.model_in_dim}); "
                f"got {tuple(mel.shape)}"
            )
        return self._run_in_pieces(mel)

    @property
    def halo_frames(self) -> int:
        """Mel frames on each side that can reach an output sample (HiFi-GAN's receptive field, rounded up): the
        7-tap input and output convolutions, each transposed convolution's taps, and the widest residual stack
        (taps x dilations) at every upsampled rate."""
        c, rate, halo = self.config, 1, 3.0
        for up, kernel in zip(c.upsample_rates, c.upsample_kernel_sizes, strict=True):
            halo += kernel / (2 * up) / rate + 1 / rate  # transposed conv taps, in input frames
            rate *= up
            widest = max(
                sum((k - 1) // 2 * (d + 1) for d in dil)
                for k, dil in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes, strict=True)
            )
            halo += widest / rate
        return math.ceil(halo + 3 / rate) + 1

    def _run_in_pieces(self, mel: torch.Tensor) -> torch.Tensor:
        """HiFi-GAN over pieces of ``VOCODER_PIECE_FRAMES`` mel frames, each with :attr:`halo_frames` of context on
        both sides, written into one preallocated waveform: memory beyond the output no longer grows with the clip,
        and every sample equals the whole-clip result (the halo covers the receptive field; the network is
        translation-equivariant at whole frames)."""
        frames, hop, halo = mel.shape[1], self.config.hop_length, self.halo_frames
        if frames <= VOCODER_PIECE_FRAMES + 2 * halo:
            return self.model(mel)[:, : frames * hop]
        out = mel.new_empty(mel.shape[0], frames * hop)
        for first, last, start, stop in pieces(frames, VOCODER_PIECE_FRAMES, halo):
            wave = self.model(mel[:, first:last])
            out[:, start * hop : stop * hop] = wave[:, (start - first) * hop : (stop - first) * hop]
        return out

    def save(self, path: str | os.PathLike) -> None:
        save_component(self.model, path, VOCODER_KIND, asdict(self.config))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocoder:
        """A UniForm ``vocoder`` component file."""
        config = VocoderConfig.from_dict(read_component_config(path, VOCODER_KIND), f"vocoder file {path}")
        with empty_init():  # no random init: every weight comes from the file
            vocoder = cls(config)
        load_matching(vocoder.model, load_state_dict_file(path), f"vocoder file {path}", assign=True)
        return vocoder


class AudioCodec(nn.Module):
    """Mono 16 kHz waveform <-> scaled AudioLDM latent ``(B, 8, N / 640, 16)``: 25 latent steps per second."""

    def __init__(self, vae: AudioVAE, vocoder: Vocoder, mel: MelConfig | None = None):
        super().__init__()
        self.mel = MelFrontEnd(mel)
        self.vae = vae
        self.vocoder = vocoder
        m, v, d = self.mel.config, vocoder.config, vae.config.downsample
        if v.model_in_dim != m.n_mels or v.hop_length != m.hop_length or v.sampling_rate != m.sample_rate:
            raise CheckpointError(
                f"the vocoder ({v.model_in_dim} mel bins, hop {v.hop_length}, {v.sampling_rate} Hz) does not fit the "
                f"mel front end ({m.n_mels} mel bins, hop {m.hop_length}, {m.sample_rate} Hz)"
            )
        if vae.config.in_channels != 1 or m.n_mels % d:
            raise CheckpointError(
                f"the audio VAE must take a 1-channel mel whose {m.n_mels} bins divide by its downsampling {d}"
            )

    @property
    def sample_rate(self) -> int:
        return self.mel.config.sample_rate

    @property
    def samples_per_latent_step(self) -> int:
        """Waveform samples per latent time step (640 = 4 mel frames = 40 ms for AudioLDM)."""
        return self.mel.config.hop_length * self.vae.config.downsample

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def latent_width(self) -> int:
        """Latent size along the mel axis (16 for 64 mel bins)."""
        return self.mel.config.n_mels // self.vae.config.downsample

    @property
    def scaling_factor(self) -> float:
        return self.vae.config.scaling_factor

    @torch.no_grad()
    def encode(
        self,
        waveform: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        num_frames: int | None = None,
    ) -> torch.Tensor:
        """``waveform``: ``(B, N)`` mono float at 16 kHz. Returns ``z`` ``(B, 8, num_frames / 4, 16)``.

        The VAE sees AudioLDM's ``wav_to_fbank`` of the waveform (:meth:`MelFrontEnd.fbank`): levelled over its
        whole length (mean removed, peak 0.5), padded with silence or its spectrogram cut to ``num_frames`` mel
        frames (AudioLDM's ``target_length``, a multiple of 4; 1024 = 10.24 s). Without ``num_frames``, N must be a
        multiple of 640 and ``num_frames = N / 160``. ``deterministic`` takes the posterior mean instead of a
        sample; ``generator`` seeds the sample. ``z`` is multiplied by the checkpoint's ``scaling_factor`` (unit
        variance for the diffusion model). Float32 on the codec's device.
        """
        step, d = self.samples_per_latent_step, self.vae.config.downsample
        check_waveform(waveform, "waveform", min_samples=step if num_frames is None else 1)
        if num_frames is None:
            if waveform.shape[1] % step:
                raise InputError(
                    f"waveform length must be a multiple of {step} samples ({step / self.sample_rate * 1000:g} ms, "
                    f"one audio latent step at {self.sample_rate} Hz), or num_frames given; got "
                    f"{waveform.shape[1]} samples"
                )
            num_frames = waveform.shape[1] // self.mel.config.hop_length
        elif checks.integer(num_frames, f"num_frames (a positive multiple of {d} mel frames)", 1) % d:
            raise InputError(f"num_frames must be a positive multiple of {d} mel frames; got {num_frames!r}")
        param = next(self.vae.parameters())
        mel = self.mel.fbank(waveform.to(param.device), num_frames)
        posterior = self.vae.encode(mel.to(param.dtype))
        z = posterior.mode() if deterministic else posterior.sample(generator)
        return (z * self.scaling_factor).float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z``: scaled latent ``(B, 8, L, 16)``. Returns the waveform ``(B, L * 640)``, float32 at 16 kHz."""
        expected = (self.latent_channels, self.latent_width)
        if not isinstance(z, torch.Tensor) or z.dim() != 4 or (z.shape[1], z.shape[3]) != expected or z.shape[2] < 1:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise InputError(
                f"audio latent must have shape (batch, {expected[0]}, steps, {expected[1]}), steps >= 1; got {shape}"
            )
        if not torch.isfinite(z).all():
            raise InputError("audio latent contains NaN or infinite values")
        param = next(self.vae.parameters())
        mel = self.vae.decode(z.to(param.device, param.dtype) / self.scaling_factor)
        voc = next(self.vocoder.parameters())
        return self.vocoder(mel.to(voc.device, voc.dtype)).float()


def _find(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _json_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable JSON config: {e}") from e


def _is_vae_config(data: dict) -> bool:
    return data.get("_class_name") == "AutoencoderKL"


def _is_vocoder_config(data: dict) -> bool:
    return data.get("model_type") == "speecht5_hifigan" or "SpeechT5HifiGan" in (data.get("architectures") or [])


def _load_component(path, kind, cls, config_cls, presets, weight_names, subfolder, is_config, what):
    """Shared logic of :func:`load_audio_vae` and :func:`load_vocoder` (see there)."""
    path = Path(path)
    expected = (
        f"a UniForm {kind!r} .safetensors file, a diffusers AudioLDM folder (with {subfolder}/), its {subfolder}/ "
        f"folder (config.json + {weight_names[0]}), or a bare {weight_names[0]} with AudioLDM's keys"
    )
    if path.is_dir():
        folder = path / subfolder if (path / subfolder).is_dir() else path
        weights = _find(folder, weight_names)
        if weights is None or not (folder / "config.json").is_file():
            raise CheckpointError(f"{path} is a folder without the {what} files; expected {expected}")
        return _load_with_config(folder / "config.json", weights, cls, config_cls, is_config, what)
    if not path.is_file():
        raise CheckpointError(f"{what} path {str(path)!r} does not exist; expected {expected}")
    if path.suffix == ".safetensors":
        found = read_metadata(path).get("uniform_component")
        if found == kind:
            return cls.load(path)
        if found is not None:
            raise CheckpointError(f"{path} is a UniForm {found!r} file; expected {expected}")
    sibling = path.parent / "config.json"
    if sibling.is_file() and is_config(_json_config(sibling)):
        return _load_with_config(sibling, path, cls, config_cls, is_config, what)
    config = presets["audioldm-s-full"]
    logger.warning("%s has no config.json beside it; assuming the 'audioldm-s-full' %s config %s", path, what, config)
    module = cls(config)
    load_matching(module.model, load_state_dict_file(path), f"{what} file {path} (expected AudioLDM's keys)")
    return module


def _load_with_config(config_path: Path, weights: Path, cls, config_cls, is_config, what):
    data = _json_config(config_path)
    if not is_config(data):
        raise CheckpointError(f"{config_path} does not describe an AudioLDM {what}")
    module = cls(config_cls.from_dict(data, str(config_path)))
    load_matching(module.model, load_state_dict_file(weights), f"{what} weights {weights}")
    return module


def load_audio_vae(path: str | os.PathLike, scaling_factor: float | None = None) -> AudioVAE:
    """The AudioLDM mel VAE from a UniForm ``audio_vae`` file, a diffusers AudioLDM folder or its ``vae/`` folder,
    or a bare ``diffusion_pytorch_model.safetensors`` (its ``config.json`` beside it is used when present, else the
    ``audioldm-s-full`` config, scaling factor included).

    ``scaling_factor`` overrides the file's, e.g. for a bare file of another AudioLDM size (m-full 0.9138, l-full
    0.9655), whose architecture is the same but whose learnt latent scale differs.
    """
    vae = _load_component(
        path,
        AUDIO_VAE_KIND,
        AudioVAE,
        AudioVAEConfig,
        AUDIO_VAE_PRESETS,
        VAE_WEIGHT_NAMES,
        "vae",
        _is_vae_config,
        "audio VAE",
    )
    if scaling_factor is not None:
        scaling_factor = checks.number(scaling_factor, "scaling_factor", 0.0, above=True)
        vae.config = replace(vae.config, scaling_factor=scaling_factor)
    return vae


def load_vocoder(path: str | os.PathLike) -> Vocoder:
    """The HiFi-GAN vocoder from a UniForm ``vocoder`` file, a diffusers AudioLDM folder or its ``vocoder/`` folder,
    or a bare ``model.safetensors`` (AudioLDM's config unless a ``config.json`` is beside it)."""
    return _load_component(
        path,
        VOCODER_KIND,
        Vocoder,
        VocoderConfig,
        VOCODER_PRESETS,
        VOCODER_WEIGHT_NAMES,
        "vocoder",
        _is_vocoder_config,
        "vocoder",
    )


def load_audio_codec(path: str | os.PathLike, scaling_factor: float | None = None) -> AudioCodec:
    """An :class:`AudioCodec` from a folder: a diffusers AudioLDM folder (``vae/`` and ``vocoder/``), or a folder
    with UniForm ``audio_vae.safetensors`` and ``vocoder.safetensors``. ``scaling_factor``: see
    :func:`load_audio_vae`."""
    path = Path(path)
    if (path / "vae").is_dir() and (path / "vocoder").is_dir():
        return AudioCodec(load_audio_vae(path / "vae", scaling_factor), load_vocoder(path / "vocoder"))
    if (path / "audio_vae.safetensors").is_file() and (path / "vocoder.safetensors").is_file():
        vae = load_audio_vae(path / "audio_vae.safetensors", scaling_factor)
        return AudioCodec(vae, load_vocoder(path / "vocoder.safetensors"))
    raise CheckpointError(
        f"{str(path)!r} is not an audio codec folder; expected a diffusers AudioLDM folder (e.g. cvssp/audioldm-s-full"
        "-v2) with vae/ and vocoder/ subfolders, or a folder with audio_vae.safetensors and vocoder.safetensors"
    )
