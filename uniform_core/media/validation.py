"""Checks of the values media functions are given: each raises an InputError naming the value, what was expected
and what came."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} ({x.dtype})"
    return type(x).__name__


def _check_fps(fps, name: str) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"{name} must be a positive number of frames per second; got {fps!r}")
    return float(fps)


def _check_rate(rate, name: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise InputError(f"{name} must be a positive whole number of Hz; got {rate!r}")
    if rate != int(rate):
        raise InputError(f"{name} must be a whole number of Hz; got {rate!r}")
    return int(rate)


def _check_frames(frames, name: str) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[-1] != 3:
        raise InputError(f"{name} must be a (T, H, W, 3) tensor (ComfyUI IMAGE); got {_describe(frames)}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise InputError(f"{name} is empty: shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise InputError(f"{name} must be float in [0, 1] or uint8; got {frames.dtype}")
    if frames.is_floating_point() and not torch.isfinite(frames).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return frames


def _check_waveform(waveform, name: str) -> torch.Tensor:
    """(C, N) float, non-empty and finite; a 1-D tensor is taken as mono."""
    if not isinstance(waveform, torch.Tensor) or waveform.dim() not in (1, 2):
        raise InputError(f"{name} must be a (channels, samples) tensor; got {_describe(waveform)}")
    if not waveform.is_floating_point():
        raise InputError(f"{name} must be float in [-1, 1]; got {waveform.dtype}")
    waveform = waveform if waveform.dim() == 2 else waveform.unsqueeze(0)
    if waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise InputError(f"{name} is zero-length: shape {tuple(waveform.shape)}; audio needs at least one sample")
    if not torch.isfinite(waveform).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return waveform


def _check_file(path, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{what} must be a file path; got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} file not found: {str(p)!r}")
    if p.stat().st_size == 0:
        raise InputError(f"{what} file is empty (0 bytes): {str(p)!r}")
    return p


def _check_window(start, duration) -> tuple[float, float | None]:
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start) or start < 0:
        raise InputError(f"start must be a number of seconds >= 0; got {start!r}")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0
    ):
        raise InputError(f"duration must be a positive number of seconds or None (to the end); got {duration!r}")
    return float(start), None if duration is None else float(duration)


def _is_pos_int(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, np.integer)) and x > 0
