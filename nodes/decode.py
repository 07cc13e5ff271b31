"""Decoders: task latent -> IMAGE frames + fps, task latent -> AUDIO. One output item per batch item."""

from __future__ import annotations

from uniform_core import memory, pipeline
from uniform_core.long import conditions

from . import host, managed
from .common import AUDIO_VAE, LATENT, VIDEO_VAE, UniFormNode


class UniFormVideoDecode(UniFormNode):
    DISPLAY_NAME = "UniForm Video Decode"
    CATEGORY = "UniForm/decode"
    DESCRIPTION = "Decodes the video of a sampled latent into IMAGE frames (T, H, W, 3), one list item per batch item."
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("frames", "fps")
    OUTPUT_TOOLTIPS = ("Video frames (T, H, W, 3) in 0..1, one list item per batch item.", "Their frame rate (17).")
    OUTPUT_IS_LIST = (True, False)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": (VIDEO_VAE, {"tooltip": "From UniForm Load Video VAE or Load Bundle."}),
                "latent": (LATENT, {"tooltip": "From UniForm Sampler."}),
            }
        }

    def execute(self, video_vae, latent):
        host.check_interrupted()
        chunk, _ = memory.decode_bytes(video_vae.module, latent, latent.video.shape[0])
        with managed.running(video_vae, chunk) as vae:
            frames, fps = pipeline.decode_video(vae, latent)
        return (list(frames), fps)


class UniFormAudioDecode(UniFormNode):
    DISPLAY_NAME = "UniForm Audio Decode"
    CATEGORY = "UniForm/decode"
    DESCRIPTION = (
        "Decodes the sound of a sampled latent into AUDIO (mono, 16 kHz), one list item per batch item; latents "
        "longer than 16 s in overlapping 16 s segments, so memory stays that of one."
    )
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("Mono 16 kHz sound, one list item per batch item.",)
    OUTPUT_IS_LIST = (True,)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio_vae": (AUDIO_VAE, {"tooltip": "From UniForm Load Audio VAE + Vocoder or Load Bundle."}),
                "latent": (LATENT, {"tooltip": "From UniForm Sampler."}),
            }
        }

    def execute(self, audio_vae, latent):
        host.check_interrupted()
        with managed.running(audio_vae) as codec:
            waveforms, sample_rate = conditions.decode_audio_windowed(codec, latent)
        return ([{"waveform": w.unsqueeze(0), "sample_rate": sample_rate} for w in waveforms],)


NODES = [UniFormVideoDecode, UniFormAudioDecode]
