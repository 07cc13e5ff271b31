"""Save: frames + fps + sound -> an MP4 (H.264 + AAC) in ComfyUI's output folder, previewed on the node."""

from __future__ import annotations

import torch

from uniform_core import checks, media
from uniform_core.errors import InputError

from . import host
from .common import UniFormNode, fps_input


class UniFormSaveAV(UniFormNode):
    DISPLAY_NAME = "UniForm Save Video + Audio"
    CATEGORY = "UniForm/save"
    DESCRIPTION = (
        "Writes an MP4 whose video and audio streams have the same duration, named <prefix>_00001_.mp4 and counting "
        "up. One file per audio batch item. Also returns the (first) clip as a VIDEO for native nodes."
    )
    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("The first saved clip as a VIDEO, for native nodes such as Save Video.",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "Video frames (T, H, W, 3), e.g. from UniForm Video Decode."}),
                "fps": fps_input("Frame rate of the frames; link it from the decoder or encoder that made them."),
                "filename_prefix": (
                    "STRING",
                    {"default": "UniForm/AV", "tooltip": "File name prefix; a/b puts the files in the a subfolder."},
                ),
            },
            "optional": {"audio": ("AUDIO", {"tooltip": "Sound to mux, e.g. from UniForm Audio Decode."})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def execute(self, frames, fps, filename_prefix, audio=None, prompt=None, extra_pnginfo=None):
        frames, fps = checks.frames(frames), checks.fps(fps)
        checks.path(filename_prefix, "filename_prefix")
        clips = _clips(audio)
        metadata = host.file_metadata(prompt, extra_pnginfo)
        saved = []
        for clip in clips:
            out = host.next_output_file(filename_prefix, "mp4", frames.shape[2], frames.shape[1])
            media.write_mp4(out.path, frames.cpu(), fps, clip, metadata=metadata)
            saved.append({"filename": out.filename, "subfolder": out.subfolder, "type": "output"})
        video = host.make_video(frames.cpu(), fps, None if clips[0] is None else media.to_comfy_audio(clips[0]))
        return {"ui": {"images": saved, "animated": (True,)}, "result": (video,)}


def _clips(audio) -> list[media.AudioClip | None]:
    """One clip per batch item of an AUDIO value (ComfyUI stacks clips along the first axis); [None] for none."""
    if audio is None:
        return [None]
    waveform = checks.instance(audio.get("waveform"), torch.Tensor, "audio['waveform']", " (batch, channels, samples)")
    if waveform.dim() != 3:
        raise InputError(
            f"audio must be AUDIO with a (batch, channels, samples) waveform; got {checks.describe(waveform)}"
        )
    return [media.from_comfy_audio({**audio, "waveform": w[None]}) for w in waveform]


NODES = [UniFormSaveAV]
