"""Models: the Open-Sora 1.2 STDiT3 backbone and the UniForm audio-video DiT built on it."""

from .attention import attention
from .stdit3 import STDiT3, STDiT3Backbone, STDiT3Config

__all__ = ["STDiT3", "STDiT3Backbone", "STDiT3Config", "attention"]
