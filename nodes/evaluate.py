"""Evaluation: how well the sound's onsets line up with the motion in the frames (AV-align)."""

from __future__ import annotations

import importlib.util

from uniform_core import media
from uniform_core.errors import UniFormError
from uniform_core.eval.av_align import av_align, plot_av_align

from .common import UniFormNode, fps_input

_NEEDS = {"librosa": "librosa", "cv2": "opencv-python-headless"}  # module -> package
_FIX = (
    "pip install librosa opencv-python-headless "
    "(portable build: python_embeded\\python.exe -m pip install librosa opencv-python-headless)"
)


class UniFormAVSync(UniFormNode):
    DISPLAY_NAME = "UniForm AV Sync"
    CATEGORY = "UniForm/evaluate"
    DESCRIPTION = (
        "AV-align score (Seeing & Hearing): the share of sound onsets that fall on a peak of motion, 0..1, plus a "
        "plot of both curves with the matched peaks. Needs librosa and OpenCV in ComfyUI's Python: " + _FIX + "."
    )
    RETURN_TYPES = ("FLOAT", "IMAGE")
    RETURN_NAMES = ("score", "plot")
    OUTPUT_TOOLTIPS = (
        "AV-align, 0..1: the share of sound onsets on a motion peak (higher is better in sync).",
        "The onset and motion curves with the matched peaks, as an IMAGE.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "Video frames (T, H, W, 3), e.g. from UniForm Video Decode."}),
                "fps": fps_input("Frame rate of the frames."),
                "audio": ("AUDIO", {"tooltip": "The sound that goes with the frames."}),
            }
        }

    def execute(self, frames, fps, audio):
        missing = [package for module, package in _NEEDS.items() if importlib.util.find_spec(module) is None]
        if missing:
            raise UniFormError(
                f"AV-align needs {' and '.join(missing)}, which ComfyUI's Python lacks; install them there: {_FIX}"
            )
        clip = media.from_comfy_audio(audio)
        result = av_align(frames, fps, clip.waveform, clip.sample_rate)
        return (result.score, plot_av_align(result).unsqueeze(0))


NODES = [UniFormAVSync]
