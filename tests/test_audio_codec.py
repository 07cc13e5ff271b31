"""AudioLDM codec: exact real-checkpoint keys, latent/waveform shapes, trimming, errors, files and folders, and
the shipped uniform-tiny codec's level and onsets on real clips."""

import copy
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from uniform_core import pipeline
from uniform_core.bundle import default_bundle_available, load_bundle
from uniform_core.codecs.audio import (
    AUDIO_VAE_PRESETS,
    VOCODER_PRESETS,
    AudioCodec,
    AudioVAE,
    Vocoder,
    VocoderConfig,
    load_audio_codec,
    load_audio_vae,
    load_vocoder,
)
from uniform_core.errors import CheckpointError, InputError
from uniform_core.eval.benchmark import eval_spec
from uniform_core.eval.ceilings import ONSET_TOLERANCE_S
from uniform_core.eval.events import audio_onsets, event_f1
from uniform_core.eval.sound import audio_level
from uniform_core.train.synthetic import make_clip

MANIFESTS = Path(__file__).parent / "data" / "manifests"
AUDIOLDM_FBANK = Path(__file__).parent / "data" / "golden" / "audioldm" / "fbank.safetensors"  # see test_mel.py
AUDIOLDM_CASES = {"short_256": ("short", 256), "long_10s_1024": ("long_10s", 1024)}  # case: (clip, frames)
AUDIOLDM_CASES |= {"short_22k_200": ("short_22k", 200), "long_200": ("long", 200)}


def _manifest(name):
    return json.loads((MANIFESTS / name).read_text())


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return AudioCodec(AudioVAE.from_preset("tiny"), Vocoder.from_preset("tiny")).eval()


def _wave(seconds: float, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, int(seconds * 16000), generator=g) * 2 - 1


@pytest.mark.parametrize(
    "cls, preset, manifest",
    [(AudioVAE, "audioldm-s-full", "audioldm_vae.json"), (Vocoder, "audioldm-s-full", "audioldm_vocoder.json")],
)
def test_real_presets_have_the_manifest_keys_and_shapes(cls, preset, manifest):
    with torch.device("meta"):
        module = cls.from_preset(preset)
    ours = {k: list(v.shape) for k, v in module.model.state_dict().items()}
    assert ours == _manifest(manifest)["state_dict"]


def test_real_preset_configs_are_the_reference_configs():
    vae_ref = _manifest("audioldm_vae.json")["header"]["config"]
    vae = AUDIO_VAE_PRESETS["audioldm-s-full"]
    kwargs = json.loads(json.dumps(vae.diffusers_kwargs()))
    assert {k: kwargs[k] for k in vae_ref if k != "scaling_factor"} == {
        k: v for k, v in vae_ref.items() if k != "scaling_factor"
    }
    assert vae.scaling_factor == 0.9227914214134216  # cvssp/audioldm = audioldm-s-full
    voc_ref = _manifest("audioldm_vocoder.json")["header"]["config"]
    assert json.loads(json.dumps(asdict(VOCODER_PRESETS["audioldm-s-full"]))) == voc_ref
    assert VOCODER_PRESETS["audioldm-s-full"].hop_length == 160


@pytest.mark.parametrize("seconds", [1, 2, 3, 4])
def test_latent_shape_per_duration(codec, seconds):
    z = codec.encode(_wave(seconds))
    assert z.shape == (1, 8, 25 * seconds, 16)
    assert z.dtype == torch.float32 and torch.isfinite(z).all()


def test_four_seconds_batch(codec):
    assert codec.encode(_wave(4, batch=2)).shape == (2, 8, 100, 16)


def test_decode_gives_640_samples_per_latent_step(codec):
    wav = codec.decode(torch.randn(2, 8, 25, 16))
    assert wav.shape == (2, 25 * 640)
    assert wav.dtype == torch.float32 and wav.abs().max() <= 1
    assert codec.decode(codec.encode(_wave(1))).shape == (1, 16000)
    assert codec.sample_rate == 16000 and codec.samples_per_latent_step == 640


def test_vocoder_output_is_trimmed_to_the_hop(codec):
    mel = torch.randn(1, 40, 64)
    raw = codec.vocoder.model(mel)
    trimmed = codec.vocoder(mel)
    assert raw.shape[-1] > 40 * 160  # HiFi-GAN's transposed convolutions overshoot (160 T + 32)
    assert trimmed.shape == (1, 40 * 160)
    assert torch.equal(trimmed, raw[:, : 40 * 160])


def test_encode_sampling_is_seeded_and_deterministic_is_the_scaled_mean(codec):
    wav = _wave(1, seed=3)
    a = codec.encode(wav, generator=torch.Generator().manual_seed(1))
    b = codec.encode(wav, generator=torch.Generator().manual_seed(1))
    c = codec.encode(wav, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    half = AudioCodec(AudioVAE(replace(codec.vae.config, scaling_factor=0.5)), codec.vocoder)
    half.vae.load_state_dict(codec.vae.state_dict())
    mean = codec.encode(wav, deterministic=True)
    assert torch.equal(mean, codec.encode(wav, deterministic=True))
    assert torch.allclose(half.encode(wav, deterministic=True), mean * 0.5, atol=1e-6)


def test_encode_is_invariant_to_level_and_offset(codec):
    wav = _wave(1, seed=4)
    assert torch.allclose(
        codec.encode(wav, deterministic=True), codec.encode(wav * 0.1 + 0.2, deterministic=True), atol=1e-4
    )


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.full((1, 16000), float("nan")), "NaN"),
        (torch.zeros(1, 0), "too short"),
        (torch.zeros(16000), r"\(batch, samples\)"),
        (torch.zeros(1, 2, 16000), r"\(batch, samples\)"),
        (torch.zeros(1, 16001), "multiple of 640"),
    ],
)
def test_bad_waveforms_raise_input_error(codec, bad, match):
    with pytest.raises(InputError, match=match):
        codec.encode(bad)


def test_bad_frame_counts_raise_input_error(codec):
    for bad in (0, 6, 2.0, True):
        with pytest.raises(InputError, match="multiple of 4 mel frames"):
            codec.encode(_wave(1), num_frames=bad)


class VAEInput:
    """Records the mel the audio VAE's encoder is given, ``(B, T, 64)``."""

    def __init__(self, codec):
        self.seen = []
        self.hook = codec.vae.model.encoder.register_forward_pre_hook(lambda m, a: self.seen.append(a[0][:, 0]))

    def __enter__(self):
        return self.seen

    def __exit__(self, *exc):
        self.hook.remove()


def _reference_case(name):
    """A clip of the AudioLDM reference file (PCM16 / 32768 at its own rate) and the fbank AudioLDM made of it."""
    data = load_file(AUDIOLDM_FBANK)
    clip, frames = AUDIOLDM_CASES[name]
    waveform = data[f"pcm16/{clip}"].float().unsqueeze(0) / 32768
    return waveform, int(data[f"sample_rate/{clip}"]), frames, data[f"fbank/{name}"]


@pytest.mark.parametrize("name", ["short_256", "long_10s_1024"])
def test_the_vae_sees_audioldm_s_fbank(codec, name):
    waveform, _, frames, expected = _reference_case(name)
    with VAEInput(codec) as seen:
        z = codec.encode(waveform, deterministic=True, num_frames=frames)
    assert z.shape == (1, 8, frames // 4, 16)
    torch.testing.assert_close(seen[0][0].exp(), expected.exp(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["short_22k_200", "long_200"])
def test_pipeline_encode_audio_gives_the_vae_audioldm_s_fbank(codec, name):
    """Through the pipeline's conforming (resampled, 2 s): the mel is still AudioLDM's, the returned sound is cut."""
    waveform, rate, frames, expected = _reference_case(name)
    with VAEInput(codec) as seen:
        encoded = pipeline.encode_audio(codec, waveform, rate, duration=2)
    assert encoded.latent.shape == (1, 8, 50, 16) and encoded.waveform.shape == (32000,)
    torch.testing.assert_close(seen[0][0].exp(), expected.exp(), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(1, 4, 25, 16), r"\(batch, 8, steps, 16\)"),
        (torch.zeros(8, 25, 16), r"\(batch, 8, steps, 16\)"),
        (torch.zeros(1, 8, 0, 16), "steps >= 1"),
        (torch.full((1, 8, 25, 16), float("inf")), "NaN or infinite"),
    ],
)
def test_bad_latents_raise_input_error(codec, bad, match):
    with pytest.raises(InputError, match=match):
        codec.decode(bad)


def test_mismatched_parts_are_refused(codec):
    with pytest.raises(CheckpointError, match="80 mel bins"):
        AudioCodec(codec.vae, Vocoder(VocoderConfig(model_in_dim=80, upsample_initial_channel=32)))


def test_component_files_round_trip(codec, tmp_path):
    codec.vae.save(tmp_path / "audio_vae.safetensors")
    codec.vocoder.save(tmp_path / "vocoder.safetensors")
    vae = load_audio_vae(tmp_path / "audio_vae.safetensors")
    vocoder = load_vocoder(tmp_path / "vocoder.safetensors")
    assert vae.config == codec.vae.config and vocoder.config == codec.vocoder.config
    loaded = load_audio_codec(tmp_path)
    z = torch.randn(1, 8, 5, 16)
    assert torch.equal(loaded.decode(z), codec.decode(z))
    assert torch.equal(AudioVAE.load(tmp_path / "audio_vae.safetensors").decode(z), vae.decode(z))
    with pytest.raises(CheckpointError, match="'vocoder' file"):
        load_audio_vae(tmp_path / "vocoder.safetensors")
    with pytest.raises(CheckpointError, match="expected a UniForm 'vocoder' file"):
        Vocoder.load(tmp_path / "audio_vae.safetensors")


def test_diffusers_audioldm_folder_loads(codec, tmp_path):
    codec.vae.model.save_pretrained(tmp_path / "vae")
    codec.vocoder.model.save_pretrained(tmp_path / "vocoder")
    loaded = load_audio_codec(tmp_path)
    assert loaded.vae.config == codec.vae.config and loaded.vocoder.config == codec.vocoder.config
    z = torch.randn(1, 8, 5, 16)
    assert torch.equal(loaded.decode(z), codec.decode(z))
    # a bare weight file uses the config.json beside it
    bare = load_audio_vae(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")
    assert bare.config == codec.vae.config
    # without one, the real AudioLDM config is assumed and a tiny file does not fit it
    alone = tmp_path / "alone" / "vae.safetensors"
    alone.parent.mkdir()
    shutil.copy(tmp_path / "vae" / "diffusion_pytorch_model.safetensors", alone)
    with pytest.raises(CheckpointError, match="mis-shaped keys"):
        load_audio_vae(alone)


def test_bad_paths_say_what_was_expected(codec, tmp_path):
    with pytest.raises(CheckpointError, match="vae/ and vocoder/"):
        load_audio_codec(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="vae/ and vocoder/"):
        load_audio_codec(tmp_path)
    (tmp_path / "vae").mkdir()
    (tmp_path / "vocoder").mkdir()
    with pytest.raises(CheckpointError, match="without the audio VAE files"):
        load_audio_codec(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vocoder(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_audio_vae(junk)


def test_bare_files_without_config_take_the_real_preset(codec, tmp_path, monkeypatch):
    # stand the tiny configs in for the real ones so the test needs no 55M-parameter files
    monkeypatch.setitem(AUDIO_VAE_PRESETS, "audioldm-s-full", codec.vae.config)
    monkeypatch.setitem(VOCODER_PRESETS, "audioldm-s-full", codec.vocoder.config)
    save_file(codec.vae.model.state_dict(), tmp_path / "vae.safetensors")
    save_file(codec.vocoder.model.state_dict(), tmp_path / "vocoder.safetensors")
    vae, vocoder = load_audio_vae(tmp_path / "vae.safetensors"), load_vocoder(tmp_path / "vocoder.safetensors")
    assert vae.config == codec.vae.config and vocoder.config == codec.vocoder.config
    z = torch.randn(1, 8, 5, 16)
    assert torch.equal(AudioCodec(vae, vocoder).decode(z), codec.decode(z))
    state = codec.vocoder.model.state_dict()
    save_file({k: v for k, v in state.items() if k != "conv_post.bias"}, tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match="missing keys: conv_post.bias"):
        load_vocoder(tmp_path / "cut.safetensors")


def test_pickled_diffusers_weights_load_with_weights_only(codec, tmp_path):
    codec.vae.model.save_pretrained(tmp_path / "vae")
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(codec.vae.model.state_dict(), tmp_path / "vae" / "diffusion_pytorch_model.bin")
    z = torch.randn(1, 8, 5, 16)
    assert torch.equal(load_audio_vae(tmp_path / "vae").decode(z), codec.vae.decode(z))


def test_half_precision_codec_keeps_a_float32_interface(codec):
    half = copy.deepcopy(codec).to(torch.bfloat16)
    wav = _wave(1, seed=5)
    z = half.encode(wav, deterministic=True)
    assert z.dtype == torch.float32
    assert torch.allclose(z, codec.encode(wav, deterministic=True), atol=0.1)
    assert half.decode(z).dtype == torch.float32


def test_scaling_factor_override(codec, tmp_path):
    codec.vae.save(tmp_path / "audio_vae.safetensors")
    codec.vocoder.save(tmp_path / "vocoder.safetensors")
    loaded = load_audio_codec(tmp_path, scaling_factor=0.5)
    assert (
        loaded.scaling_factor == 0.5
        and load_audio_vae(tmp_path / "audio_vae.safetensors").config.scaling_factor == 1.0
    )
    wav = _wave(1, seed=6)
    assert torch.allclose(loaded.encode(wav, deterministic=True), codec.encode(wav, deterministic=True) * 0.5)
    with pytest.raises(InputError, match="scaling_factor"):
        load_audio_vae(tmp_path / "audio_vae.safetensors", scaling_factor=-1.0)


# The shipped uniform-tiny codec on 8 fresh clips of the tuning range (22 impacts; 3 chimes, the sound it keeps
# worst), which no choice of its vocoder looked at. Bounds (share of impacts kept within 10 ms, |mean RMS
# difference| in dB): what these clips measured when they were set, less a small margin; the vocoder before issue
# 16 measured 0.41 / -12.6 dB (vocoder) and 0.32 / -13.5 dB (round trip) here. Issue 16's ceiling targets are
# >= 95 % within 10 ms and the level within 1 dB; not met yet (see the model card).
SHIPPED_SEEDS = range(1_000_950, 1_000_958)
SHIPPED_BOUNDS = {"vocoder": (0.95, 5.5), "audio_codec": (0.85, 7.5)}  # measured: 1.0 / -4.9 dB, 0.91 / -7.0 dB


@pytest.mark.skipif(not default_bundle_available(), reason="no embedded uniform-tiny here")
def test_shipped_codec_keeps_the_level_and_the_onsets_of_real_clips():
    bundle = load_bundle()
    codec, spec = bundle.audio_codec, eval_spec(bundle)
    kept, rms = {stage: [] for stage in SHIPPED_BOUNDS}, {stage: [] for stage in SHIPPED_BOUNDS}
    for seed in SHIPPED_SEEDS:
        clip = make_clip(seed, spec)
        x = clip.waveform[None]
        with torch.no_grad():
            out = {
                "vocoder": codec.vocoder(codec.mel.fbank(x, x.shape[1] // codec.mel.config.hop_length))[0],
                "audio_codec": codec.decode(codec.encode(x, deterministic=True))[0],
            }
        for stage, y in out.items():
            match = event_f1(audio_onsets(y, spec.sample_rate), clip.events, ONSET_TOLERANCE_S)
            kept[stage] += [1.0] * match.n_matched + [0.0] * (match.n_ref - match.n_matched)
            real = audio_level(clip.waveform, spec.sample_rate).rms_dbfs
            rms[stage].append(audio_level(y, spec.sample_rate).rms_dbfs - real)
    for stage, (min_kept, max_rms) in SHIPPED_BOUNDS.items():
        share, level = sum(kept[stage]) / len(kept[stage]), sum(rms[stage]) / len(rms[stage])
        assert share >= min_kept and abs(level) <= max_rms, (stage, share, level)
