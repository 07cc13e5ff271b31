"""One precision and device policy for the CLI, the pipeline and the nodes.

``auto`` picks, per device: bf16 on GPUs that run it natively (compute capability 8.0 and up), fp16 on older GPUs,
fp32 on the CPU (where bf16 matmuls are slower than fp32). TF32 is switched on for the fp32 matmuls and
convolutions that remain. Not every part takes the DiT's precision (measured on uniform-tiny, BENCHMARKS.md):

- text encoder: bf16 when the DiT is bf16 (43 dB SNR against fp32); never fp16, which overflows in T5's
  feed-forward with real weights, so fp32 there;
- video VAE: bf16 when the DiT is bf16 (50 dB); never fp16 (the SDXL VAE that Open-Sora uses overflows in fp16);
- audio VAE + vocoder: always fp32: HiFi-GAN in bf16 leaves a noise floor 30 dB under the signal (audible hiss),
  and the part costs a few percent of a run.

An explicit ``fp32``/``bf16``/``fp16`` sets the DiT's precision; the other parts follow the same rules.
"""

from __future__ import annotations

import torch

from .errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PARTS = ("dit", "text_encoder", "video_vae", "audio_codec")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matmuls natively (CUDA compute capability >= 8.0)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def dit_dtype(precision: str, device: str | torch.device, bf16_ok: bool | None = None) -> torch.dtype:
    """The DiT's dtype. ``bf16_ok`` overrides the device check (ComfyUI passes its own judgement)."""
    device = torch.device(device)
    if check_precision(precision) != "auto":
        return DTYPES[precision]
    if device.type == "cpu":
        return torch.float32
    if device.type == "cuda" or bf16_ok is not None:
        return torch.bfloat16 if (bf16_native(device) if bf16_ok is None else bf16_ok) else torch.float16
    return torch.float16 if device.type == "mps" else torch.float32


def part_dtype(part: str, precision: str, device: str | torch.device, bf16_ok: bool | None = None) -> torch.dtype:
    """The dtype of one part (``PARTS``) under ``precision`` on ``device`` (see the module's rules)."""
    if part not in PARTS:
        raise InputError(f"part must be one of {', '.join(PARTS)}; got {part!r}")
    dtype = dit_dtype(precision, device, bf16_ok)
    if part == "dit":
        return dtype
    if part == "audio_codec" or dtype == torch.float16:
        return torch.float32
    return dtype


def part_name(module: torch.nn.Module) -> str:
    """Which part ``module`` is, by its class (DiT, text encoder, video VAE or audio codec)."""
    from .codecs.audio import AudioCodec
    from .codecs.text import TextEncoder
    from .codecs.video_vae import VideoVAE
    from .model.stdit3 import STDiT3Backbone

    for cls, name in (
        (STDiT3Backbone, "dit"),
        (TextEncoder, "text_encoder"),
        (VideoVAE, "video_vae"),
        (AudioCodec, "audio_codec"),
    ):
        if isinstance(module, cls):
            return name
    raise InputError(f"no precision rule for a {type(module).__name__}; expected one of the bundle's four parts")


def enable_tf32() -> None:
    """TF32 for the fp32 matmuls and convolutions on Ampere and later GPUs (no effect on the CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
