"""The rules for every value a user gives: command-line flags, pipeline arguments and node inputs, each written once.

Each check takes the value and the name the user knows it by (``--seed``, ``seed``, ``frames``), returns the value
in its normal form, or raises :class:`InputError` naming the input, what is allowed and what came. Nothing here
writes or loads anything, so a value is refused before any work starts.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import torch

from .errors import InputError
from .tasks import PIXEL_MULTIPLE, task_index

MAX_SECONDS = 16  # longest clip: 16 one-second chunks
MAX_SIDE = 2048  # px per side; the DiT sees (side / 16)^2 tokens per frame and the VAE decodes full frames
MAX_BATCH = 64
MAX_STEPS = 1000  # the DDPM schedule's length: no sampler can take more steps than it has
MAX_CFG = 100.0
CFG_CONDITION_DEFAULT = -1.0  # cfg_condition's "the task's measured default" where None cannot be given (a widget)
MAX_FPS = 1000.0
MAX_SAMPLE_RATE = 768_000
SEED_MAX = 2**64 - 1  # torch.manual_seed takes 64-bit seeds
MAX_AUDIO_PEAK = 2.0  # float audio up to this peak is clipped to [-1, 1]; louder is refused as mis-scaled


def describe(value) -> str:
    """What came, for a message: a tensor's shape and dtype, a short repr, or the type of anything long."""
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, (str, numbers.Number, type(None))):
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return f"a {type(value).__name__}"


# ---- numbers -------------------------------------------------------------------------------------------------


def integer(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """A whole number (not a bool, not a float) in [low, high]."""
    wanted = "a positive integer" if (low, high) == (1, None) else f"an integer{_range(low, high)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be {wanted}; got {describe(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"{name} must be {wanted}; got {value!r}")
    return int(value)


def number(value, name: str, low: float | None = None, high: float | None = None, above: bool = False) -> float:
    """A finite real number (not a bool) in [low, high]; ``above=True`` makes the lower end open (> low)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number{_range(low, high, above)}; got {describe(value)}")
    too_low = low is not None and (value <= low if above else value < low)
    if too_low or (high is not None and value > high):
        raise InputError(f"{name} must be a number{_range(low, high, above)}; got {value!r}")
    return float(value)


def _range(low, high, above: bool = False) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}" if not above else f" above {low} and at most {high}"
    if low is not None:
        return f" {'>' if above else '>='} {low}"
    return f" <= {high}" if high is not None else ""


def seed(value, name: str = "seed", count: int = 1) -> int:
    """A seed torch.manual_seed takes; a batch of ``count`` uses seed .. seed + count - 1, so all must fit."""
    return integer(value, name, 0, SEED_MAX - (count - 1))


def steps(value, name: str = "steps", limit: int = MAX_STEPS) -> int:
    """Sampling steps: 1 to the noise schedule's length."""
    return integer(value, name, 1, limit)


def cfg(value, name: str = "cfg") -> float:
    """A classifier-free guidance scale: 0 (unconditional) to MAX_CFG; 1 is the conditional model alone."""
    return number(value, name, 0.0, MAX_CFG)


def cfg_condition(value, task: str, name: str = "cfg_condition") -> float | None:
    """Guidance on the A2V/V2A condition (1 = off): a guidance scale, or None or ``CFG_CONDITION_DEFAULT`` (-1, the
    nodes' widget value) for the task's measured default, ``guidance.CONDITION_CFG``, which the sampler fills in
    (None is returned). T2AV has no condition to guide on, so it takes the default or 1 only."""
    task_index(task)
    if value is None:
        return None
    value = number(value, name, CFG_CONDITION_DEFAULT, MAX_CFG)
    if value == CFG_CONDITION_DEFAULT:
        return None
    if value < 0:
        raise InputError(
            f"{name} must be {CFG_CONDITION_DEFAULT:g} (the task's measured default) or a guidance scale from 0 to "
            f"{MAX_CFG:g}; got {value!r}"
        )
    if task == "t2av" and value != 1:
        raise InputError(
            f"{name} guides the condition of a2v and v2a; task 't2av' has none, so it must be 1 or "
            f"{CFG_CONDITION_DEFAULT:g} (the default); got {value!r}"
        )
    return value


def batch_size(value, name: str = "batch_size") -> int:
    return integer(value, name, 1, MAX_BATCH)


def duration(value, name: str = "duration", high: int = MAX_SECONDS) -> int:
    """Whole seconds (one 17-frame chunk each), 1 to ``high`` (the model's window; long clips go further, in
    windows); 2.0 counts as 2."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        if not math.isfinite(value) or value != int(value):
            raise InputError(
                f"{name} must be a whole number of seconds (1 s = one 17-frame chunk); got {describe(value)}"
            )
        value = int(value)
    return integer(value, f"{name} (seconds)", 1, high)


def side(value, name: str) -> int:
    """One side of a generated video in px: a multiple of 16 from 16 to MAX_SIDE."""
    px = integer(value, f"{name} (px)", PIXEL_MULTIPLE, MAX_SIDE)
    if px % PIXEL_MULTIPLE:
        raise InputError(f"{name} must be a multiple of {PIXEL_MULTIPLE} px; got {value!r}")
    return px


def size(height, width) -> tuple[int, int]:
    """Pixel size (height, width) of a generated video."""
    return side(height, "height"), side(width, "width")


def fps(value, name: str = "fps") -> float:
    return number(value, f"{name} (frames per second)", 0.0, MAX_FPS, above=True)


def sample_rate(value, name: str = "sample_rate") -> int:
    """Hz, a whole number; 44100.0 counts as 44100."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        if math.isfinite(value) and value == int(value):
            value = int(value)
    return integer(value, f"{name} (Hz)", 1, MAX_SAMPLE_RATE)


def index(value, count: int, name: str = "index") -> int:
    """An item of a batch of ``count``."""
    return integer(value, f"{name} (batch item)", 0, count - 1)


# ---- tensors -------------------------------------------------------------------------------------------------


def frames(value, name: str = "frames", as_float: bool = True) -> torch.Tensor:
    """Video frames (T, H, W, 3): float in [0, 1], or uint8 taken as 0..255; returned as float32 in [0, 1] (or as
    given, with ``as_float=False``)."""
    if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.shape[-1] != 3:
        raise InputError(f"{name} must be a (T, H, W, 3) tensor (ComfyUI IMAGE); got {describe(value)}")
    if 0 in value.shape:
        raise InputError(f"{name} is empty: shape {tuple(value.shape)}")
    if value.dtype != torch.uint8 and not value.is_floating_point():
        raise InputError(f"{name} must be float in [0, 1] or uint8; got {value.dtype}")
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise InputError(f"{name} contains NaN or infinite values")
    if not as_float:
        return value
    return value.float().div_(255) if value.dtype == torch.uint8 else value.float()


def waveform(value, name: str = "waveform") -> torch.Tensor:
    """Audio (C, N) float (a 1-D tensor is mono) in [-1, 1]. Peaks up to MAX_AUDIO_PEAK are let through (the
    encoder clips them, and says so); louder audio is refused, as it is almost always integer PCM not divided down."""
    if not isinstance(value, torch.Tensor) or value.dim() not in (1, 2):
        raise InputError(f"{name} must be a (channels, samples) tensor; got {describe(value)}")
    if not value.is_floating_point():
        raise InputError(f"{name} must be float in [-1, 1]; got {value.dtype}")
    value = value if value.dim() == 2 else value.unsqueeze(0)
    if 0 in value.shape:
        raise InputError(f"{name} is zero-length: shape {tuple(value.shape)}; audio needs at least one sample")
    if not torch.isfinite(value).all():
        raise InputError(f"{name} contains NaN or infinite values")
    peak = float(value.abs().max())
    if peak > MAX_AUDIO_PEAK:
        raise InputError(
            f"{name} peaks at {peak:.4g}; float audio must lie in [-1, 1] (up to {MAX_AUDIO_PEAK:g} is clipped). "
            "Divide integer PCM by its full scale (e.g. 32768 for 16-bit) first"
        )
    return value


# ---- text, choices and objects --------------------------------------------------------------------------------


def prompt(value, name: str = "prompt", required: bool = False) -> str:
    """Text: a str that UTF-8 can encode (no lone surrogates); non-blank when ``required``."""
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string; got {describe(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{name} holds a character UTF-8 cannot encode ({e.reason} at position {e.start})") from None
    if required and not value.strip():
        raise InputError(f"{name} must be non-empty text; got {describe(value)}")
    return value


def choice(value, choices, name: str) -> str:
    """One of ``choices`` (a collection of names), exactly as written there."""
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} must be one of {', '.join(sorted(choices))}; got {describe(value)}")
    return value


def instance(value, expected: type | tuple[type, ...], name: str, hint: str = ""):
    """``value`` if it is an ``expected``; otherwise an InputError naming the input and the type it needs."""
    if not isinstance(value, expected):
        kinds = expected if isinstance(expected, tuple) else (expected,)
        wanted = " or ".join(k.__name__ for k in kinds)
        raise InputError(f"{name} must be of type {wanted}{hint}; got {describe(value)}")
    return value


def condition(task: str, video, audio, video_name: str = "video", audio_name: str = "audio") -> None:
    """A2V needs its audio and V2A its video: the clean condition the other modality is generated for."""
    task_index(task)
    if task == "a2v" and audio is None:
        raise InputError(f"task 'a2v' (audio to video) needs the {audio_name} input; none was given")
    if task == "v2a" and video is None:
        raise InputError(f"task 'v2a' (video to audio) needs the {video_name} input; none was given")


def device(value, name: str = "device") -> torch.device:
    """A torch device this machine has: cpu, cuda[:N] with N below the GPU count, or mps where it exists."""
    available = available_devices()
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"{name} {describe(value)} is not a device name; available: {', '.join(available)}") from None
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
    else:
        ok = dev.type == "cpu" or (dev.type == "mps" and "mps" in available)
    if not ok:
        raise InputError(f"{name} {describe(value)} is not on this machine; available: {', '.join(available)}")
    return dev


def available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


# ---- files ---------------------------------------------------------------------------------------------------


def path(value, name: str) -> Path:
    """A file system path the OS can take: str or PathLike, not empty, no NUL byte, encodable, names of at most
    255 bytes (anything else makes the OS raise instead of answering "no such file")."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise InputError(f"{name} must be a file path; got {describe(value)}")
    try:
        raw = os.fsencode(os.path.expanduser(value))
    except (UnicodeEncodeError, TypeError):
        raise InputError(f"{name} {describe(value)} holds characters the file system cannot encode") from None
    if b"\0" in raw:
        raise InputError(f"{name} {describe(value)} holds a NUL byte; no file can have that name")
    if len(raw) > 4096 or any(len(part) > 255 for part in raw.split(b"/")):
        raise InputError(f"{name} {describe(value)} is longer than file names may be (255 bytes a name)")
    return Path(os.fsdecode(raw))


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` really lies in ``folder``, after resolving ``..`` and symlinks on both: the one rule for
    every file read from a folder a user names (node inputs, the files a training CSV lists)."""
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath((real, root)) == root


def output_file(value, name: str = "out", suffix: str = ".mp4", inputs: dict | None = None) -> Path:
    """Where an output goes: a ``suffix`` file (written as what its name says) in an existing folder, never a folder
    and never one of ``inputs`` ({name: path}; the same file by resolved path or inode, hard links included)."""
    p = path(value, name)
    if p.suffix.lower() != suffix:
        raise InputError(f"{name} {str(p)!r} must end in {suffix} (it is written as {suffix[1:].upper()})")
    if p.is_dir():
        raise InputError(f"{name} {str(p)!r} is a folder; give the {suffix} file to write")
    if not p.parent.is_dir():
        raise InputError(f"{name} {str(p)!r}: the folder {str(p.parent)!r} does not exist")
    for input_name, input_path in (inputs or {}).items():
        if isinstance(input_path, (str, os.PathLike)) and _same_file(p, path(input_path, input_name)):
            raise InputError(
                f"{name} {str(p)!r} is the same file as {input_name} {str(input_path)!r}; writing it would destroy "
                "the input, so choose another output name"
            )
    return p


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same file
        return False
