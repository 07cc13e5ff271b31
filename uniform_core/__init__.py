"""UniForm: one diffusion transformer for text-to-audio-video, audio-to-video and video-to-audio."""

from .errors import Cancelled, CheckpointError, InputError, UniFormError

__version__ = "0.1.0"

__all__ = ["Cancelled", "CheckpointError", "InputError", "UniFormError", "__version__"]
