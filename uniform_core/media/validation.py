"""Checks of the values media functions are given: each raises an InputError naming the value, what was expected
and what came."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import checks
from ..errors import InputError
from .in_memory import MediaBytes

# The value rules themselves live in uniform_core.checks, shared with the CLI, the pipeline and the nodes.
_describe = checks.describe
_check_fps = checks.fps
_check_rate = checks.sample_rate
_check_waveform = checks.waveform


def _check_frames(frames, name: str) -> torch.Tensor:
    """Frames as given (uint8 or float in [0, 1]), once :func:`uniform_core.checks.frames` accepts them."""
    return checks.frames(frames, name, as_float=False)


def _check_file(path, what: str) -> Path | MediaBytes:
    if isinstance(path, MediaBytes):
        if not path.data:
            raise InputError(f"{what} file is empty (0 bytes): {str(path)!r}")
        return path
    p = checks.path(path, what)
    if not p.is_file():
        raise InputError(f"{what} file not found: {str(p)!r}")
    if p.stat().st_size == 0:
        raise InputError(f"{what} file is empty (0 bytes): {str(p)!r}")
    return p


def _check_window(start, duration) -> tuple[float, float | None]:
    start = checks.number(start, "start (seconds)", 0.0)
    if duration is None:
        return start, None
    return start, checks.number(duration, "duration (seconds, or None: to the end)", 0.0, above=True)


def _is_pos_int(x) -> bool:
    try:
        return checks.integer(x, "", 1) > 0
    except InputError:
        return False
