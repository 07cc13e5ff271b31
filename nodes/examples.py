"""Example input: a synthetic clip of the kind the embedded default learned from, for trying A2V and V2A."""

from __future__ import annotations

from uniform_core import checks, media
from uniform_core.train.synthetic import SyntheticSpec, make_clip

from .common import UniFormNode


class UniFormExampleClip(UniFormNode):
    DISPLAY_NAME = "UniForm Example Clip"
    CATEGORY = "UniForm/examples"
    DESCRIPTION = (
        "A synthetic clip like those uniform-tiny was trained on: an object bouncing on a floor, with a sound at "
        "each impact (shape -> kind of sound, colour -> pitch). Lets A2V and V2A run without files of your own."
    )
    RETURN_TYPES = ("IMAGE", "FLOAT", "AUDIO", "STRING")
    RETURN_NAMES = ("frames", "fps", "audio", "caption")
    OUTPUT_TOOLTIPS = (
        "The clip's frames (T, H, W, 3), for UniForm Video Encode (v2a).",
        "Their frame rate (17).",
        "The clip's sound (16 kHz), for UniForm Audio Encode (a2v).",
        "A caption describing the clip, e.g. to compare with a t2av prompt.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 2**31 - 1,
                        "control_after_generate": True,
                        "tooltip": "Which clip: the same seed always gives the same clip.",
                    },
                ),
                "duration": ("INT", {"default": 2, "min": 1, "max": checks.MAX_SECONDS, "tooltip": "Seconds."}),
                "size": ("INT", {"default": 64, "min": 64, "max": 1024, "step": 16, "tooltip": "Width = height, px."}),
                "objects": ("INT", {"default": 1, "min": 1, "max": 2, "tooltip": "At most this many objects."}),
            }
        }

    def execute(self, seed, duration, size, objects):
        spec = SyntheticSpec(seconds=duration, size=size, max_objects=objects)
        clip = make_clip(seed, spec)
        audio = media.to_comfy_audio(media.AudioClip(clip.waveform.view(1, -1), spec.sample_rate))
        return (clip.frames, float(spec.fps), audio, clip.caption)


NODES = [UniFormExampleClip]
