"""The sampler: denoises the generated modality of a task latent, with progress and Cancel from ComfyUI."""

from __future__ import annotations

from uniform_core import checks, memory, pipeline
from uniform_core.diffusion.samplers import SAMPLER_DESCRIPTIONS, SAMPLERS
from uniform_core.errors import InputError
from uniform_core.model.compiled import compile_dit

from . import host, managed
from .common import DIT, LATENT, TEXT, UniFormNode, cfg_condition_input, live_preview, preview_input


class UniFormSampler(UniFormNode):
    DISPLAY_NAME = "UniForm Sampler"
    CATEGORY = "UniForm/sampling"
    DESCRIPTION = "Runs the diffusion loop. Cond and uncond run as one batch per step (classifier-free guidance)."
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The denoised latent, for UniForm Video Decode and Audio Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dit": (DIT, {"tooltip": "From UniForm Load DiT or Load Bundle."}),
                "latent": (LATENT, {"tooltip": "From UniForm Task Latent: the task and its condition."}),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": checks.SEED_MAX,
                        "control_after_generate": True,
                        "tooltip": "Noise seed; batch item i uses seed + i.",
                    },
                ),
                "steps": (
                    "INT",
                    {"default": 30, "min": 1, "max": checks.MAX_STEPS, "tooltip": "Denoising steps (paper: 30)."},
                ),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 5.0,
                        "min": 0.0,
                        "max": checks.MAX_CFG,
                        "step": 0.1,
                        "tooltip": "Classifier-free guidance scale (paper: 5; embedded uniform-tiny, with ddim: 3 for "
                        "t2av, 1 for a2v and v2a). Ignored without text.",
                    },
                ),
                "sampler": (
                    list(SAMPLERS),
                    {
                        "default": SAMPLERS[0],
                        "tooltip": "; ".join(f"{k}: {v}" for k, v in SAMPLER_DESCRIPTIONS.items()),
                    },
                ),
                "batch_size": (
                    "INT",
                    {"default": 1, "min": 1, "max": checks.MAX_BATCH, "tooltip": "Variations in one run."},
                ),
            },
            "optional": {
                "text": (TEXT, {"tooltip": "Prompt from UniForm Text Encode; needed by t2av, optional for a2v/v2a."}),
                "compile": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "torch.compile the DiT (once, dynamic shapes): faster steps on a GPU after a "
                        "first run that compiles.",
                    },
                ),
                "preview_interval": preview_input(),
                "cfg_condition": cfg_condition_input(),
            },
        }

    def execute(
        self,
        dit,
        latent,
        seed,
        steps,
        cfg,
        sampler,
        batch_size,
        text=None,
        compile=False,
        preview_interval=1,
        cfg_condition=None,
    ):
        if getattr(latent, "task", None) == "t2av" and text is None:
            raise InputError("task 't2av' needs the text input; connect it from a UniForm Text Encode node")
        progress, cancel, preview = host.progress_reporter(), host.cancel_check(), live_preview(dit, preview_interval)
        activations = memory.dit_bytes(dit.module, latent, batch_size, guided=text is not None and cfg != 1)
        with managed.running(dit, activations) as model:
            if compile:
                compile_dit(model)
            args = (model, latent, text, seed, steps, cfg, sampler, batch_size, progress, cancel)
            out = pipeline.sample(*args, preview=preview, cfg_condition=cfg_condition)
        return (out.latent,)


NODES = [UniFormSampler]
