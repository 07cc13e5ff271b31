"""One rule per user-facing value (uniform_core.checks), seen from every way in: the pipeline, the stages, the CLI
and the nodes. Each bad value is refused with the exact error class, a message naming the input, and nothing
created or changed."""

import importlib
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from uniform_core import checks, media
from uniform_core.bundle import load_bundle, save_bundle
from uniform_core.cli import main
from uniform_core.diffusion.samplers import make_scheduler
from uniform_core.errors import CheckpointError, InputError
from uniform_core.model.uniform_dit import UniFormDiT
from uniform_core.pipeline import (
    UniFormPipeline,
    decode_audio,
    decode_video,
    encode_audio,
    encode_text,
    encode_video,
    make_task_latent,
    sample,
)


@pytest.fixture(scope="module")
def bundle_dir(bundle, tmp_path_factory):
    return save_bundle(bundle, tmp_path_factory.mktemp("bundle") / "random-tiny")


@pytest.fixture
def dit_calls(bundle):
    calls = []
    handle = bundle.dit.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def _listing(folder):
    return sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _frames(seconds=1, size=32):
    return torch.rand(17 * seconds, size, size, 3, generator=torch.Generator().manual_seed(0))


def _cli(tmp_path, *args, task="t2av", out="x.mp4"):
    base = ["generate", "--task", task, "--out", str(tmp_path / out) if isinstance(out, str) else str(out)]
    return main(base + (["--prompt", "p"] if task == "t2av" else []) + list(args))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(seed=2**64), "seed"),
        (dict(seed=2**70), "seed"),
        (dict(seed=-1), "seed"),
        (dict(seed=True), "seed"),
        (dict(seed=2**64 - 1, batch_size=2), "seed"),  # item 1 would need seed 2**64
        (dict(steps=0), "steps"),
        (dict(steps=1001), "steps"),
        (dict(steps=2.0), "steps"),
        (dict(cfg=math.inf), "cfg"),
        (dict(cfg=1e30), "cfg"),
        (dict(cfg=math.nan), "cfg"),
        (dict(cfg=-1.0), "cfg"),
        (dict(batch_size=0), "batch_size"),
        (dict(width=0), "width"),
        (dict(height=0), "height"),
        (dict(height=17), "height"),
        (dict(width=100_000), "width"),
        (dict(duration=0), "duration"),
        (dict(duration=17), "duration"),
        (dict(duration=1.5), "duration"),
        (dict(duration=math.nan), "duration"),
        (dict(prompt=5), "prompt"),
        (dict(prompt="a ball \ud800"), "prompt"),
        (dict(prompt=" "), "prompt"),
        (dict(negative_prompt=["x"]), "negative_prompt"),
        (dict(sampler="heun"), "sampler"),
        (dict(cfg_condition=3.0), "cfg_condition"),  # t2av has no condition
        (dict(cfg_condition=-0.5), "cfg_condition"),
        (dict(cfg_condition=math.nan), "cfg_condition"),
    ],
)
def test_generate_refuses_each_bad_value_before_sampling(pipe, dit_calls, kwargs, name):
    args = dict(task="t2av", prompt="a red ball", steps=1, duration=1, height=32, width=32) | kwargs
    with pytest.raises(InputError) as e:
        pipe.generate(**args)
    assert type(e.value) is InputError and name in str(e.value)
    assert dit_calls == [], "nothing may run for a refused value"


def test_steps_follow_one_rule_in_the_pipeline_and_the_samplers(bundle):
    latent = make_task_latent("t2av", duration=1, height=32, width=32)
    with pytest.raises(InputError) as from_pipeline:
        sample(bundle.dit, latent, None, steps=1001)
    with pytest.raises(InputError) as from_sampler:
        make_scheduler("ddim", 1001)
    assert str(from_pipeline.value) == str(from_sampler.value)


def test_zero_size_never_becomes_a_default(bundle):
    for kwargs in (dict(height=0, width=32), dict(height=32, width=0)):
        with pytest.raises(InputError, match="(height|width)"):
            make_task_latent("t2av", duration=1, **kwargs)


@pytest.mark.parametrize("fps", [0, -17, math.nan, math.inf, "17", None, True])
def test_fps_is_a_positive_finite_number(bundle, fps):
    with pytest.raises(InputError, match="fps"):
        encode_video(bundle.video_vae, _frames(), fps)


@pytest.mark.parametrize("rate", [0, -1, math.nan, 44100.5, "16000", 10**9])
def test_sample_rate_is_a_positive_whole_number_of_hz(bundle, rate):
    with pytest.raises(InputError, match="sample_rate"):
        encode_audio(bundle.audio_codec, torch.zeros(1, 16000), rate)


def test_uint8_frames_are_taken_as_0_to_255(bundle):
    frames = (_frames() * 255).round().to(torch.uint8)
    as_uint8 = encode_video(bundle.video_vae, frames, 17)
    as_float = encode_video(bundle.video_vae, frames.float() / 255, 17)
    assert torch.equal(as_uint8.latent, as_float.latent)
    assert as_uint8.frames.max() <= 1.0


def test_audio_louder_than_twice_full_scale_is_refused_and_overshoot_clipped(bundle):
    with pytest.raises(InputError, match="waveform peaks at 1e\\+06"):
        encode_audio(bundle.audio_codec, torch.full((1, 16000), 1e6), 16000)
    loud = 1.5 * torch.sin(torch.linspace(0, 100, 16000)).unsqueeze(0)
    clipped = encode_audio(bundle.audio_codec, loud, 16000)
    assert clipped.waveform.abs().max() <= 1.0 and any("clipped" in note for note in clipped.notes)
    assert torch.equal(clipped.latent, encode_audio(bundle.audio_codec, loud.clamp(-1, 1), 16000).latent)


@pytest.mark.parametrize("device", ["tpu9", "cuda:99", "", 5])
def test_devices_the_machine_lacks_are_named_with_what_is_available(bundle, device):
    with pytest.raises(InputError) as e:
        UniFormPipeline(bundle, device=device)
    assert repr(device) in str(e.value) and "available: cpu" in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_an_input_error(tmp_path, capsys):
    assert _cli(tmp_path, "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert "--device 'cuda' is not on this machine; available: cpu" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_wrong_objects_between_stages_name_the_input_and_the_type(bundle):
    latent = make_task_latent("t2av", duration=1, height=32, width=32)
    cases = [
        (lambda: sample(bundle.video_vae, latent), "dit must be of type UniFormDiT"),
        (lambda: sample(bundle.dit, "latent"), "latent must be of type TaskLatent"),
        (lambda: sample(bundle.dit, latent, text=torch.zeros(1, 4, 64)), "text must be of type TextConditioning"),
        (lambda: decode_video(bundle.audio_codec, latent), "video_vae must be of type VideoVAE"),
        (lambda: decode_audio(bundle.audio_codec, {"audio": 1}), "latent must be of type TaskLatent"),
        (lambda: encode_text(bundle.dit, "a ball"), "text_encoder must be of type TextEncoder"),
        (lambda: make_task_latent("v2a", video=latent), "video must be of type VideoLatent"),
        (lambda: make_task_latent("a2v", audio=torch.zeros(1)), "audio must be of type AudioLatent"),
    ]
    for call, words in cases:
        with pytest.raises(InputError) as e:
            call()
        assert type(e.value) is InputError and words in str(e.value)


def test_missing_condition_is_one_rule_for_pipeline_stages_nodes_and_cli(pipe, pack, tmp_path, capsys):
    messages = []
    for call in (
        lambda: pipe.generate("a2v"),
        lambda: make_task_latent("a2v"),
        lambda: pack.NODE_CLASS_MAPPINGS["UniFormTaskLatent"]().run(task="a2v", duration=1, width=32, height=32),
    ):
        with pytest.raises(InputError) as e:
            call()
        messages.append(str(e.value))
    assert _cli(tmp_path, task="a2v") == 2
    messages.append(capsys.readouterr().err)
    for message, name in zip(messages, ["audio", "audio", "audio_latent", "--audio"], strict=True):
        assert f"task 'a2v' (audio to video) needs the {name} input; none was given" in message


def test_condition_guidance_has_a_default_that_a_widget_can_hold():
    """None (CLI, pipeline) and -1 (the nodes' widget) both mean the task's measured default; 1 is off."""
    for task in ("t2av", "a2v", "v2a"):
        assert checks.cfg_condition(None, task) is None and checks.cfg_condition(-1.0, task) is None
        assert checks.cfg_condition(1, task) == 1.0
    assert checks.cfg_condition(2.5, "v2a") == 2.5 and checks.cfg_condition(0, "a2v") == 0.0
    for value, task, words in (
        (-0.5, "v2a", "must be -1 (the task's measured default) or a guidance scale from 0 to 100"),
        (True, "v2a", "must be a finite number"),
        (2.0, "t2av", "task 't2av' has none"),
        (2.0, "x2y", "task must be one of"),
    ):
        with pytest.raises(InputError, match=re.escape(words)):
            checks.cfg_condition(value, task)


def test_save_index_outside_the_batch_is_refused(pipe, tmp_path):
    result = pipe.generate("t2av", prompt="a ball", steps=1, duration=1, height=32, width=32)
    for index in (5, -1, "0"):
        with pytest.raises(InputError, match="index"):
            result.save(tmp_path / "x.mp4", index=index)
    with pytest.raises(InputError, match=r"must end in \.mp4"):
        result.save(tmp_path / "x.wav")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.mp4"
    media.write_mp4(path, _frames(), 17, media.AudioClip(0.1 * torch.randn(1, 16000), 16000))
    return path


@pytest.mark.parametrize("alias", ["same", "relative", "hardlink", "symlink"])
def test_out_equal_to_an_input_file_is_refused_naming_both(bundle_dir, source, tmp_path, capsys, alias, monkeypatch):
    out = {"same": source, "relative": source.parent / "." / source.name, "hardlink": tmp_path / "link.mp4"}
    out["symlink"] = tmp_path / "sym.mp4"
    if alias == "hardlink":
        os.link(source, out["hardlink"])
    if alias == "symlink":
        out["symlink"].symlink_to(source)
    before, listing = source.read_bytes(), _listing(tmp_path)
    code = _cli(
        tmp_path, "--audio", str(source), "--bundle", str(bundle_dir), "--steps", "1", task="a2v", out=out[alias]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"--out {str(out[alias])!r} is the same file as --audio {str(source)!r}" in err
    assert source.read_bytes() == before and _listing(tmp_path) == listing


@pytest.mark.parametrize("out, words", [("x.wav", "must end in .mp4"), ("nowhere/x.mp4", "does not exist"), (".", "")])
def test_out_must_be_an_mp4_file_in_an_existing_folder(tmp_path, capsys, out, words):
    assert _cli(tmp_path, out=out) == 2
    err = capsys.readouterr().err
    assert "--out" in err and words in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flags, name",
    [
        (["--seed", str(2**64)], "--seed"),
        (["--seed", "1e3"], "--seed"),
        (["--cfg", "inf"], "--cfg"),
        (["--cfg", "nan"], "--cfg"),
        (["--width", "0"], "--width"),
        (["--height", "100000"], "--height"),
        (["--duration", "0"], "--duration"),
        (["--duration", "3601"], "--duration"),
        (["--steps", "0"], "--steps"),
        (["--batch", "0"], "--batch"),
        (["--prompt", "\udcff"], "--prompt"),
        (["--device", "tpu9"], "--device"),
        (["--task", "x2y"], "--task"),
        (["--cfg-condition", "3"], "--cfg-condition"),
        (["--cfg-condition", "-2"], "--cfg-condition"),
    ],
)
def test_cli_flags_are_refused_before_the_bundle_loads(tmp_path, capsys, flags, name, monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("the bundle must not load for a refused flag")

    monkeypatch.setattr(UniFormPipeline, "from_bundle", no_load)
    assert _cli(tmp_path, *flags) == 2
    err = capsys.readouterr().err
    assert name in err and "Traceback" not in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_cannot_fit_in_memory_is_refused_up_front(pipe, bundle, dit_calls):
    with pytest.raises(InputError) as e:
        pipe.generate("t2av", prompt="a ball", steps=1, duration=16, height=2048, width=2048, batch_size=64)
    message = str(e.value)
    assert "needs about" in message and "GiB" in message and "available" in message
    assert dit_calls == []
    latent = make_task_latent("t2av", duration=16, height=2048, width=2048)
    with pytest.raises(InputError, match="sampling needs about .* GiB .* available"):
        sample(bundle.dit, latent, None, batch_size=64, steps=1)
    assert dit_calls == []


def _write_bundle_json(bundle_dir, tmp_path, info):
    folder = tmp_path / "bad-bundle"
    folder.mkdir()
    for f in bundle_dir.iterdir():
        (folder / f.name).symlink_to(f)
    (folder / "bundle.json").unlink()
    (folder / "bundle.json").write_text(json.dumps(info) if not isinstance(info, str) else info)
    return folder


@pytest.mark.parametrize(
    "info, words",
    [
        ([1, 2], "must hold a JSON object"),
        ({"height": 17}, "height"),
        ({"width": "256"}, "width"),
        ({"duration": 99}, "duration"),
        ({"cfg": 1e30}, "cfg"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_bundle_json_is_a_checkpoint_error_naming_the_file(bundle_dir, tmp_path, info, words):
    folder = _write_bundle_json(bundle_dir, tmp_path, info)
    with pytest.raises(CheckpointError) as e:
        load_bundle(folder)
    assert str(folder / "bundle.json") in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("config", ["{bad json", "[1, 2]", None])
def test_dit_metadata_with_bad_json_is_a_checkpoint_error(tmp_path, config):
    path = tmp_path / "dit.safetensors"
    metadata = {"uniform_component": "dit"} | ({"config": config} if config is not None else {})
    save_file({"w": torch.zeros(1)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError) as e:
        UniFormDiT.load(path)
    assert str(path) in str(e.value) and "'config'" in str(e.value)


def test_nodes_check_socket_types_and_widget_ranges(pack, bundle, dit_calls):
    nodes = pack.NODE_CLASS_MAPPINGS
    managed = importlib.import_module(f"{pack.__name__}.nodes.managed")
    sampler = nodes["UniFormSampler"]()
    (latent,) = nodes["UniFormTaskLatent"]().run(task="t2av", duration=1, width=32, height=32)
    good = dict(dit=managed.prepare(bundle.dit, "dit", "fp32", "auto"), latent=latent, seed=0, steps=1, cfg=1.0)
    good |= dict(sampler="ddim", batch_size=1, text=encode_text(bundle.text_encoder, "a ball"))
    with pytest.raises(InputError, match="UniForm Sampler: dit must be UNIFORM_DIT \\(from UniForm Load DiT"):
        sampler.run(**(good | {"dit": "a model"}))
    with pytest.raises(InputError, match="UniForm Sampler: latent must be UNIFORM_LATENT"):
        sampler.run(**(good | {"latent": torch.zeros(1, 4, 5, 4, 4)}))
    with pytest.raises(InputError, match="UniForm Sampler: steps must be an integer from 1 to 1000; got 0"):
        sampler.run(**(good | {"steps": 0}))
    with pytest.raises(InputError, match="UniForm Sampler: cfg must be a finite number from 0.0 to 100.0; got inf"):
        sampler.run(**(good | {"cfg": math.inf}))
    with pytest.raises(InputError, match="UniForm Sampler: sampler must be one of"):
        sampler.run(**(good | {"sampler": "heun"}))
    assert dit_calls == []
    with pytest.raises(InputError, match="UniForm Save Video \\+ Audio: frames must be a \\(T, H, W, 3\\) tensor"):
        nodes["UniFormSaveAV"]().run(frames=[[0]], fps=17.0, filename_prefix="x")
    with pytest.raises(InputError, match="UniForm Task Latent: width must be an integer from 16 to 2048"):
        nodes["UniFormTaskLatent"]().run(task="t2av", duration=1, width=100_000, height=32)
    with pytest.raises(InputError, match="UniForm Text Encode: input 'negative_prompt' is missing"):
        nodes["UniFormTextEncode"]().run(text_encoder=None, prompt="x")


def test_the_largest_seed_allowed_is_one_torch_takes():
    torch.Generator().manual_seed(checks.seed(checks.SEED_MAX))
    with pytest.raises((RuntimeError, ValueError)):
        torch.Generator().manual_seed(checks.SEED_MAX + 1)


def test_the_whole_number_rule_is_written_only_in_checks():
    root = Path(__file__).resolve().parents[1]
    hand_written = [
        f"{path.relative_to(root)}:{n}"
        for folder in ("uniform_core", "nodes")
        for path in sorted((root / folder).rglob("*.py"))
        if path.name != "checks.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"isinstance\([^)]*\bbool\)", line)
    ]
    assert hand_written == [], "use uniform_core.checks.integer / number instead"
