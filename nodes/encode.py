"""Encoders: prompt -> text conditioning, frames or VIDEO -> video latent, AUDIO -> audio latent."""

from __future__ import annotations

from uniform_core import checks, media, pipeline
from uniform_core.errors import InputError
from uniform_core.long import conditions
from uniform_core.tasks import LONG_MAX_SECONDS, VIDEO_FPS

from . import host, managed
from .common import AUDIO_LATENT, AUDIO_VAE, TEXT, TEXT_ENCODER, VIDEO_LATENT, VIDEO_VAE, UniFormNode, fps_input

_DURATION_TOOLTIP = (
    f"Whole seconds to keep (1 s = 17 frames). 0: as long as the input, up to {LONG_MAX_SECONDS} s "
    f"(beyond {checks.MAX_SECONDS} s encoded {checks.MAX_SECONDS} s at a time, for the Long Sampler or Extend)."
)


class UniFormTextEncode(UniFormNode):
    DISPLAY_NAME = "UniForm Text Encode"
    CATEGORY = "UniForm/encode"
    DESCRIPTION = "Encodes the prompt (and an optional negative prompt that guidance steers away from)."
    RETURN_TYPES = (TEXT,)
    RETURN_NAMES = ("text",)
    OUTPUT_TOOLTIPS = ("The encoded prompt (and negative prompt), for the Sampler's text input.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (TEXT_ENCODER, {"tooltip": "From UniForm Load Text Encoder or Load Bundle."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What to see and hear."}),
                "negative_prompt": (
                    "STRING",
                    {"multiline": True, "default": "", "tooltip": "What to avoid. Empty: the model's null caption."},
                ),
            }
        }

    def execute(self, text_encoder, prompt, negative_prompt):
        with managed.running(text_encoder) as encoder:
            return (pipeline.encode_text(encoder, prompt, negative_prompt),)


class UniFormVideoEncode(UniFormNode):
    DISPLAY_NAME = "UniForm Video Encode"
    CATEGORY = "UniForm/encode"
    DESCRIPTION = (
        "Encodes a conditioning video for V2A: IMAGE frames plus their fps, or a VIDEO (e.g. from Load Video). "
        "Also returns the frames as conformed to the model (17 fps, whole seconds, multiple-of-16 size), to mux "
        "with the generated sound."
    )
    RETURN_TYPES = (VIDEO_LATENT, "IMAGE", "FLOAT")
    RETURN_NAMES = ("video_latent", "frames", "fps")
    OUTPUT_TOOLTIPS = (
        "The encoded video, for UniForm Task Latent's video_latent input (v2a).",
        "The frames as conformed to the model (17 fps, whole seconds, multiple-of-16 size), to save with the sound.",
        "Frame rate of those frames (17).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        size_tooltip = "Pixels, a multiple of 16; the video is scaled and center-cropped to it. 0: the input's size."
        return {
            "required": {
                "video_vae": (VIDEO_VAE, {"tooltip": "From UniForm Load Video VAE or Load Bundle."}),
                "fps": fps_input("Frame rate of the images input (a VIDEO brings its own)."),
                "duration": ("INT", {"default": 0, "min": 0, "max": LONG_MAX_SECONDS, "tooltip": _DURATION_TOOLTIP}),
                "width": (
                    "INT",
                    {"default": 0, "min": 0, "max": checks.MAX_SIDE, "step": 16, "tooltip": size_tooltip},
                ),
                "height": (
                    "INT",
                    {"default": 0, "min": 0, "max": checks.MAX_SIDE, "step": 16, "tooltip": size_tooltip},
                ),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Frames (T, H, W, 3), e.g. from Load Image batches. Or use video."}),
                "video": ("VIDEO", {"tooltip": "A native VIDEO, e.g. from Load Video. Or use images + fps."}),
            },
        }

    def execute(self, video_vae, fps, duration, width, height, images=None, video=None):
        if (images is None) == (video is None):
            given = "both" if images is not None else "neither"
            raise InputError(f"connect exactly one of the images or video inputs; got {given}")
        if video is not None:  # Load Video's file is decoded here by timestamps, at the model size when it is given
            size = checks.size(height, width) if height and width else None
            seconds = checks.duration(duration, high=LONG_MAX_SECONDS) if duration else LONG_MAX_SECONDS
            source = video if media.file_source(video) else host.decoded_video(video, "video")
            clip = media.from_comfy_video(source, fps=VIDEO_FPS, size=size, duration=seconds)
            images, fps = clip.frames, clip.fps
        with managed.running(video_vae) as vae:
            encoded = conditions.encode_video_long(vae, images, fps, duration or None, height or None, width or None)
        return (encoded, encoded.frames, float(encoded.fps))


class UniFormAudioEncode(UniFormNode):
    DISPLAY_NAME = "UniForm Audio Encode"
    CATEGORY = "UniForm/encode"
    DESCRIPTION = (
        "Encodes a conditioning sound for A2V from any AUDIO (any sample rate, mono or stereo). Also returns the "
        "sound as conformed to the model (mono 16 kHz, whole seconds), to mux with the video."
    )
    RETURN_TYPES = (AUDIO_LATENT, "AUDIO")
    RETURN_NAMES = ("audio_latent", "audio")
    OUTPUT_TOOLTIPS = (
        "The encoded sound, for UniForm Task Latent's audio_latent input (a2v).",
        "The sound as conformed to the model (mono 16 kHz, whole seconds), to save with the video.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio_vae": (AUDIO_VAE, {"tooltip": "From UniForm Load Audio VAE + Vocoder or Load Bundle."}),
                "audio": ("AUDIO", {"tooltip": "The sound to make a video for, e.g. from Load Audio."}),
                "duration": ("INT", {"default": 0, "min": 0, "max": LONG_MAX_SECONDS, "tooltip": _DURATION_TOOLTIP}),
            }
        }

    def execute(self, audio_vae, audio, duration):
        clip = media.from_comfy_audio(audio)
        with managed.running(audio_vae) as codec:
            encoded = conditions.encode_audio_long_clip(codec, clip.waveform, clip.sample_rate, duration or None)
        return (encoded, media.to_comfy_audio(media.AudioClip(encoded.waveform.view(1, -1), encoded.sample_rate)))


NODES = [UniFormTextEncode, UniFormVideoEncode, UniFormAudioEncode]
