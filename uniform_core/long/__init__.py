"""Clips longer than the model's window: sampled in overlapping windows that continue each other."""

from .generate import SEAMS, decode_long, generate_long
from .windows import Window, extend_latent, plan_windows, sample_long

__all__ = ["SEAMS", "Window", "decode_long", "extend_latent", "generate_long", "plan_windows", "sample_long"]
