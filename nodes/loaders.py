"""Loaders: one node per model part, plus one that loads a whole bundle (the embedded default by default)."""

from __future__ import annotations

import os

from uniform_core.bundle import load_bundle
from uniform_core.codecs.audio import AudioCodec, load_audio_vae, load_vocoder
from uniform_core.codecs.text import load_text_encoder
from uniform_core.codecs.video_vae import load_video_vae
from uniform_core.model.uniform_dit import UniFormDiT
from uniform_core.previews import load_preview_map

from . import host, managed
from .common import AUDIO_VAE, DIT, TEXT_ENCODER, VIDEO_VAE, UniFormNode

_DIT_TIP = "The diffusion transformer, for UniForm Sampler."
_VIDEO_VAE_TIP = "The video VAE, for UniForm Video Encode and Video Decode."
_AUDIO_VAE_TIP = "The audio VAE and vocoder, for UniForm Audio Encode and Audio Decode."
_TEXT_ENCODER_TIP = "The T5 text encoder, for UniForm Text Encode."


def _placement_inputs() -> dict:
    return {
        "precision": (
            host.PRECISIONS,
            {"default": "auto", "tooltip": "Weight precision. auto: bf16 where the device runs it well, else fp32."},
        ),
        "offload": (
            managed.OFFLOAD_MODES,
            {
                "default": "auto",
                "tooltip": "auto: ComfyUI's model management loads the weights before they run and unloads them "
                "when another model needs the memory (--lowvram/--novram/--highvram apply). offload: unload them to "
                "system memory right after each use. keep on device: once loaded, leave them on the GPU.",
            },
        ),
    }


def _file_input(what: str) -> tuple:
    return (host.list_model_files(), {"tooltip": f"{what} file in models/uniform."})


class UniFormLoadDiT(UniFormNode):
    DISPLAY_NAME = "UniForm Load DiT"
    CATEGORY = "UniForm/loaders"
    DESCRIPTION = "Loads the UniForm diffusion transformer (one self-describing safetensors file)."
    RETURN_TYPES = (DIT,)
    RETURN_NAMES = ("dit",)
    OUTPUT_TOOLTIPS = (_DIT_TIP,)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"dit_name": _file_input("UniForm DiT"), **_placement_inputs()}}

    def execute(self, dit_name, precision, offload):
        path = host.resolve_model(dit_name, "dit_name")
        component = managed.prepare(UniFormDiT.load(path), dit_name, precision, offload)
        component.preview = load_preview_map(os.path.dirname(path))  # the maps of the bundle it is part of, if any
        return (component,)


class UniFormLoadVideoVAE(UniFormNode):
    DISPLAY_NAME = "UniForm Load Video VAE"
    CATEGORY = "UniForm/loaders"
    DESCRIPTION = "Loads the video VAE (Open-Sora VAE v1.2 or a UniForm video_vae file)."
    RETURN_TYPES = (VIDEO_VAE,)
    RETURN_NAMES = ("video_vae",)
    OUTPUT_TOOLTIPS = (_VIDEO_VAE_TIP,)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": _file_input("Video VAE"), **_placement_inputs()}}

    def execute(self, vae_name, precision, offload):
        vae = load_video_vae(host.resolve_model(vae_name, "vae_name"))
        return (managed.prepare(vae, vae_name, precision, offload),)


class UniFormLoadAudioVAE(UniFormNode):
    DISPLAY_NAME = "UniForm Load Audio VAE + Vocoder"
    CATEGORY = "UniForm/loaders"
    DESCRIPTION = "Loads the audio VAE (AudioLDM mel VAE) and the HiFi-GAN vocoder that turns its mel into sound."
    RETURN_TYPES = (AUDIO_VAE,)
    RETURN_NAMES = ("audio_vae",)
    OUTPUT_TOOLTIPS = (_AUDIO_VAE_TIP,)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae_name": _file_input("Audio VAE"),
                "vocoder_name": _file_input("HiFi-GAN vocoder"),
                **_placement_inputs(),
            }
        }

    def execute(self, vae_name, vocoder_name, precision, offload):
        codec = AudioCodec(
            load_audio_vae(host.resolve_model(vae_name, "vae_name")),
            load_vocoder(host.resolve_model(vocoder_name, "vocoder_name")),
        )
        return (managed.prepare(codec, f"{vae_name} + {vocoder_name}", precision, offload),)


class UniFormLoadTextEncoder(UniFormNode):
    DISPLAY_NAME = "UniForm Load Text Encoder"
    CATEGORY = "UniForm/loaders"
    DESCRIPTION = "Loads the T5 text encoder whose width matches the DiT's caption channels."
    RETURN_TYPES = (TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = (_TEXT_ENCODER_TIP,)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text_encoder_name": _file_input("T5 text encoder"), **_placement_inputs()}}

    def execute(self, text_encoder_name, precision, offload):
        encoder = load_text_encoder(host.resolve_model(text_encoder_name, "text_encoder_name"))
        return (managed.prepare(encoder, text_encoder_name, precision, offload),)


class UniFormLoadBundle(UniFormNode):
    DISPLAY_NAME = "UniForm Load Bundle"
    CATEGORY = "UniForm/loaders"
    DESCRIPTION = (
        "Loads all four parts from one bundle folder in models/uniform, or the small embedded default "
        "uniform-tiny that ships with the pack."
    )
    RETURN_TYPES = (DIT, VIDEO_VAE, AUDIO_VAE, TEXT_ENCODER)
    RETURN_NAMES = ("dit", "video_vae", "audio_vae", "text_encoder")
    OUTPUT_TOOLTIPS = (_DIT_TIP, _VIDEO_VAE_TIP, _AUDIO_VAE_TIP, _TEXT_ENCODER_TIP)

    @classmethod
    def INPUT_TYPES(cls):
        bundles = host.list_bundles()
        tooltip = (
            "A folder in models/uniform holding dit, video_vae, audio_vae, vocoder and text_encoder .safetensors, "
            "or the embedded default."
        )
        return {"required": {"bundle": (bundles, {"default": bundles[0], "tooltip": tooltip}), **_placement_inputs()}}

    def execute(self, bundle, precision, offload):
        b = load_bundle(None if bundle == host.EMBEDDED_BUNDLE else host.resolve_bundle(bundle))
        parts = (b.dit, b.video_vae, b.audio_codec, b.text_encoder)
        dit, *codecs = (managed.prepare(m, f"{bundle}: {type(m).__name__}", precision, offload) for m in parts)
        dit.preview = b.preview
        return (dit, *codecs)


NODES = [UniFormLoadDiT, UniFormLoadVideoVAE, UniFormLoadAudioVAE, UniFormLoadTextEncoder, UniFormLoadBundle]
