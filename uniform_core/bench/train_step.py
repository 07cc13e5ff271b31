"""`uniform-av bench --train`: one DiT training step (forward, backward, AdamW) timed, against the FLOP estimate.

The step is the trainer's own (``train.multitask_loss.diffusion_loss`` with random draws, gradient clipping,
AdamW) on a random-weight DiT and random latents, in float32 weights with bf16 autocast on CUDA (what accelerate's
``mixed_precision: bf16`` runs) and float32 on the CPU. MFU is the FLOP the step executes (``train.estimate``: 3
forwards, 4 with activation checkpointing) over time and the GPU's dense bf16 peak; the CPU's peak is not known,
so there only the achieved FLOP/s are given.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict

import torch

from .. import checks
from ..diffusion.schedule import NoiseSchedule
from ..errors import InputError
from ..model.uniform_dit import UniFormDiT
from ..train.config import DiTTrainConfig
from ..train.estimate import GPUS, activation_bytes, forward_flop, state_bytes, token_layout
from ..train.multitask_loss import CaptionDropDiT, diffusion_loss, draw_step
from .meters import Measurement, device_name, measure

CLIPS = {"tiny": (2, 64), "xl": (4, 256)}  # (seconds, side) the presets train on


def gpu_kind(name: str) -> str | None:
    """The GPUS key of a CUDA device name ("NVIDIA H100 80GB HBM3" -> "h100"), or None if it is not in the table."""
    lowered = name.lower().replace(" ", "")
    if "h100" in lowered and "pcie" in lowered:
        return "h100-pcie"
    if "a100" in lowered and "40gb" in lowered:
        return "a100-40gb"
    for key in ("a100", "h100", "h200", "b200", "l40s", "rtx4090", "mi300x"):
        if key in lowered:
            return key
    return None


def train_step_row(
    preset: str, device: torch.device, seconds: int, side: int, batch: int, repeats: int, checkpointing: bool
) -> Measurement:
    """Median time and peak memory of one training step of ``batch`` samples, with the FLOP, utilisation and the
    estimated memory (one GPU, nothing sharded) in ``extra``."""
    torch.manual_seed(0)
    with torch.device(device):
        dit = UniFormDiT.from_preset(preset)
    dit.train().gradient_checkpointing = checkpointing
    c = dit.config
    cfg = DiTTrainConfig(preset=preset)
    optimizer = torch.optim.AdamW(dit.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    schedule = NoiseSchedule()
    frames, cells = seconds * 5, side // 8
    data = {
        "video": torch.randn(batch, c.in_channels, frames, cells, cells, device=device),
        "audio": torch.randn(
            batch, c.audio_in_channels, frames * c.audio_steps_per_frame, c.audio_freq, device=device
        ),
        "y": torch.randn(batch, c.model_max_length, c.caption_channels, device=device),
        "mask": torch.ones(batch, c.model_max_length, dtype=torch.bool, device=device),
    }
    model = CaptionDropDiT(dit)  # what the trainer calls
    generator = torch.Generator().manual_seed(0)
    bf16 = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        draws = draw_step(batch, data["video"].shape[1:], data["audio"].shape[1:], cfg, generator, 1000)
        with autocast:
            loss = diffusion_loss(model, schedule, data, draws, cfg.snr_gamma)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), cfg.grad_clip)
        optimizer.step()

    recompute = ", activation checkpointing" if checkpointing else ""
    name = f"DiT train step ({batch} x {seconds} s {side}x{side}, AdamW{recompute})"
    row = measure(name, step, device, repeats)
    layout = token_layout(c, seconds, side, side)
    flop = forward_flop(c, layout)["total"] * (4 if checkpointing else 3) * batch
    precision = "bf16" if bf16 else "no"
    states = state_bytes(c, "ddp", 1, precision)
    activations = activation_bytes(c, layout, precision, checkpointing)["peak"] * batch
    row.extra.update(
        flop=flop,
        tokens=layout.tokens,
        achieved_tflops=flop / row.median_s / 1e12,
        # weights, gradients and AdamW states exist before each timed step: the peak growth is the activations'
        estimated_peak_mb=activations / 2**20,
        estimated_total_mb=(states["weights"] + states["gradients"] + states["adamw"] + activations) / 2**20,
    )
    kind = gpu_kind(device_name(device)) if device.type == "cuda" else None
    if kind is not None:
        row.extra.update(
            peak_tflops=GPUS[kind].bf16_tflops, mfu_pct=100 * row.extra["achieved_tflops"] / GPUS[kind].bf16_tflops
        )
    return row


def bench_train(
    preset: str = "tiny",
    device: str = "cpu",
    seconds: int | None = None,
    batch: int = 4,
    repeats: int = 3,
    checkpointing: bool = False,
) -> dict:
    """The report of one training-step row, in the form ``bench.report.to_markdown`` prints."""
    if preset not in CLIPS:
        raise InputError(f"preset must be one of {', '.join(CLIPS)}; got {preset!r}")
    dev = checks.device(device, "--device")
    batch = checks.batch_size(batch, "--batch")
    repeats = checks.integer(repeats, "--repeats", 1)
    default_seconds, side = CLIPS[preset]
    seconds = default_seconds if seconds is None else checks.duration(seconds, "--seconds")
    row = train_step_row(preset, dev, seconds, side, batch, repeats, checkpointing)
    return {
        "preset": preset,
        "device": device_name(dev),
        "dit_dtype": "float32 weights, bf16 autocast" if dev.type == "cuda" else "float32",
        "seconds": seconds,
        "size": [side, side],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": [asdict(row)],
    }
