"""What every UniForm node shares: the private socket types, the base class and error naming."""

from __future__ import annotations

from uniform_core.errors import UniFormError
from uniform_core.tasks import VIDEO_FPS

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


class UniFormNode:
    """Base of every node: ComfyUI calls ``run``, which calls ``execute`` and prefixes any UniFormError with the
    node's display name, so the message in the UI says which node failed."""

    DISPLAY_NAME = "UniForm"
    FUNCTION = "run"
    CATEGORY = "UniForm"

    def run(self, **inputs):
        try:
            return self.execute(**inputs)
        except UniFormError as e:
            raise type(e)(f"{self.DISPLAY_NAME}: {e}") from e


def fps_input(tooltip: str) -> tuple:
    """The frame-rate widget shared by every node that takes frames."""
    return ("FLOAT", {"default": float(VIDEO_FPS), "min": 1.0, "max": 240.0, "step": 0.001, "tooltip": tooltip})
