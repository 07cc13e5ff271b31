"""Noise schedule, task latents, samplers and classifier-free guidance (DESIGN.md section 3)."""

from .guidance import cfg_combine, make_model_fn
from .samplers import SAMPLER_DESCRIPTIONS, SAMPLERS, check_sampler_args, make_scheduler, sample, sampler_timesteps
from .schedule import NoiseSchedule
from .task_latent import TaskLatent, keep_mask, pack, unpack

__all__ = [
    "SAMPLERS",
    "SAMPLER_DESCRIPTIONS",
    "NoiseSchedule",
    "TaskLatent",
    "cfg_combine",
    "check_sampler_args",
    "keep_mask",
    "make_model_fn",
    "make_scheduler",
    "pack",
    "sample",
    "sampler_timesteps",
    "unpack",
]
