"""The pipeline stages and one-call generation on a random tiny bundle: shapes, task noise schemes, seeds, CFG."""

import pytest
import torch

from uniform_core import media
from uniform_core.bundle import random_tiny_bundle
from uniform_core.diffusion.samplers import SAMPLERS
from uniform_core.errors import InputError
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


def _frames(seconds=1, size=64, fps=17):
    t = torch.linspace(0, 1, seconds * fps).view(-1, 1, 1, 1)
    return (t * torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(1))).clamp(0, 1)


def _waveform(seconds=1, rate=16000):
    n = torch.arange(seconds * rate)
    return (0.3 * torch.sin(2 * torch.pi * 440 * n / rate)).unsqueeze(0)


def _conditions(bundle, seconds=1):
    video = encode_video(bundle.video_vae, _frames(seconds), fps=17)
    audio = encode_audio(bundle.audio_codec, _waveform(seconds), 16000)
    return video, audio


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("task", ["t2av", "a2v", "v2a"])
def test_sample_keeps_condition_bit_identical(bundle, task, sampler):
    video, audio = _conditions(bundle)
    latent = make_task_latent(task, duration=1, height=64, width=64, video=video, audio=audio)
    text = encode_text(bundle.text_encoder, "a red ball bounces")
    out = sample(bundle.dit, latent, text, seed=3, steps=2, sampler=sampler).latent

    assert out.video.shape == (1, 4, 5, 8, 8) and out.audio.shape == (1, 8, 25, 16)
    assert torch.isfinite(out.video).all() and torch.isfinite(out.audio).all()
    if task == "a2v":
        assert torch.equal(out.audio, audio.latent)
        assert not torch.equal(out.video, latent.video)
    elif task == "v2a":
        assert torch.equal(out.video, video.latent)
        assert not torch.equal(out.audio, latent.audio)


def test_seeds_reproduce_and_batch_items_match_single_runs(bundle):
    latent = make_task_latent("t2av", duration=1, height=64, width=64)
    text = encode_text(bundle.text_encoder, "a blue square falls")
    a = sample(bundle.dit, latent, text, seed=7, steps=3).latent
    b = sample(bundle.dit, latent, text, seed=7, steps=3).latent
    c = sample(bundle.dit, latent, text, seed=8, steps=3).latent
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)
    assert not torch.allclose(a.video, c.video)

    batch = sample(bundle.dit, latent, text, seed=7, steps=3, batch_size=2)
    assert batch.seeds == [7, 8]
    # Batched matmuls round differently from single ones: seeds differ by O(1), rounding by ~1e-3 after 3 steps
    # (relative ~1e-5 where the latent is large).
    torch.testing.assert_close(batch.latent.video[0:1], a.video, rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(batch.latent.video[1:2], c.video, rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(batch.latent.audio[1:2], c.audio, rtol=1e-4, atol=1e-2)
    assert (a.video - c.video).abs().max() > 0.1


def test_cfg_runs_cond_and_uncond_in_one_call_per_step(bundle):
    calls = []
    handle = bundle.dit.register_forward_hook(lambda module, args, out: calls.append(out[0].shape[0]))
    try:
        latent = make_task_latent("t2av", duration=1, height=64, width=64)
        text = encode_text(bundle.text_encoder, "a green ball")
        sample(bundle.dit, latent, text, seed=0, steps=4, cfg=5.0, sampler="ddim")
    finally:
        handle.remove()
    assert calls == [2] * 4


def test_negative_prompt_changes_the_result(bundle):
    latent = make_task_latent("t2av", duration=1, height=64, width=64)
    plain = encode_text(bundle.text_encoder, "a red ball")
    negative = encode_text(bundle.text_encoder, "a red ball", negative_prompt="noise, blur")
    assert negative.negative_y is not None and negative.negative_y.shape == plain.y.shape[:1] + negative.y.shape[1:]
    a = sample(bundle.dit, latent, plain, seed=0, steps=2).latent
    b = sample(bundle.dit, latent, negative, seed=0, steps=2).latent
    assert not torch.allclose(a.video, b.video)


def test_decoders_give_the_requested_duration(bundle):
    latent = make_task_latent("t2av", duration=2, height=64, width=48)
    frames, fps = decode_video(bundle.video_vae, latent)
    waveform, rate = decode_audio(bundle.audio_codec, latent)
    assert frames.shape == (1, 34, 64, 48, 3) and fps == 17
    assert 0 <= frames.min() and frames.max() <= 1
    assert waveform.shape == (1, 1, 32000) and rate == 16000


@pytest.mark.parametrize("task", ["t2av", "a2v", "v2a"])
def test_generate_each_task(pipe, task, tmp_path):
    clip_path = tmp_path / "in.mp4"
    media.write_mp4(clip_path, _frames(2), 17, media.AudioClip(_waveform(2), 16000))
    result = pipe.generate(
        task,
        prompt="a yellow triangle bounces" if task == "t2av" else None,
        video=clip_path if task == "v2a" else None,
        audio=clip_path if task == "a2v" else None,
        steps=2,
        seed=1,
    )
    assert result.frames.shape[:2] == (1, 34) and result.fps == 17
    assert result.waveform.shape == (1, 1, 32000) and result.sample_rate == 16000
    out = result.save(tmp_path / f"{task}.mp4")
    info = media.probe(out)
    assert info.has_video and info.has_audio
    assert abs(info.duration - 2.0) < 0.1


def test_generate_returns_the_condition_unchanged(pipe):
    frames = _frames(1)
    clip = media.VideoClip(frames, 17.0, None)
    result = pipe.generate("v2a", video=clip, steps=1)
    torch.testing.assert_close(result.frames[0], frames)

    wave = _waveform(1)
    result = pipe.generate("a2v", audio=media.AudioClip(wave, 16000), steps=1)
    torch.testing.assert_close(result.waveform[0, 0], wave[0])


def test_inputs_are_conformed_and_reported(pipe):
    frames = torch.rand(45, 70, 90, 3)  # 1.5 s at 30 fps, odd size, more pixels than the 64x64 bundle's
    result = pipe.generate("v2a", video=media.VideoClip(frames, 30.0, None), steps=1)
    assert result.frames.shape[1:] == (17, 48, 64, 3)  # ~64x64 px at its own aspect, multiples of 16
    assert result.notes, "conforming the input must be reported"


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(task="a2v"), "audio"),
        (dict(task="v2a"), "video"),
        (dict(task="t2av"), "prompt"),
        (dict(task="x2y", prompt="p"), "task"),
        (dict(task="t2av", prompt="p", sampler="heun"), "sampler"),
        (dict(task="t2av", prompt="p", steps=0), "steps"),
        (dict(task="t2av", prompt="p", cfg=-1.0), "cfg"),
        (dict(task="t2av", prompt="p", duration=0), "duration"),
        (dict(task="t2av", prompt="p", duration=1.5), "duration"),
        (dict(task="t2av", prompt="p", duration=60), "duration"),
        (dict(task="t2av", prompt="p", height=50), "height"),
    ],
)
def test_bad_inputs_are_named(pipe, kwargs, words):
    with pytest.raises(InputError, match=words):
        pipe.generate(**kwargs)


def test_the_bundle_carries_its_sampling_defaults(tmp_path, monkeypatch):
    import json

    from uniform_core import pipeline
    from uniform_core.bundle import load_bundle, save_bundle
    from uniform_core.errors import CheckpointError

    tiny = random_tiny_bundle(seed=0)
    tiny.sampler, tiny.cfg = "ddim", 1.5
    folder = save_bundle(tiny, tmp_path / "b")
    loaded = load_bundle(folder)
    assert (loaded.sampler, loaded.cfg) == ("ddim", 1.5)

    seen = []
    real_sample = pipeline.sample
    monkeypatch.setattr(
        pipeline,
        "sample",
        lambda dit, latent, text, seed, steps, cfg, sampler, *a, **kw: (
            seen.append((cfg, sampler)) or real_sample(dit, latent, text, seed, steps, cfg, sampler, *a, **kw)
        ),
    )
    pipe = UniFormPipeline(loaded)
    pipe.generate("t2av", prompt="a red ball", steps=2)
    pipe.generate("t2av", prompt="a red ball", steps=2, cfg=3.0, sampler="euler")
    assert seen == [(1.5, "ddim"), (3.0, "euler")]

    info = json.loads((folder / "bundle.json").read_text())
    for key, value, words in (("sampler", "plms", "sampler must be one of"), ("cfg", "high", "cfg must be a finite")):
        (folder / "bundle.json").write_text(json.dumps(info | {key: value}))
        with pytest.raises(CheckpointError, match=words):
            load_bundle(folder)
    (folder / "bundle.json").write_text(json.dumps({k: v for k, v in info.items() if k not in ("sampler", "cfg")}))
    assert (load_bundle(folder).sampler, load_bundle(folder).cfg) == ("iddpm", 5.0)  # the paper's, for older bundles


def test_a_bundle_can_guide_each_task_with_its_own_scale(tmp_path, monkeypatch):
    import json

    from uniform_core import pipeline
    from uniform_core.bundle import load_bundle, save_bundle
    from uniform_core.errors import CheckpointError

    tiny = random_tiny_bundle(seed=0)
    tiny.sampler, tiny.cfg = "ddim", {"t2av": 2.0, "a2v": 1.0, "v2a": 0.5}
    folder = save_bundle(tiny, tmp_path / "b")
    loaded = load_bundle(folder)
    assert [loaded.cfg_for(task) for task in ("t2av", "a2v", "v2a")] == [2.0, 1.0, 0.5]

    seen = []
    real_sample = pipeline.sample
    monkeypatch.setattr(
        pipeline,
        "sample",
        lambda dit, latent, text, seed, steps, cfg, *a, **kw: (
            seen.append(cfg) or real_sample(dit, latent, text, seed, steps, cfg, *a, **kw)
        ),
    )
    pipe = UniFormPipeline(loaded)
    clip = media.VideoClip(_frames(2), 17)
    pipe.generate("t2av", prompt="a red ball", steps=1)
    pipe.generate("a2v", prompt="a red ball", audio=media.AudioClip(_waveform(2), 16000), steps=1)
    pipe.generate("v2a", prompt="a red ball", video=clip, steps=1)
    pipe.generate("v2a", prompt="a red ball", video=clip, steps=1, cfg=4.0)
    assert seen == [2.0, 1.0, 0.5, 4.0]

    info = json.loads((folder / "bundle.json").read_text())
    for bad, words in (
        ({"t2av": 2.0, "a2v": 1.0}, r"cfg must be a number >= 0 or a mapping of each"),
        ({"t2av": 2.0, "a2v": 1.0, "v2a": -1.0}, r"cfg\['v2a'\] must be a number from 0.0 to 100.0"),
        ({"t2av": 2, "a2v": 1, "t2a": 1}, r"cfg must be a number >= 0 or a mapping of each"),
    ):
        (folder / "bundle.json").write_text(json.dumps(info | {"cfg": bad}))
        with pytest.raises(CheckpointError, match=r"bundle\.json: " + words):
            load_bundle(folder)


def test_a_picture_larger_than_the_model_takes_is_scaled_as_a_whole():
    from uniform_core.checks import MAX_SIDE
    from uniform_core.stages import model_size

    assert model_size(2160, 3840) == (1152, MAX_SIDE)  # 16:9 stays 16:9, not a square crop of a 2048 cut
    assert model_size(4096, 1024) == (MAX_SIDE, 512)
    assert model_size(70, 90) == (64, 80)  # within the limit: only cropped to multiples of 16
    assert model_size(1, 1) == (16, 16)


def test_a_picture_is_scaled_to_the_models_pixel_count_at_its_own_aspect():
    from uniform_core.stages import model_size

    assert model_size(2160, 3840, area=64 * 64) == (48, 80)  # ~4096 px at 16:9
    assert model_size(2160, 3840, area=256 * 256) == (192, 336)
    assert model_size(64, 64, area=64 * 64) == (64, 64)
    assert model_size(32, 48, area=64 * 64) == (32, 48)  # never scaled up
