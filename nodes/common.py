"""What every UniForm node shares: the private socket types, the base class that checks inputs and names errors,
the widgets several nodes take (fps, live-preview interval)."""

from __future__ import annotations

import logging

from uniform_core import checks
from uniform_core.diffusion.guidance import CONDITION_CFG
from uniform_core.diffusion.task_latent import TaskLatent
from uniform_core.errors import InputError, UniFormError
from uniform_core.previews import LivePreview
from uniform_core.stages import AudioLatent, TextConditioning, VideoLatent
from uniform_core.tasks import VIDEO_FPS

from . import host
from .managed import Component

logger = logging.getLogger(__name__)

# Private socket types: what flows between UniForm nodes only. Native types (IMAGE, AUDIO, VIDEO, FLOAT) are used
# wherever the data has their shape, so native nodes plug in on either side.
DIT = "UNIFORM_DIT"
VIDEO_VAE = "UNIFORM_VIDEO_VAE"
AUDIO_VAE = "UNIFORM_AUDIO_VAE"
TEXT_ENCODER = "UNIFORM_TEXT_ENCODER"
TEXT = "UNIFORM_TEXT"
VIDEO_LATENT = "UNIFORM_VIDEO_LATENT"
AUDIO_LATENT = "UNIFORM_AUDIO_LATENT"
LATENT = "UNIFORM_LATENT"

# What a value on each socket must be, and which node makes it.
_SOCKETS = {
    DIT: (Component, "UniForm Load DiT or Load Bundle"),
    VIDEO_VAE: (Component, "UniForm Load Video VAE or Load Bundle"),
    AUDIO_VAE: (Component, "UniForm Load Audio VAE + Vocoder or Load Bundle"),
    TEXT_ENCODER: (Component, "UniForm Load Text Encoder or Load Bundle"),
    TEXT: (TextConditioning, "UniForm Text Encode"),
    VIDEO_LATENT: (VideoLatent, "UniForm Video Encode"),
    AUDIO_LATENT: (AudioLatent, "UniForm Audio Encode"),
    LATENT: (TaskLatent, "UniForm Task Latent or UniForm Sampler"),
}


class UniFormNode:
    """Base of every node: ComfyUI calls ``run``, which checks each input against the node's own INPUT_TYPES
    (socket type, widget range, text: the checks of :mod:`uniform_core.checks`), calls ``execute``, and
    prefixes any UniFormError with the node's display name, so the message in the UI says which node failed."""

    DISPLAY_NAME = "UniForm"
    FUNCTION = "run"
    CATEGORY = "UniForm"

    def run(self, **inputs):
        try:
            _check_inputs(self.INPUT_TYPES(), inputs)
            return self.execute(**inputs)
        except UniFormError as e:
            raise type(e)(f"{self.DISPLAY_NAME}: {e}") from e


def _check_inputs(schema: dict, inputs: dict) -> None:
    required, optional = schema.get("required", {}), schema.get("optional", {})
    known = {**required, **optional, **schema.get("hidden", {})}
    unknown = sorted(set(inputs) - set(known))
    if unknown:
        raise InputError(f"unknown input {unknown[0]!r}; the node takes {', '.join(known)}")
    missing = [name for name in required if name not in inputs]
    if missing:
        raise InputError(f"input {missing[0]!r} is missing")
    for name, spec in required.items():
        _check_input(name, spec, inputs[name])
    for name, spec in optional.items():
        if inputs.get(name) is not None:
            _check_input(name, spec, inputs[name])


def _check_input(name: str, spec: tuple, value) -> None:
    kind, options = spec[0], spec[1] if len(spec) > 1 else {}
    low, high = options.get("min"), options.get("max")
    if isinstance(kind, (list, tuple)):  # which names are valid is the node's own rule (a task, a model file...)
        checks.prompt(value, name)
    elif kind == "INT":
        checks.integer(value, name, low, high)
    elif kind == "FLOAT":
        checks.number(value, name, low, high)
    elif kind == "STRING":
        checks.prompt(value, name)
    elif kind in _SOCKETS:
        expected, maker = _SOCKETS[kind]
        if not isinstance(value, expected):
            raise InputError(f"{name} must be {kind} (from {maker}); got {checks.describe(value)}")
    elif kind == "VIDEO" and not callable(getattr(value, "get_components", None)):
        raise InputError(f"{name} must be VIDEO (an object with get_components()); got {checks.describe(value)}")


def fps_input(tooltip: str) -> tuple:
    """The frame-rate widget shared by every node that takes frames."""
    return (
        "FLOAT",
        {"default": float(VIDEO_FPS), "min": 1.0, "max": checks.MAX_FPS, "step": 0.001, "tooltip": tooltip},
    )


def preview_input() -> tuple:
    """The live-preview interval widget of every sampling node (after the widgets it came after: saved workflows
    list widget values by position, so a new widget goes last)."""
    return (
        "INT",
        {
            "default": 1,
            "min": 1,
            "max": checks.MAX_STEPS,
            "tooltip": "Steps between live previews of the current estimate (video frames over a spectrogram strip), "
            "shown while ComfyUI's preview method is not none.",
        },
    )


def live_preview(dit: Component, every: int) -> LivePreview | None:
    """The sampler's preview callback for ``dit``: None outside ComfyUI, with its preview method none, or for a DiT
    without preview maps."""
    show = host.preview_shower()
    if show is None:
        return None
    if dit.preview is None:
        logger.info("UniForm: no live preview for %s: no preview.json beside it (scripts/fit_preview.py)", dit.name)
        return None
    return LivePreview(dit.preview, every, show)


def cfg_condition_input() -> tuple:
    """The condition-guidance widget of every sampling node, its last: -1 stands for the task's measured default
    (None in the CLI and the pipeline), so a new node samples as ``uniform-av generate`` does."""
    measured = ", ".join(f"{task.upper()} {CONDITION_CFG[task]:g}" for task in ("v2a", "a2v"))
    return (
        "FLOAT",
        {
            "default": checks.CFG_CONDITION_DEFAULT,
            "min": checks.CFG_CONDITION_DEFAULT,
            "max": checks.MAX_CFG,
            "step": 0.1,
            "tooltip": "A2V/V2A: guidance away from the model without the given sound or picture, in the same "
            f"batched model call (1: off; above 1 follows the condition's timing more closely). -1: the measured "
            f"default of the task ({measured}). T2AV has no condition: -1 or 1.",
        },
    )
