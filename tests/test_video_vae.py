"""Video VAE (Open-Sora VAE v1.2): checkpoint layout, reference parity, chunking, loading and input errors.

Reference values (tests/data/README.md says how each file was made): ``golden/opensora/vae_temporal_small_*`` from
Open-Sora's ``VAE_Temporal``, and ``golden/opensora/vae_pipeline_small*`` from its whole ``VideoAutoencoderPipeline``
(2D + temporal VAE, small random weights): sampled encodes after ``torch.manual_seed`` and unclamped decodes.
"""

import json
import shutil
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from uniform_core import pipeline
from uniform_core.checkpoint import load_matching, save_component
from uniform_core.codecs.temporal_vae import TemporalVAE
from uniform_core.codecs.video_vae import VideoVAE, load_video_vae
from uniform_core.codecs.video_vae_config import PRESETS, TEMPORAL_FIELDS, VideoVAEConfig
from uniform_core.errors import CheckpointError, InputError

DATA = Path(__file__).parent / "data"  # travels with the tests; a missing file fails them, never skips them
MANIFEST = DATA / "manifests" / "opensora_vae_v1_2.json"
GOLDEN = DATA / "golden" / "opensora"
REFERENCE_FOLDER = GOLDEN / "vae_pipeline_small"  # an Open-Sora VAE folder: config.json + model.safetensors
REFERENCE_CASES = {34: 1234, 26: 7}  # frames of the clip: the seed given to torch.manual_seed before encode
# config.json of hpcai-tech/OpenSora-VAE-v1.2 (fields as documented in references/opensora-v1.2.md)
HF_CONFIG = {
    "architectures": ["VideoAutoencoderPipeline"],
    "model_type": "VideoAutoencoderPipeline",
    "cal_loss": False,
    "freeze_vae_2d": False,
    "from_pretrained": None,
    "micro_frame_size": 17,
    "scale": [3.85, 2.32, 2.33, 3.06],
    "shift": [-0.1, 0.34, 0.27, 0.98],
    "vae_2d": {
        "type": "VideoAutoencoderKL",
        "from_pretrained": "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers",
        "subfolder": "vae",
        "micro_batch_size": 4,
        "local_files_only": True,
    },
    "vae_temporal": {"type": "VAE_Temporal_SD", "from_pretrained": None},
    "torch_dtype": "float32",
    "transformers_version": "4.36.2",
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one torch thread."""


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return VideoVAE.from_preset("tiny").eval()


def clip(frames, size=64, seed=0):
    """A smooth moving pattern in [-1, 1], ``[1, 3, frames, size, size]``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames).view(1, 1, -1, 1, 1)
    y = torch.arange(size).view(1, 1, 1, -1, 1)
    x = torch.arange(size).view(1, 1, 1, 1, -1)
    phase = torch.rand(1, 3, 1, 1, 1, generator=g) * 6
    return torch.sin(0.2 * x + 0.15 * y - 0.3 * t + phase) * 0.9


def test_opensora_preset_matches_manifest_keys_and_shapes():
    manifest = json.loads(MANIFEST.read_text())
    with torch.device("meta"):
        model = VideoVAE(PRESETS["opensora-v1.2"])
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == manifest["tensors"]
    header = manifest["header"]
    assert sum(p.numel() for p in model.spatial_vae.parameters()) == header["numel_spatial"]
    assert sum(p.numel() for p in model.temporal_vae.parameters()) == header["numel_temporal"]
    assert sorted(name for name, _ in model.named_buffers()) == sorted(header["persistent_buffers"])


@pytest.mark.parametrize("frames", [17, 9])
def test_temporal_vae_matches_reference_outputs(frames):
    config = json.loads((GOLDEN / "README.json").read_text())["vae_temporal_small_config"]
    model = TemporalVAE(**config)
    load_matching(model, load_file(GOLDEN / "vae_temporal_small_weights.safetensors"), "golden temporal VAE")
    io = load_file(GOLDEN / "vae_temporal_small_io.safetensors")
    with torch.no_grad():
        mean, logvar = model.encode(io[f"xz{frames}"])
        torch.testing.assert_close(mean, io[f"mean{frames}"], atol=1e-5, rtol=0)
        torch.testing.assert_close(logvar, io[f"logvar{frames}"], atol=1e-5, rtol=0)
        if frames == 17:
            decoded = model.decode(io["z5"], num_frames=17)
            expected = io["dec17"]
        else:
            decoded = model.decode(io["mean9"], num_frames=9)
            expected = io["dec9_from_mean9"]
    torch.testing.assert_close(decoded, expected, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def reference():
    """The small Open-Sora pipeline, loaded from its Open-Sora folder, and what the reference computed with it."""
    return load_video_vae(REFERENCE_FOLDER), load_file(GOLDEN / "vae_pipeline_small_io.safetensors")


@pytest.mark.parametrize("frames", REFERENCE_CASES)
def test_sampled_encode_draws_the_reference_noise(reference, frames):
    """A seed gives Open-Sora's sampled latents, on 2 x 34 frames (two chunks; 2D micro-batches across the batch
    items) and 26 (a short last chunk): every 2D micro-batch's noise first, then each chunk's temporal noise."""
    model, io = reference
    seed = REFERENCE_CASES[frames]
    x, expected = io[f"x{frames}"].float(), io[f"z{frames}_seed{seed}"]
    with torch.no_grad():
        seeded = model.encode(x, generator=torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)
        global_rng = model.encode(x)
        mean = model.encode(x, deterministic=True)
    torch.testing.assert_close(seeded, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(global_rng, expected, atol=1e-5, rtol=0)
    assert (seeded - mean).abs().max() > 0.01  # the noise is there, so its order is what is being checked


@pytest.mark.parametrize("frames", REFERENCE_CASES)
def test_decode_is_the_reference_output_overshoot_kept(reference, frames):
    model, io = reference
    z, expected = io[f"z{frames}_seed{REFERENCE_CASES[frames]}"], io[f"dec{frames}"]
    with torch.no_grad():
        decoded = model.decode(z, frames)
    assert expected.abs().max() > 2  # this decoder overshoots [-1, 1] a lot
    # fp32 rounding differs between CPUs (oneDNN picks other kernels on AMD than on Intel): 2e-5 plus 1e-5 relative
    torch.testing.assert_close(decoded, expected, atol=2e-5, rtol=1e-5)


def test_pixels_are_clamped_once_where_they_become_frames(reference):
    """``pipeline.decode_video`` turns the unclamped decode into IMAGE frames in [0, 1]: clamp, then map."""
    model, io = reference
    z = io["z34_seed1234"]
    latent = pipeline.make_task_latent("t2av", duration=2, height=16, width=16)
    frames, fps = pipeline.decode_video(model, latent.with_latents(z, latent.audio.expand(2, -1, -1, -1)))
    expected = ((io["dec34"].clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)
    assert fps == 17 and frames.shape == expected.shape
    torch.testing.assert_close(frames, expected, atol=1e-5, rtol=1e-5)  # the decode's tolerance, halved by the map


def test_latent_frames_follow_the_17_frame_chunks(tiny):
    # table of references/opensora-v1.2.md section 4 (mfs=17)
    for frames, latent in {1: 1, 17: 5, 51: 15, 60: 18, 68: 20, 102: 30}.items():
        assert tiny.latent_frames(frames) == latent


def test_tiny_preset_is_small():
    assert sum(p.numel() for p in VideoVAE.from_preset("tiny").parameters()) < 1_000_000


@pytest.mark.parametrize("seconds", [1, 2, 3, 4])
def test_tiny_encode_decode_shapes(tiny, seconds):
    frames = 17 * seconds
    with torch.no_grad():
        z = tiny.encode(clip(frames), deterministic=True)
        assert z.shape == (1, 4, 5 * seconds, 8, 8)
        video = tiny.decode(z, frames)
    assert video.shape == (1, 3, frames, 64, 64) and torch.isfinite(video).all()


def test_batch_and_partial_chunk(tiny):
    frames = torch.cat([clip(26, size=32, seed=1), clip(26, size=32, seed=2)])
    with torch.no_grad():
        z = tiny.encode(frames, deterministic=True)
        assert z.shape == (2, 4, 5 + 3, 4, 4)
        assert tiny.decode(z, 26).shape == (2, 3, 26, 32, 32)
        single = tiny.encode(frames[1:], deterministic=True)
    torch.testing.assert_close(z[1:], single, atol=1e-5, rtol=1e-4)


def test_chunks_are_independent(tiny):
    """Each 17-frame chunk is encoded and decoded on its own, in order, into the right slots of the output."""
    frames = clip(17 + 9, size=16)
    with torch.no_grad():
        z = tiny.encode(frames, deterministic=True)
        torch.testing.assert_close(z[:, :, :5], tiny.encode(frames[:, :, :17], deterministic=True))
        torch.testing.assert_close(z[:, :, 5:], tiny.encode(frames[:, :, 17:], deterministic=True))
        video = tiny.decode(z, 26)
        torch.testing.assert_close(video[:, :, :17], tiny.decode(z[:, :, :5], 17))
        torch.testing.assert_close(video[:, :, 17:], tiny.decode(z[:, :, 5:], 9))


def test_deterministic_encode_is_the_two_posterior_means_normalised(tiny):
    frames = clip(17, size=16)
    with torch.no_grad():
        spatial_mean = tiny.spatial_vae.module.encode(frames[0].transpose(0, 1)).latent_dist.mean
        temporal_mean, _ = tiny.temporal_vae.encode(spatial_mean.transpose(0, 1)[None] * 0.18215)
        expected = (temporal_mean - tiny.shift) / tiny.scale
        torch.testing.assert_close(tiny.encode(frames, deterministic=True), expected)


def test_stages_never_see_more_than_one_micro_batch_or_chunk(tiny):
    """What keeps memory flat with clip length: 2D VAE calls of <= 4 frames, temporal calls of <= 17 frames."""
    seen = {"2d": [], "temporal_in": [], "temporal_out": []}
    hooks = [
        tiny.spatial_vae.module.encoder.register_forward_pre_hook(lambda m, a: seen["2d"].append(a[0].shape[0])),
        tiny.spatial_vae.module.decoder.register_forward_pre_hook(lambda m, a: seen["2d"].append(a[0].shape[0])),
        tiny.temporal_vae.encoder.register_forward_pre_hook(lambda m, a: seen["temporal_in"].append(a[0].shape[2])),
        tiny.temporal_vae.decoder.register_forward_pre_hook(lambda m, a: seen["temporal_out"].append(a[0].shape[2])),
    ]
    try:
        with torch.no_grad():
            tiny.decode(tiny.encode(clip(40, size=16)), 40)
    finally:
        for hook in hooks:
            hook.remove()
    assert max(seen["2d"]) == 4 and sum(seen["2d"]) == 80
    assert seen["temporal_in"] == [20, 20, 8]  # 17, 17, 6 frames, each padded in front to a multiple of 4
    assert seen["temporal_out"] == [5, 5, 2]


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created inside the block and still referenced (CPU stand-in for
    ``torch.cuda.max_memory_allocated``); storages of ``existing`` tensors are not counted."""

    def __init__(self, existing):
        super().__init__()
        self.skip = {t.untyped_storage().data_ptr() for t in existing}
        self.owners, self.sizes, self.live, self.peak = {}, {}, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.skip:
                self._hold(t)
        return out

    def _hold(self, t):
        key = t.untyped_storage().data_ptr()
        owners = self.owners.setdefault(key, set())
        if not owners:
            self.sizes[key] = t.untyped_storage().nbytes()
            self.live += self.sizes[key]
            self.peak = max(self.peak, self.live)
        if id(t) not in owners:
            owners.add(id(t))
            weakref.finalize(t, self._release, key, id(t))

    def _release(self, key, ident):
        self.owners[key].discard(ident)
        if not self.owners[key]:
            self.live -= self.sizes.pop(key)
            del self.owners[key]


def test_working_memory_does_not_grow_with_clip_length(tiny):
    """Peak memory minus the output is the same for 1 s and 2 s clips, but for the 2D latents encode holds."""
    beyond = {}
    for seconds in (1, 2):
        frames = clip(17 * seconds, size=16)
        z = tiny.encode(frames, deterministic=True).detach()
        runs = {"encode": lambda x=frames: tiny.encode(x), "decode": lambda z=z, n=frames.shape[2]: tiny.decode(z, n)}
        for name, run in runs.items():
            with torch.no_grad(), LiveTensorBytes([frames, z, *tiny.parameters(), *tiny.buffers()]) as memory:
                out = run()
            beyond[name, seconds] = memory.peak - out.numel() * out.element_size()
            assert beyond[name, seconds] > 0
    extra_output = clip(17, size=16).numel() * 4  # what 1 s more of decoded frames takes
    extra_2d_latents = extra_output // 48  # encode holds the clip's 2D latents (4 channels at 1/8 size, not 3 at 1)
    assert abs(beyond["decode", 2] - beyond["decode", 1]) < 0.05 * extra_output
    assert abs(beyond["encode", 2] - beyond["encode", 1] - extra_2d_latents) < 0.05 * extra_output


def test_micro_batch_size_does_not_change_the_result(tiny):
    other = VideoVAE(VideoVAEConfig(**{**PRESETS["tiny"].to_dict(), "micro_batch_size": 3})).eval()
    other.load_state_dict(tiny.state_dict())
    frames = clip(17, size=16)
    with torch.no_grad():
        z = tiny.encode(frames, deterministic=True)
        torch.testing.assert_close(other.encode(frames, deterministic=True), z)
        torch.testing.assert_close(other.decode(z, 17), tiny.decode(z, 17))


def test_deterministic_encode_repeats_and_sampling_follows_the_generator(tiny):
    frames = clip(17, size=16)
    with torch.no_grad():
        mean_a = tiny.encode(frames, deterministic=True)
        mean_b = tiny.encode(frames, deterministic=True)
        seeded = [tiny.encode(frames, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(mean_a, mean_b)
    assert torch.equal(seeded[0], seeded[1])
    assert not torch.allclose(seeded[0], seeded[2])
    assert not torch.allclose(seeded[0], mean_a)


def test_config_round_trip():
    for config in PRESETS.values():
        assert VideoVAEConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(InputError, match="unknown"):
        VideoVAEConfig.from_dict({"filterz": 3})
    with pytest.raises(InputError, match="temporal_downsample"):
        VideoVAEConfig(temporal_downsample=(True,))
    with pytest.raises(InputError, match="shift"):
        VideoVAEConfig(shift=(0.0,))


def test_hf_config_json_gives_the_opensora_preset():
    assert VideoVAEConfig.from_opensora_json(HF_CONFIG) == PRESETS["opensora-v1.2"]


def test_save_load_round_trip(tiny, tmp_path):
    path = tmp_path / "video_vae.safetensors"
    tiny.save(path)
    loaded = VideoVAE.load(path)
    assert loaded.config == tiny.config
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert {t.device.type for t in [*loaded.parameters(), *loaded.buffers()]} == {"cpu"}  # nothing left on meta
    assert VideoVAE.load(path, dtype=torch.bfloat16).shift.dtype == torch.bfloat16
    for via_loader in (False, True):
        model = load_video_vae(path) if via_loader else loaded
        frames = clip(17, size=16)
        with torch.no_grad():
            z = tiny.encode(frames, deterministic=True)
            # the same weights from a file: equal up to the CPU kernels' choice by buffer alignment (oneDNN on
            # AVX-512/AMX CPUs: ~2e-6); one model gives bit-equal results call after call
            torch.testing.assert_close(model.encode(frames, deterministic=True), z, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(model.decode(z, 17), tiny.decode(z, 17), rtol=1e-5, atol=1e-5)


def test_load_opensora_style_folder(tiny, tmp_path):
    tiny.spatial_vae.module.save_config(tmp_path / "vae")  # a diffusers AutoencoderKL folder's config.json
    temporal = {"type": "VAE_Temporal", **{k: getattr(tiny.config, k) for k in TEMPORAL_FIELDS}}
    config = {**HF_CONFIG, "vae_2d": {**HF_CONFIG["vae_2d"], "from_pretrained": ".", "subfolder": "vae"}}
    config |= {"vae_temporal": temporal, "shift": list(tiny.config.shift), "scale": list(tiny.config.scale)}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, tmp_path / "model.safetensors")
    frames = clip(9, size=16)
    for path in (tmp_path, tmp_path / "model.safetensors"):  # the folder, or the file a file picker lists
        loaded = load_video_vae(path)
        assert loaded.config.spatial["block_out_channels"] == (32, 32, 32, 32)
        assert loaded.config.temporal_kwargs() == tiny.config.temporal_kwargs()
        with torch.no_grad():
            torch.testing.assert_close(  # equal up to kernel choice by buffer alignment, see test_save_load_round_trip
                loaded.encode(frames, deterministic=True),
                tiny.encode(frames, deterministic=True),
                rtol=1e-5,
                atol=1e-5,
            )


def test_bare_opensora_file_is_matched_exactly(tiny, tmp_path, monkeypatch):
    bare = tmp_path / "opensora_vae.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, bare)
    with pytest.raises(CheckpointError, match="mis-shaped keys") as error:
        load_video_vae(bare)  # tiny weights do not fit the real v1.2 config
    assert "read as the 'opensora-v1.2' preset" in str(error.value)
    assert "config.json beside the file" in str(error.value)
    monkeypatch.setitem(PRESETS, "opensora-v1.2", tiny.config)
    loaded = load_video_vae(bare)
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_a_config_json_beside_a_bare_file_gives_its_config(reference, tmp_path):
    shutil.copytree(REFERENCE_FOLDER, tmp_path, dirs_exist_ok=True)
    bare = (tmp_path / "model.safetensors").rename(tmp_path / "opensora_vae_small.safetensors")
    loaded = load_video_vae(bare)
    assert loaded.config == reference[0].config and loaded.config.filters == 4
    assert all(torch.equal(v, reference[0].state_dict()[k]) for k, v in loaded.state_dict().items())


def test_bad_files_say_what_was_expected(tiny, tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    unrelated = tmp_path / "unrelated.safetensors"
    save_file({"weight": torch.zeros(2)}, unrelated)
    other_kind = tmp_path / "dit.safetensors"
    save_component(torch.nn.Linear(2, 2), other_kind, "dit", {})
    half_folder = tmp_path / "folder"
    half_folder.mkdir()
    (half_folder / "config.json").write_text(json.dumps(HF_CONFIG))
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    save_file({"weight": torch.zeros(2)}, bad_json / "model.safetensors")
    cases = {
        empty: "expected a UniForm video VAE file",
        unrelated: "no Open-Sora VAE keys",
        other_kind: "expected a UniForm 'video_vae' file",
        half_folder: "lacks model.safetensors",
        bad_json: "not an Open-Sora VideoAutoencoderPipeline config",
        tmp_path / "missing.safetensors": "does not exist",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            load_video_vae(path)


def test_bad_inputs_raise_input_errors(tiny):
    z = torch.zeros(1, 4, 5, 2, 2)
    bad_encodes = {
        "shape": torch.zeros(3, 17, 16, 16),
        "shape \\[B, 3": torch.zeros(1, 4, 17, 16, 16),
        "multiples of 8": torch.zeros(1, 3, 17, 20, 16),
        "NaN": torch.full((1, 3, 17, 16, 16), float("nan")),
        "in \\[-1, 1\\]": torch.full((1, 3, 17, 16, 16), 255.0),
        "float tensor": torch.zeros(1, 3, 17, 16, 16, dtype=torch.uint8),
        "empty": torch.zeros(1, 3, 0, 16, 16),
    }
    for message, frames in bad_encodes.items():
        with pytest.raises(InputError, match=message):
            tiny.encode(frames)
    bad_decodes = {
        "gives 5 latent frames": (torch.zeros(1, 4, 4, 2, 2), 17),
        "gives 10 latent frames": (z, 34),
        "shape \\[B, 4": (torch.zeros(1, 8, 5, 2, 2), 17),
        "positive integer": (z, 0),
        "NaN": (torch.full_like(z, float("nan")), 17),
    }
    for message, (latents, frames) in bad_decodes.items():
        with pytest.raises(InputError, match=message):
            tiny.decode(latents, frames)
    with pytest.raises(InputError, match="positive integer"):
        tiny.latent_frames(True)
    with pytest.raises(InputError, match="preset"):
        VideoVAE.from_preset("huge")
