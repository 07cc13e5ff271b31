"""How much memory a generation needs, and how much the machine has, so a run that cannot fit is refused before it
starts instead of swapping the machine to a halt.

The estimate counts the tensors that must exist at the same time (the DiT's activations for every token of the
batch, one VAE chunk at full resolution, the decoded frames), with factors calibrated against the measured peak
(peak RSS above the loaded model, CPU fp32, tiny bundle): at 384-1024 px it is 0.84-1.0x the measured peak, so it
errs towards letting a borderline run start, never towards refusing one that fits (``tests/test_memory.py``).
Weights are not counted: they are already loaded, so the memory they take is already missing from what is
available.
"""

from __future__ import annotations

import os

import torch

from .errors import InputError
from .tasks import FRAMES_PER_CHUNK

GIB = 2**30
# Peak activations of a forward, in hidden-widths per token: the residual stream, q/k/v and the attention output
# live at once, while the 4x MLP hidden layer and the attention scores only exist one block-piece at a time (measured:
# 4.1 at 512-1024 px).
_ACTIVATIONS_PER_TOKEN = 4
# One 17-frame chunk through the decoder's widest full-resolution stage holds about 1.2 activations of that stage
# at once (measured 1.2-1.3 at 512-768 px).
_DECODER_CHUNK_ACTIVATIONS = 1.2


def dit_bytes(dit, latent, batch_size: int, guided: bool = True) -> int:
    """Activations of one DiT forward pass over ``batch_size`` items of ``latent`` (cond + uncond when guided)."""
    c = dit.config
    _, _, t, h, w = latent.video.shape
    tokens = (2 if guided else 1) * batch_size * t * c.tokens_per_frame(h, w)
    return tokens * c.hidden_size * _ACTIVATIONS_PER_TOKEN * _element_size(dit)


def decode_bytes(video_vae, latent, batch_size: int) -> tuple[int, int]:
    """(device bytes, host bytes) of decoding: one full-size 17-frame chunk through the decoder's widest
    full-resolution stage on the device, every decoded frame as float32 on the host."""
    height, width, frames = latent.height, latent.width, latent.num_frames
    widest = video_vae.config.spatial.get("block_out_channels", (64,))[0]
    elements = batch_size * FRAMES_PER_CHUNK * height * width * widest
    chunk = int(_DECODER_CHUNK_ACTIVATIONS * elements * _element_size(video_vae))
    return chunk, batch_size * frames * height * width * 3 * 4


def check_sampling(dit, latent, batch_size: int, guided: bool, device: torch.device) -> None:
    check_fits({"DiT activations": dit_bytes(dit, latent, batch_size, guided)}, device, "sampling")


def check_decoding(video_vae, latent, batch_size: int, device: torch.device) -> None:
    chunk, frames = decode_bytes(video_vae, latent, batch_size)
    what = f"decoding {batch_size} x {latent.width}x{latent.height} px x {latent.num_frames} frames"
    check_fits({"decoder chunk": chunk, "host frames": frames}, device, what)


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the CUDA allocator's free bytes, or the host's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(needs: dict[str, int], device: torch.device, what: str) -> None:
    """Refuse ``what`` when the parts in ``needs`` ({part: bytes} on ``device``; ``host ...`` parts on the CPU)
    add up to more than the free memory where they live."""
    device = torch.device(device)
    places: dict[str, dict[str, int]] = {}
    for part, size in needs.items():
        place = "cpu" if part.startswith("host ") or device.type == "cpu" else str(device)
        places.setdefault(place, {})[part] = size
    for place, parts in places.items():
        need, free = sum(parts.values()), available_bytes(torch.device(place))
        if need > free:
            detail = ", ".join(f"{k} {v / GIB:.1f}" for k, v in parts.items())
            raise InputError(
                f"{what} needs about {need / GIB:.1f} GiB on {place} ({detail}) but {free / GIB:.1f} GiB "
                "are available; use a smaller size, fewer seconds or a smaller batch"
            )


def _element_size(module: torch.nn.Module) -> int:
    param = next(module.parameters(), None)
    return param.element_size() if param is not None else 4
