"""Long clips: sample a latent of any length in overlapping windows, and extend a latent by more seconds."""

from __future__ import annotations

from uniform_core import long
from uniform_core.diffusion.samplers import SAMPLER_DESCRIPTIONS, SAMPLERS
from uniform_core.errors import InputError
from uniform_core.tasks import LONG_MAX_SECONDS

from . import host, managed
from .common import (
    AUDIO_LATENT,
    DIT,
    LATENT,
    TEXT,
    VIDEO_LATENT,
    UniFormNode,
    cfg_condition_input,
    live_preview,
    preview_input,
)


def _sampling_inputs() -> dict:
    """The widgets both long nodes share, in widget order."""
    return {
        "seed": (
            "INT",
            {
                "default": 0,
                "min": 0,
                "max": 2**63 - 1,
                "control_after_generate": True,
                "tooltip": "Noise seed; window w, batch item i uses seed + w * batch + i.",
            },
        ),
        "steps": ("INT", {"default": 30, "min": 1, "max": 1000, "tooltip": "Denoising steps per window."}),
        "cfg_video": (
            "FLOAT",
            {
                "default": 3.0,
                "min": 0.0,
                "max": 30.0,
                "step": 0.1,
                "tooltip": "Guidance scale of the picture (uniform-tiny: 3 for t2av, 1 for a2v); none without text.",
            },
        ),
        "cfg_audio": (
            "FLOAT",
            {
                "default": 3.0,
                "min": 0.0,
                "max": 30.0,
                "step": 0.1,
                "tooltip": "Guidance scale of the sound (uniform-tiny: 3 for t2av, 1 for v2a), in the same batched "
                "model call as the picture's. Ignored without text.",
            },
        ),
        "sampler": (
            list(SAMPLERS),
            {"default": "ddim", "tooltip": "; ".join(f"{k}: {v}" for k, v in SAMPLER_DESCRIPTIONS.items())},
        ),
        "window": (
            "INT",
            {
                "default": 2,
                "min": 1,
                "max": 16,
                "tooltip": "Seconds per window: the clip length the model was trained on (uniform-tiny: 2).",
            },
        ),
        "overlap": (
            "INT",
            {
                "default": 1,
                "min": 1,
                "max": 15,
                "tooltip": "Seconds each window shares with what came before; they are kept as made and continued.",
            },
        ),
    }


def _check_text(latent, text) -> None:
    if getattr(latent, "task", None) == "t2av" and text is None:
        raise InputError("task 't2av' needs the text input; connect it from a UniForm Text Encode node")


class UniFormLongSampler(UniFormNode):
    DISPLAY_NAME = "UniForm Long Sampler"
    CATEGORY = "UniForm/sampling"
    DESCRIPTION = (
        "Samples a task latent of any length (e.g. 30 s or 60 s) in overlapping windows of the model's clip length, "
        "each window continuing the one before. A2V/V2A windows condition on their own part of the whole condition."
    )
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The whole clip's latent, for the Decode nodes or UniForm Extend.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dit": (DIT, {"tooltip": "From UniForm Load DiT or Load Bundle."}),
                "latent": (LATENT, {"tooltip": "From UniForm Task Latent, of any duration."}),
                **_sampling_inputs(),
            },
            "optional": {
                "text": (TEXT, {"tooltip": "Prompt from UniForm Text Encode; needed by t2av, optional for a2v/v2a."}),
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
        cfg_video,
        cfg_audio,
        sampler,
        window,
        overlap,
        text=None,
        preview_interval=1,
        cfg_condition=None,
    ):
        _check_text(latent, text)
        sampling = (seed, steps, cfg_video, cfg_audio, sampler, window, overlap, preview_interval, cfg_condition)
        return _sample_windows(dit, latent, text, *sampling)


class UniFormExtend(UniFormNode):
    DISPLAY_NAME = "UniForm Extend"
    CATEGORY = "UniForm/sampling"
    DESCRIPTION = (
        "Makes a clip longer: the latent's last seconds are kept and continued for `seconds` more, in windows. "
        "A2V needs the audio of the added seconds, V2A their video."
    )
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The longer clip's latent: the input unchanged, then the new seconds.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dit": (DIT, {"tooltip": "From UniForm Load DiT or Load Bundle."}),
                "latent": (LATENT, {"tooltip": "A sampled latent (Sampler, Long Sampler or Extend) to continue."}),
                "seconds": (
                    "INT",
                    {"default": 4, "min": 1, "max": LONG_MAX_SECONDS, "tooltip": "Seconds to add at the end."},
                ),
                **_sampling_inputs(),
            },
            "optional": {
                "text": (TEXT, {"tooltip": "Prompt for the new seconds; needed by t2av, optional for a2v/v2a."}),
                "video_latent": (VIDEO_LATENT, {"tooltip": "V2A: the video of the added seconds (Video Encode)."}),
                "audio_latent": (AUDIO_LATENT, {"tooltip": "A2V: the sound of the added seconds (Audio Encode)."}),
                "preview_interval": preview_input(),
                "cfg_condition": cfg_condition_input(),
            },
        }

    def execute(
        self,
        dit,
        latent,
        seconds,
        seed,
        steps,
        cfg_video,
        cfg_audio,
        sampler,
        window,
        overlap,
        text=None,
        video_latent=None,
        audio_latent=None,
        preview_interval=1,
        cfg_condition=None,
    ):
        _check_text(latent, text)
        given = {"a2v": audio_latent, "v2a": video_latent}.get(getattr(latent, "task", None))
        longer = long.extend_latent(latent, seconds, None if given is None else given.latent)
        sampling = (seed, steps, cfg_video, cfg_audio, sampler, window, overlap, preview_interval, cfg_condition)
        return _sample_windows(dit, longer, text, *sampling, done=int(latent.duration))


def _sample_windows(
    dit, latent, text, seed, steps, cfg_video, cfg_audio, sampler, window, overlap, preview_interval, cfg_condition,
    done=0,
):  # fmt: skip
    """``long.sample_long`` with the host's progress bar, Cancel and live preview; ``done``: seconds already made."""
    progress, cancel, preview = host.progress_reporter(), host.cancel_check(), live_preview(dit, preview_interval)
    with managed.running(dit) as model:
        out = long.sample_long(
            model, latent, text, seed, steps, cfg_video, sampler, 1, window, overlap, progress, cancel, cfg_audio,
            done, preview=preview, cfg_condition=cfg_condition,
        )  # fmt: skip
    return (out.latent,)


NODES = [UniFormLongSampler, UniFormExtend]
