"""Every node called directly, as ComfyUI calls it (``run(**inputs)``), on a tiny random bundle and no ComfyUI."""

from __future__ import annotations

import json
import re
import sys
import types
import wave
from pathlib import Path

import av
import pytest
import torch

from uniform_core.bundle import COMPONENT_FILES, default_bundle_available, random_tiny_bundle, save_bundle
from uniform_core.errors import CheckpointError, InputError, UniFormError
from uniform_core.tasks import SAMPLE_RATE, VIDEO_FPS

SECONDS, SIZE = 2, 64  # the random tiny bundle's native clip


@pytest.fixture(scope="module")
def nodes(pack):
    return {name: cls() for name, cls in pack.NODE_CLASS_MAPPINGS.items()}


@pytest.fixture(scope="module")
def host(pack):
    return sys.modules[f"{pack.__name__}.nodes.host"]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A models/uniform folder holding one saved random tiny bundle (as the folder ``tiny``)."""
    root = tmp_path_factory.mktemp("models")
    save_bundle(random_tiny_bundle(seed=0), root / "tiny")
    return root


@pytest.fixture(autouse=True)
def folders(models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIFORM_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("UNIFORM_OUTPUT_DIR", str(tmp_path / "output"))


@pytest.fixture(scope="module")
def parts(nodes, models_dir, pack):
    """(dit, video_vae, audio_vae, text_encoder) as UniForm Load Bundle returns them."""
    mp = pytest.MonkeyPatch()
    mp.setenv("UNIFORM_MODELS_DIR", str(models_dir))
    try:
        return nodes["UniFormLoadBundle"].run(bundle="tiny", precision="auto", offload="auto")
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def clip(nodes):
    return nodes["UniFormExampleClip"].run(seed=1, duration=SECONDS, size=SIZE, objects=1)


def sample(nodes, parts, latent, text=None, seed=0, batch_size=1, steps=2):
    return nodes["UniFormSampler"].run(
        dit=parts[0], latent=latent, seed=seed, steps=steps, cfg=5.0, sampler="ddim", batch_size=batch_size, text=text
    )[0]


def t2av_latent(nodes):
    return nodes["UniFormTaskLatent"].run(task="t2av", duration=SECONDS, width=SIZE, height=SIZE)[0]


# ---- definitions --------------------------------------------------------------------------------------------


def test_every_node_is_a_well_formed_v1_node(pack):
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("UniForm") and node_id == cls.__name__
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("UniForm ")
        assert cls.CATEGORY.startswith("UniForm/") and callable(getattr(cls, cls.FUNCTION))
        assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}
        for section in (spec.get("required", {}), spec.get("optional", {})):
            for name, (kind, *options) in section.items():
                assert options and options[0].get("tooltip"), f"{node_id}.{name} has no tooltip"
                assert isinstance(kind, (str, list)), f"{node_id}.{name}: combos must be lists for ComfyUI"
                if isinstance(kind, list) and "default" in options[0]:
                    assert options[0]["default"] in kind, f"{node_id}.{name} default"


def test_every_output_has_a_tooltip(pack):
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        tips = getattr(cls, "OUTPUT_TOOLTIPS", ())
        assert len(tips) == len(cls.RETURN_TYPES), (
            f"{node_id}: {len(tips)} tooltips for {len(cls.RETURN_TYPES)} outputs"
        )
        assert all(isinstance(t, str) and t.strip() for t in tips), f"{node_id} has an empty output tooltip"


def test_loaders_list_the_model_folder_and_the_embedded_default(pack):
    bundles = pack.NODE_CLASS_MAPPINGS["UniFormLoadBundle"].INPUT_TYPES()["required"]["bundle"][0]
    assert bundles == ["uniform-tiny (embedded)", "tiny"]
    files = pack.NODE_CLASS_MAPPINGS["UniFormLoadDiT"].INPUT_TYPES()["required"]["dit_name"][0]
    assert sorted(files) == sorted(f"tiny/{f}" for f in COMPONENT_FILES.values())


def test_only_complete_bundle_folders_are_offered(pack, models_dir, tmp_path, monkeypatch):
    partial = tmp_path / "models" / "partial"
    partial.mkdir(parents=True)
    (partial / "dit.safetensors").write_bytes((models_dir / "tiny" / "dit.safetensors").read_bytes())
    monkeypatch.setenv("UNIFORM_MODELS_DIR", str(tmp_path / "models"))
    assert pack.NODE_CLASS_MAPPINGS["UniFormLoadBundle"].INPUT_TYPES()["required"]["bundle"][0] == [
        "uniform-tiny (embedded)"
    ]
    assert pack.NODE_CLASS_MAPPINGS["UniFormLoadDiT"].INPUT_TYPES()["required"]["dit_name"][0] == [
        "partial/dit.safetensors"
    ]


# ---- loaders ------------------------------------------------------------------------------------------------


def test_component_loaders_load_what_was_saved(nodes, models_dir):
    reference = random_tiny_bundle(seed=0)
    (dit,) = nodes["UniFormLoadDiT"].run(dit_name="tiny/dit.safetensors", precision="fp32", offload="auto")
    (vae,) = nodes["UniFormLoadVideoVAE"].run(vae_name="tiny/video_vae.safetensors", precision="fp32", offload="auto")
    (audio,) = nodes["UniFormLoadAudioVAE"].run(
        vae_name="tiny/audio_vae.safetensors",
        vocoder_name="tiny/vocoder.safetensors",
        precision="fp32",
        offload="auto",
    )
    (text,) = nodes["UniFormLoadTextEncoder"].run(
        text_encoder_name="tiny/text_encoder.safetensors", precision="fp32", offload="offload"
    )
    for loaded, original in [
        (dit, reference.dit),
        (vae, reference.video_vae),
        (audio, reference.audio_codec),
        (text, reference.text_encoder),
    ]:
        got, want = loaded.module.state_dict(), original.state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)
    assert (text.offload, dit.offload) == ("offload", "auto") and text.patcher is None  # outside ComfyUI: plain


def test_precision_casts_the_weights(nodes):
    (dit,) = nodes["UniFormLoadDiT"].run(dit_name="tiny/dit.safetensors", precision="bf16", offload="auto")
    assert {p.dtype for p in dit.module.parameters()} == {torch.bfloat16}


def test_missing_model_file_names_the_node_and_the_file(nodes):
    with pytest.raises(InputError, match=r"^UniForm Load DiT: dit_name 'nope.safetensors' was not found"):
        nodes["UniFormLoadDiT"].run(dit_name="nope.safetensors", precision="auto", offload="auto")


@pytest.fixture
def escape_routes(models_dir, tmp_path, monkeypatch):
    """A model folder beside a bundle outside it, with links out of the folder and one link that stays inside."""
    root = tmp_path / "models"
    root.mkdir()
    (root / "tiny").mkdir()
    for f in COMPONENT_FILES.values():
        (root / "tiny" / f).symlink_to(models_dir / "tiny" / f)  # the fixture bundle, reached from elsewhere
    outside = tmp_path / "outside"
    save_bundle(random_tiny_bundle(seed=1), outside)
    (root / "dir_out").symlink_to(outside, target_is_directory=True)
    (root / "file_out.safetensors").symlink_to(outside / "dit.safetensors")
    mixed = root / "mixed"  # a real folder whose DiT alone is a link out
    mixed.mkdir()
    for f in COMPONENT_FILES.values():
        (mixed / f).write_bytes(b"")
    (mixed / COMPONENT_FILES["dit"]).unlink()
    (mixed / COMPONENT_FILES["dit"]).symlink_to(outside / COMPONENT_FILES["dit"])
    save_bundle(random_tiny_bundle(seed=2), root / "real")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)  # stays inside: allowed
    (root / "real_dit.safetensors").symlink_to(root / "real" / "dit.safetensors")
    monkeypatch.setenv("UNIFORM_MODELS_DIR", str(root))
    return root, outside


def test_links_out_of_the_model_folder_are_not_listed(pack, escape_routes, tmp_path):
    files = pack.NODE_CLASS_MAPPINGS["UniFormLoadDiT"].INPUT_TYPES()["required"]["dit_name"][0]
    bundles = pack.NODE_CLASS_MAPPINGS["UniFormLoadBundle"].INPUT_TYPES()["required"]["bundle"][0]
    assert not [f for f in files if f.startswith(("tiny/", "dir_out/", "file_out", "mixed/dit"))], files
    assert {"real/dit.safetensors", "alias/dit.safetensors", "real_dit.safetensors"} <= set(files)
    assert bundles == ["uniform-tiny (embedded)", "alias", "real"]


@pytest.mark.parametrize(
    "name",
    [
        "../outside/dit.safetensors",  # ../
        "real/../../outside/dit.safetensors",
        "ABSOLUTE",  # an absolute path outside the folder
        "dir_out/dit.safetensors",  # a folder link out
        "file_out.safetensors",  # a file link out
        "mixed/dit.safetensors",
    ],
)
def test_loaders_refuse_a_file_outside_the_model_folder(nodes, escape_routes, name):
    root, outside = escape_routes
    name = str(outside / "dit.safetensors") if name == "ABSOLUTE" else name
    with pytest.raises(InputError, match=rf"^UniForm Load DiT: dit_name '{re.escape(name)}' resolves to .* outside"):
        nodes["UniFormLoadDiT"].run(dit_name=name, precision="fp32", offload="auto")
    with pytest.raises(InputError, match=rf"vocoder_name .* outside the model folder {re.escape(str(root))}"):
        nodes["UniFormLoadAudioVAE"].run(
            vae_name="real/audio_vae.safetensors", vocoder_name=name, precision="fp32", offload="auto"
        )


@pytest.mark.parametrize("name", ["../outside", "ABSOLUTE", "dir_out", "mixed", "tiny"])
def test_bundle_loader_refuses_a_folder_or_file_outside_the_model_folder(nodes, escape_routes, name):
    root, outside = escape_routes
    name = str(outside) if name == "ABSOLUTE" else name
    with pytest.raises(
        InputError, match=rf"^UniForm Load Bundle: bundle '{re.escape(name)}.*' resolves to .* outside"
    ):
        nodes["UniFormLoadBundle"].run(bundle=name, precision="fp32", offload="auto")


def test_links_that_stay_inside_the_model_folder_load(nodes, escape_routes):
    (dit,) = nodes["UniFormLoadDiT"].run(dit_name="real_dit.safetensors", precision="fp32", offload="auto")
    via_alias, *_ = nodes["UniFormLoadBundle"].run(bundle="alias", precision="fp32", offload="auto")
    want = random_tiny_bundle(seed=2).dit.state_dict()
    for loaded in (dit, via_alias):
        assert all(torch.equal(loaded.module.state_dict()[k], want[k]) for k in want)


def test_embedded_bundle(nodes):
    if default_bundle_available():
        dit, *_ = nodes["UniFormLoadBundle"].run(bundle="uniform-tiny (embedded)", precision="auto", offload="auto")
        assert isinstance(dit.module, torch.nn.Module)
    else:
        with pytest.raises(CheckpointError, match=r"^UniForm Load Bundle: bundle .*uniform-tiny"):
            nodes["UniFormLoadBundle"].run(bundle="uniform-tiny (embedded)", precision="auto", offload="auto")


# ---- encoders and the task latent -----------------------------------------------------------------------------


def test_text_encode_and_its_error(nodes, parts):
    (text,) = nodes["UniFormTextEncode"].run(text_encoder=parts[3], prompt="a red ball", negative_prompt="a square")
    assert text.y.shape[0] == 1 and text.negative_y is not None
    with pytest.raises(InputError, match=r"^UniForm Text Encode: prompt"):
        nodes["UniFormTextEncode"].run(text_encoder=parts[3], prompt=" ", negative_prompt="")


def test_video_encode_takes_frames_or_a_native_video(nodes, parts, clip, host):
    frames, fps, audio, _ = clip
    from_images = nodes["UniFormVideoEncode"].run(
        video_vae=parts[1], fps=fps, duration=0, width=0, height=0, images=frames
    )
    video = host.make_video(frames, fps, audio)
    from_video = nodes["UniFormVideoEncode"].run(
        video_vae=parts[1], fps=1.0, duration=0, width=0, height=0, video=video
    )
    latent, conformed, out_fps = from_images
    assert latent.latent.shape == (1, 4, 5 * SECONDS, SIZE // 8, SIZE // 8)
    assert conformed.shape == (VIDEO_FPS * SECONDS, SIZE, SIZE, 3) and out_fps == VIDEO_FPS
    assert torch.equal(from_video[0].latent, latent.latent)


def test_video_encode_conforms_fps_and_size(nodes, parts, clip):
    frames = clip[0][::2]  # the same 2 s at 8.5 fps
    _, conformed, fps = nodes["UniFormVideoEncode"].run(
        video_vae=parts[1], fps=VIDEO_FPS / 2, duration=0, width=32, height=48, images=frames
    )
    assert conformed.shape == (VIDEO_FPS * SECONDS, 48, 32, 3) and fps == VIDEO_FPS


@pytest.mark.parametrize("given", ["neither", "both"])
def test_video_encode_needs_exactly_one_input(nodes, parts, clip, host, given):
    inputs = {} if given == "neither" else {"images": clip[0], "video": host.make_video(clip[0], clip[1])}
    with pytest.raises(InputError, match=rf"^UniForm Video Encode: .*images or video.*{given}"):
        nodes["UniFormVideoEncode"].run(video_vae=parts[1], fps=17.0, duration=0, width=0, height=0, **inputs)


class FileVideo:
    """A VIDEO read from a file as ComfyUI's Load Video reads it (VideoFromFile: PyAV, first video stream)."""

    def __init__(self, path):
        self.path = path

    def get_components(self):
        with av.open(str(self.path)) as container:
            frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) / 255 for f in container.decode(video=0)]
            rate = next(s for s in container.streams if s.type == "video").average_rate
        return types.SimpleNamespace(images=torch.stack(frames), frame_rate=rate, audio=None)


def test_video_encode_reads_a_video_file(nodes, parts, clip, tmp_path):
    from uniform_core import media

    path = tmp_path / "clip.mp4"
    media.write_mp4(path, clip[0], clip[1])
    latent, frames, _ = nodes["UniFormVideoEncode"].run(
        video_vae=parts[1], fps=1.0, duration=0, width=0, height=0, video=FileVideo(path)
    )
    assert frames.shape == (VIDEO_FPS * SECONDS, SIZE, SIZE, 3)


@pytest.mark.parametrize("content", ["text", "wav"])
def test_video_encode_names_a_file_that_is_no_video(nodes, parts, tmp_path, content):
    path = tmp_path / "upload.mp4"
    if content == "text":
        path.write_text("not a video\n" * 20)  # PyAV: InvalidDataError
    else:
        with wave.open(str(path), "wb") as w:  # sound only: ComfyUI's decode(video=0) raises IndexError
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
            w.writeframes(bytes(2 * SAMPLE_RATE))
    with pytest.raises(InputError, match=r"^UniForm Video Encode: video could not be read as a video"):
        nodes["UniFormVideoEncode"].run(
            video_vae=parts[1], fps=17.0, duration=0, width=0, height=0, video=FileVideo(path)
        )


def test_audio_encode_conforms_any_audio(nodes, parts):
    stereo_44k = {"waveform": torch.rand(1, 2, 44100 * SECONDS) - 0.5, "sample_rate": 44100}
    latent, audio = nodes["UniFormAudioEncode"].run(audio_vae=parts[2], audio=stereo_44k, duration=0)
    assert latent.latent.shape == (1, 8, 25 * SECONDS, 16)
    assert audio["sample_rate"] == SAMPLE_RATE and audio["waveform"].shape == (1, 1, SAMPLE_RATE * SECONDS)
    with pytest.raises(InputError, match=r"^UniForm Audio Encode: AUDIO"):
        nodes["UniFormAudioEncode"].run(audio_vae=parts[2], audio=torch.zeros(3), duration=0)


@pytest.mark.parametrize("task, missing", [("a2v", "audio_latent"), ("v2a", "video_latent")])
def test_task_latent_names_the_missing_condition(nodes, task, missing):
    with pytest.raises(UniFormError, match=rf"^UniForm Task Latent: .*{missing}"):
        nodes["UniFormTaskLatent"].run(task=task, duration=SECONDS, width=SIZE, height=SIZE)


def test_task_latent_follows_its_condition(nodes, parts, clip):
    video_latent, *_ = nodes["UniFormVideoEncode"].run(
        video_vae=parts[1], fps=clip[1], duration=0, width=0, height=0, images=clip[0]
    )
    # duration and size widgets are for t2av/a2v; v2a keeps its video's
    (latent,) = nodes["UniFormTaskLatent"].run(
        task="v2a", duration=7, width=512, height=512, video_latent=video_latent
    )
    assert latent.task == "v2a" and latent.duration == SECONDS and (latent.height, latent.width) == (SIZE, SIZE)
    assert torch.equal(latent.video, video_latent.latent)


# ---- sampling, decoding, saving -----------------------------------------------------------------------------


def test_sampler_is_seeded_and_keeps_the_condition(nodes, parts, clip):
    audio_latent, _ = nodes["UniFormAudioEncode"].run(audio_vae=parts[2], audio=clip[2], duration=0)
    (latent,) = nodes["UniFormTaskLatent"].run(
        task="a2v", duration=SECONDS, width=SIZE, height=SIZE, audio_latent=audio_latent
    )
    a, b, c = (sample(nodes, parts, latent, seed=s) for s in (5, 5, 6))
    assert torch.equal(a.video, b.video) and not torch.equal(a.video, c.video)
    assert torch.equal(a.audio, audio_latent.latent)


def test_sampler_guides_on_the_condition_as_its_widget_says(nodes, parts, clip):
    """cfg_condition -1 (the widget's default), and no value at all (a prompt saved before the widget), sample as
    the library does without the argument: the task's measured scale. Another scale changes the sound; a value the
    shared rule refuses is named with the node."""
    from uniform_core import pipeline
    from uniform_core.diffusion.guidance import CONDITION_CFG

    video_latent, *_ = nodes["UniFormVideoEncode"].run(
        video_vae=parts[1], fps=clip[1], duration=0, width=0, height=0, images=clip[0]
    )
    (latent,) = nodes["UniFormTaskLatent"].run(
        task="v2a", duration=SECONDS, width=SIZE, height=SIZE, video_latent=video_latent
    )
    widgets = dict(dit=parts[0], latent=latent, seed=3, steps=2, cfg=1.0, sampler="ddim", batch_size=1)
    run = lambda **scale: nodes["UniFormSampler"].run(**widgets, **scale)[0].audio  # noqa: E731
    library = pipeline.sample(parts[0].module, latent, None, 3, 2, 1.0, "ddim").latent.audio
    default, measured, off = run(cfg_condition=-1.0), run(cfg_condition=CONDITION_CFG["v2a"]), run(cfg_condition=1.0)
    assert CONDITION_CFG["v2a"] != 1
    assert torch.equal(default, library) and torch.equal(run(), library) and torch.equal(measured, library)
    assert (off - default).abs().max() > 1e-3
    with pytest.raises(InputError, match=r"^UniForm Sampler: cfg_condition must be -1 \(the task's measured"):
        run(cfg_condition=-0.5)
    with pytest.raises(InputError, match=r"^UniForm Sampler: cfg_condition must be a number from -1.0 to 100.0"):
        run(cfg_condition=101.0)
    (text,) = nodes["UniFormTextEncode"].run(text_encoder=parts[3], prompt="a red ball", negative_prompt="")
    with pytest.raises(InputError, match=r"^UniForm Sampler: cfg_condition guides the condition of a2v and v2a"):
        nodes["UniFormSampler"].run(**{**widgets, "latent": t2av_latent(nodes)}, text=text, cfg_condition=3.0)


def test_nodes_load_and_sample_under_inference_mode(pack, models_dir):
    """ComfyUI runs every node inside torch.inference_mode(), so the weights are inference tensors there."""
    nodes = {name: cls() for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
    with torch.inference_mode():
        dit, _, _, text_encoder = nodes["UniFormLoadBundle"].run(bundle="tiny", precision="fp32", offload="auto")
        (text,) = nodes["UniFormTextEncode"].run(text_encoder=text_encoder, prompt="a red ball", negative_prompt="")
        latent = sample(nodes, (dit,), t2av_latent(nodes), text=text)
    assert torch.isfinite(latent.video).all() and torch.isfinite(latent.audio).all()


def test_t2av_without_text_is_refused(nodes, parts):
    with pytest.raises(InputError, match=r"^UniForm Sampler: task 't2av' needs the text input"):
        sample(nodes, parts, t2av_latent(nodes), text=None)


def test_sampler_reports_progress_and_honours_cancel_through_comfyui(nodes, parts, monkeypatch):
    """With ComfyUI's modules present, the sampler drives comfy.utils.ProgressBar and stops on Cancel."""
    updates = []

    class Interrupted(Exception):
        pass

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None):
            updates.append((value, total))

    def throw_if_interrupted():
        if len(updates) >= 3:
            raise Interrupted()

    mm = types.SimpleNamespace(
        get_torch_device=lambda: torch.device("cpu"),
        unet_offload_device=lambda: torch.device("cpu"),
        throw_exception_if_processing_interrupted=throw_if_interrupted,
        soft_empty_cache=lambda: None,
    )
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    monkeypatch.setitem(sys.modules, "comfy.utils", types.SimpleNamespace(ProgressBar=ProgressBar))
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    (text,) = nodes["UniFormTextEncode"].run(text_encoder=parts[3], prompt="a red ball", negative_prompt="")
    with pytest.raises(Interrupted):
        sample(nodes, parts, t2av_latent(nodes), text=text, steps=10)
    assert updates and updates[-1][1] == 10 and 3 <= len(updates) < 10


def test_decoders_return_one_item_per_batch_item(nodes, parts):
    (text,) = nodes["UniFormTextEncode"].run(text_encoder=parts[3], prompt="a red ball", negative_prompt="")
    latent = sample(nodes, parts, t2av_latent(nodes), text=text, batch_size=2)
    frames, fps = nodes["UniFormVideoDecode"].run(video_vae=parts[1], latent=latent)
    (audio,) = nodes["UniFormAudioDecode"].run(audio_vae=parts[2], latent=latent)
    assert fps == VIDEO_FPS and len(frames) == len(audio) == 2
    assert frames[0].shape == (VIDEO_FPS * SECONDS, SIZE, SIZE, 3) and 0 <= frames[0].min() <= frames[0].max() <= 1
    assert audio[0]["sample_rate"] == SAMPLE_RATE and audio[0]["waveform"].shape == (1, 1, SAMPLE_RATE * SECONDS)
    assert not torch.equal(frames[0], frames[1])


def test_save_writes_counted_mp4s_with_both_streams(nodes, clip, tmp_path):
    frames, fps, audio, _ = clip
    batch = {"waveform": torch.cat([audio["waveform"], audio["waveform"] * 0.5]), "sample_rate": audio["sample_rate"]}
    graph = {"prompt": {"1": {"class_type": "UniFormSaveAV"}}, "extra_pnginfo": {"workflow": {"nodes": [1]}}}
    first = nodes["UniFormSaveAV"].run(frames=frames, fps=fps, filename_prefix="UniForm/test", audio=batch, **graph)
    second = nodes["UniFormSaveAV"].run(frames=frames, fps=fps, filename_prefix="UniForm/test", audio=audio)
    names = [f["filename"] for r in (first, second) for f in r["ui"]["images"]]
    assert names == ["test_00001_.mp4", "test_00002_.mp4", "test_00003_.mp4"]
    assert first["ui"]["images"][0] == {"filename": "test_00001_.mp4", "subfolder": "UniForm", "type": "output"}
    with av.open(str(tmp_path / "output" / "UniForm" / "test_00001_.mp4")) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.width, v.height) == (SIZE, SIZE)
        assert abs(float(a.duration * a.time_base) - SECONDS) < 0.05
        assert abs(v.frames / float(v.average_rate) - SECONDS) < 0.05
        assert json.loads(c.metadata["workflow"]) == graph["extra_pnginfo"]["workflow"]  # drop it on the canvas
        assert json.loads(c.metadata["prompt"]) == graph["prompt"]
    (video,) = first["result"]
    assert torch.equal(video.get_components().images, frames)


@pytest.mark.parametrize(
    "bad, name",
    [({"frames": torch.zeros(3, 64, 64)}, "frames"), ({"audio": {"waveform": torch.zeros(16000)}}, "audio")],
)
def test_save_names_a_bad_input(nodes, clip, bad, name, tmp_path):
    inputs = {"frames": clip[0], "fps": clip[1], "filename_prefix": "x", **bad}
    with pytest.raises(InputError, match=rf"^UniForm Save Video \+ Audio: {name}"):
        nodes["UniFormSaveAV"].run(**inputs)
    assert not (tmp_path / "output").exists() or not any((tmp_path / "output").iterdir())


def test_save_stays_inside_the_output_folder(nodes, clip):
    with pytest.raises(InputError, match="outside the output folder"):
        nodes["UniFormSaveAV"].run(frames=clip[0], fps=clip[1], filename_prefix="../escape")


def test_example_clip_is_a_pure_function_of_its_seed(nodes, clip):
    again = nodes["UniFormExampleClip"].run(seed=1, duration=SECONDS, size=SIZE, objects=1)
    other = nodes["UniFormExampleClip"].run(seed=2, duration=SECONDS, size=SIZE, objects=1)
    assert torch.equal(again[0], clip[0]) and torch.equal(again[2]["waveform"], clip[2]["waveform"])
    assert not torch.equal(other[0], clip[0])
    assert clip[0].shape == (VIDEO_FPS * SECONDS, SIZE, SIZE, 3) and clip[1] == VIDEO_FPS and isinstance(clip[3], str)


def test_av_sync_scores_aligned_above_shifted_sound(nodes):
    frames, fps, audio, _ = nodes["UniFormExampleClip"].run(seed=4, duration=4, size=SIZE, objects=1)
    shifted = {**audio, "waveform": torch.roll(audio["waveform"], SAMPLE_RATE // 3, dims=-1)}
    aligned, plot = nodes["UniFormAVSync"].run(frames=frames, fps=fps, audio=audio)
    off, _ = nodes["UniFormAVSync"].run(frames=frames, fps=fps, audio=shifted)
    assert 0 <= off < aligned <= 1
    assert plot.dim() == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3


@pytest.mark.parametrize("absent", ["librosa", "cv2"])
def test_av_sync_without_its_packages_gives_the_readmes_fix(nodes, monkeypatch, absent):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == absent else real(name, *a))
    frames, fps, audio, _ = nodes["UniFormExampleClip"].run(seed=4, duration=SECONDS, size=SIZE, objects=1)
    with pytest.raises(UniFormError, match=r"^UniForm AV Sync: AV-align needs") as e:
        nodes["UniFormAVSync"].run(frames=frames, fps=fps, audio=audio)
    fix = "pip install librosa opencv-python-headless"
    assert fix in str(e.value) and "python_embeded" in str(e.value)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert fix in readme and "python_embeded" in readme


def test_example_inputs_are_copied_into_comfyuis_input_folder_once(host, tmp_path, monkeypatch):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    (input_dir / "mine.mp4").write_bytes(b"the user's own")
    monkeypatch.setitem(sys.modules, "folder_paths", types.SimpleNamespace(get_input_directory=lambda: str(input_dir)))
    shipped = sorted(p.name for p in host.EXAMPLE_INPUTS.iterdir())
    assert "uniform_example.mp4" in shipped
    assert [Path(p).name for p in host.provide_example_inputs()] == shipped
    assert (input_dir / "uniform_example.mp4").read_bytes() == (
        host.EXAMPLE_INPUTS / "uniform_example.mp4"
    ).read_bytes()
    (input_dir / "uniform_example.mp4").write_bytes(b"edited by the user")
    assert host.provide_example_inputs() == []  # never overwritten
    assert (input_dir / "uniform_example.mp4").read_bytes() == b"edited by the user"
    assert (input_dir / "mine.mp4").read_bytes() == b"the user's own"


def test_example_inputs_stay_put_outside_comfyui(host, monkeypatch):
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    assert host.provide_example_inputs() == []
