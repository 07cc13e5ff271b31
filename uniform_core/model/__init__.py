"""Models: the Open-Sora 1.2 STDiT3 backbone and the UniForm audio-video DiT built on it."""

from .attention import attention
from .init_weights import InitReport, init_from_opensora, init_from_pixart
from .stdit3 import STDiT3, STDiT3Backbone, STDiT3Config
from .uniform_dit import PRESETS, UniFormConfig, UniFormDiT

__all__ = [
    "PRESETS",
    "InitReport",
    "STDiT3",
    "STDiT3Backbone",
    "STDiT3Config",
    "UniFormConfig",
    "UniFormDiT",
    "attention",
    "init_from_opensora",
    "init_from_pixart",
]
