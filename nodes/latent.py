"""The task latent: what the sampler starts from (noise where a modality is generated, the condition elsewhere)."""

from __future__ import annotations

from uniform_core import checks, pipeline
from uniform_core.tasks import LONG_MAX_SECONDS, TASK_DESCRIPTIONS, TASKS

from .common import AUDIO_LATENT, LATENT, VIDEO_LATENT, UniFormNode


class UniFormTaskLatent(UniFormNode):
    DISPLAY_NAME = "UniForm Task Latent"
    CATEGORY = "UniForm/latent"
    DESCRIPTION = "Chooses the task. " + " ".join(f"{t}: {d}." for t, d in TASK_DESCRIPTIONS.items())
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = (
        "The task and its starting point (noise, plus the condition for a2v/v2a), for UniForm Sampler.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        size_tooltip = "Pixels of the generated video, a multiple of 16 (t2av, a2v; v2a keeps its video's size)."
        return {
            "required": {
                "task": (
                    list(TASKS),
                    {"default": "t2av", "tooltip": "; ".join(f"{t}: {d}" for t, d in TASK_DESCRIPTIONS.items())},
                ),
                "duration": (
                    "INT",
                    {
                        "default": 4,
                        "min": 1,
                        "max": LONG_MAX_SECONDS,
                        "tooltip": "Seconds to generate (t2av); a2v and v2a last as long as their condition. Longer "
                        "than the model's clip (uniform-tiny: 2 s)? Sample with UniForm Long Sampler.",
                    },
                ),
                "width": (
                    "INT",
                    {"default": 256, "min": 16, "max": checks.MAX_SIDE, "step": 16, "tooltip": size_tooltip},
                ),
                "height": (
                    "INT",
                    {"default": 256, "min": 16, "max": checks.MAX_SIDE, "step": 16, "tooltip": size_tooltip},
                ),
            },
            "optional": {
                "video_latent": (VIDEO_LATENT, {"tooltip": "Needed by v2a: the video to make sound for."}),
                "audio_latent": (AUDIO_LATENT, {"tooltip": "Needed by a2v: the sound to make a video for."}),
            },
        }

    def execute(self, task, duration, width, height, video_latent=None, audio_latent=None):
        checks.condition(task, video_latent, audio_latent, "video_latent", "audio_latent")
        latent = pipeline.make_task_latent(
            task,
            duration=duration if task == "t2av" else None,
            height=None if task == "v2a" else height,
            width=None if task == "v2a" else width,
            video=video_latent if task == "v2a" else None,
            audio=audio_latent if task == "a2v" else None,
            max_seconds=LONG_MAX_SECONDS,
        )
        return (latent,)


NODES = [UniFormTaskLatent]
