"""Evaluation: how well the sound's onsets line up with the motion in the frames (AV-align)."""

from __future__ import annotations

from uniform_core import media
from uniform_core.eval.av_align import av_align, plot_av_align

from .common import UniFormNode, fps_input


class UniFormAVSync(UniFormNode):
    DISPLAY_NAME = "UniForm AV Sync"
    CATEGORY = "UniForm/evaluate"
    DESCRIPTION = (
        "AV-align score (Seeing & Hearing): the share of sound onsets that fall on a peak of motion, 0..1, plus a "
        "plot of both curves with the matched peaks. Needs librosa and OpenCV in ComfyUI's Python "
        "(pip install librosa opencv-python-headless)."
    )
    RETURN_TYPES = ("FLOAT", "IMAGE")
    RETURN_NAMES = ("score", "plot")

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
        clip = media.from_comfy_audio(audio)
        result = av_align(frames, fps, clip.waveform, clip.sample_rate)
        return (result.score, plot_av_align(result).unsqueeze(0))


NODES = [UniFormAVSync]
