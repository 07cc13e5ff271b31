"""bf16 and fp16 against fp32 on a CUDA GPU (run by scripts/gpu_check.sh); exits 1 if a tolerance is missed.

DiT: the ``xl`` preset (random weights, every parameter nudged so the temporal blocks are not the identity) on one
4 s 256x256 CFG batch; the error is the RMS of (low precision - fp32) over the RMS of fp32, tolerance 3e-2 for
bf16 (8 mantissa bits through 56 blocks) and 1e-2 for fp16 (11 bits). Codecs: the embedded uniform-tiny's video
VAE decode and text encoder in bf16 against fp32 as a signal-to-noise ratio, at least 40 dB and 35 dB (the CPU
measured 50 and 43 dB, BENCHMARKS.md).
"""

from __future__ import annotations

import copy
import sys

import torch

from uniform_core.bundle import load_bundle
from uniform_core.model.uniform_dit import UniFormDiT

DIT_TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 1e-2}
CODEC_MIN_SNR_DB = {"video VAE decode": 40.0, "text encoder": 35.0}


def relative_rms(ref: torch.Tensor, x: torch.Tensor) -> float:
    return float((x.float() - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())


def snr_db(ref: torch.Tensor, x: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (x.float() - ref).pow(2).mean()))


def main() -> int:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # a true fp32 reference
    dev, ok = torch.device("cuda"), True
    torch.manual_seed(0)
    dit = UniFormDiT.from_preset("xl").to(dev).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    c, g = dit.config, torch.Generator(dev).manual_seed(0)
    inputs = dict(
        video=torch.randn(2, 4, 20, 32, 32, device=dev, generator=g),
        audio=torch.randn(2, 8, 100, c.audio_freq, device=dev, generator=g),
        timestep=torch.tensor([500.0, 500.0], device=dev),
        y=torch.randn(2, 40, c.caption_channels, device=dev, generator=g),
        mask=torch.ones(2, 40, device=dev),
        task=0,
    )
    with torch.no_grad():
        ref = dit(**inputs)
        for dtype, tolerance in DIT_TOLERANCE.items():
            out = dit.to(dtype)(**inputs)
            errors = [
                relative_rms(r[:, : r.shape[1] // 2], o[:, : o.shape[1] // 2]) for r, o in zip(ref, out, strict=True)
            ]
            passed = max(errors) <= tolerance
            ok &= passed
            print(
                f"DiT xl {dtype}: relative RMS error video {errors[0]:.2e}, audio {errors[1]:.2e} "
                f"(tolerance {tolerance:g}) {'ok' if passed else 'FAIL'}"
            )
        del dit
        bundle = load_bundle(device=dev)
        z = torch.randn(1, 4, 5, 8, 8, device=dev, generator=g)
        emb32, _ = bundle.text_encoder.encode(["a red ball bounces twice on a wooden floor"])
        checks = {
            "video VAE decode": (
                bundle.video_vae.decode(z, num_frames=17),
                lambda: copy.deepcopy(bundle.video_vae).bfloat16().decode(z.bfloat16(), num_frames=17),
            ),
            "text encoder": (
                emb32,
                lambda: (
                    copy.deepcopy(bundle.text_encoder)
                    .bfloat16()
                    .encode(["a red ball bounces twice on a wooden floor"])[0]
                ),
            ),
        }
        for name, (ref, run) in checks.items():
            value = snr_db(ref.float(), run())
            passed = value >= CODEC_MIN_SNR_DB[name]
            ok &= passed
            print(
                f"{name} bf16: {value:.1f} dB SNR against fp32 (at least {CODEC_MIN_SNR_DB[name]:g}) "
                f"{'ok' if passed else 'FAIL'}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
