"""Long clips: continuation keeps its given start clean, windows cover any length exactly, long A2V/V2A keep their
condition, segment decoding equals whole decoding where it fits, and sound and picture take their own CFG scale.
Random tiny bundle (2 s window), 32x32 px, one or two sampler steps."""

import dataclasses
import itertools

import pytest
import torch

from uniform_core import media
from uniform_core.diffusion.continuation import continuation_keep_mask
from uniform_core.diffusion.guidance import make_model_fn
from uniform_core.diffusion.schedule import NoiseSchedule
from uniform_core.diffusion.task_latent import keep_mask, pack
from uniform_core.errors import InputError
from uniform_core.long import decode_long, extend_latent, generate_long, plan_windows, sample_long
from uniform_core.long.codec_segments import decode_audio_long, segments
from uniform_core.long.windows import Window, window_latent
from uniform_core.pipeline import encode_text, make_task_latent, sample

SIZE = 32


@pytest.fixture(scope="module")
def text(bundle):
    return encode_text(bundle.text_encoder, "a red ball bounces")


def _latent(task="t2av", seconds=3):
    return make_task_latent(task, seconds, SIZE, SIZE, max_seconds=3600)


def test_continuation_mask_keeps_the_same_time_window_of_both_modalities():
    video_shape, audio_shape = (4, 10, 4, 4), (8, 50, 16)
    mask = continuation_keep_mask("t2av", video_shape, audio_shape, 3)
    video = mask[: 4 * 10 * 16].view(video_shape)
    audio = mask[4 * 10 * 16 :].view(audio_shape)
    assert video[:, :3].all() and not video[:, 3:].any()
    assert audio[:, :15].all() and not audio[:, 15:].any()
    a2v = continuation_keep_mask("a2v", video_shape, audio_shape, 2)
    assert torch.equal(a2v | keep_mask("a2v", video_shape, audio_shape), a2v) and a2v[4 * 10 * 16 :].all()
    assert torch.equal(
        continuation_keep_mask("v2a", video_shape, audio_shape, 0), keep_mask("v2a", video_shape, audio_shape)
    )
    for bad in (-1, 10, 2.0, True):
        with pytest.raises(InputError, match="given_frames"):
            continuation_keep_mask("t2av", video_shape, audio_shape, bad)


@pytest.mark.parametrize("task", ["t2av", "a2v", "v2a"])
def test_sampling_keeps_the_given_start_bit_identical(bundle, text, task):
    latent = make_task_latent(task, 2, SIZE, SIZE) if task == "t2av" else _latent("t2av", 2)
    given_video, given_audio = torch.randn_like(latent.video), torch.randn_like(latent.audio)
    latent = latent.__class__(**{**latent.__dict__, "task": task, "video": given_video, "audio": given_audio})
    out = sample(bundle.dit, latent, text, seed=1, steps=2, cfg=2.0, sampler="ddim", given_frames=4).latent
    keep = continuation_keep_mask(task, latent.video.shape, latent.audio.shape, 4)
    before, after = pack(latent.video, latent.audio)[0], pack(out.video, out.audio)[0]
    assert torch.equal(after[keep], before[keep])
    assert not torch.isclose(after[~keep], before[~keep]).any()


@pytest.mark.parametrize("sampler", ["ddim", "iddpm", "euler"])
def test_a_noised_given_start_is_shown_at_each_steps_noise_level_and_ends_clean(bundle, text, sampler):
    latent = make_task_latent("t2av", 2, SIZE, SIZE)
    latent = latent.with_latents(torch.randn_like(latent.video), torch.randn_like(latent.audio))
    seen = []
    hook = lambda _m, args: seen.append((args[0][:, :, :4].clone(), args[1][:, :, :20].clone()))  # noqa: E731
    handle = bundle.dit.register_forward_pre_hook(hook)
    modes = ((), ("video", "audio"), ("audio",))  # all clean, all noised, the picture clean and the sound noised
    try:
        runs = [
            sample(bundle.dit, latent, text, 1, 3, 1.0, sampler, given_frames=4, given_noised=mode).latent
            for mode in modes
        ]
    finally:
        handle.remove()
    given = (latent.video[:, :, :4], latent.audio[:, :, :20])
    for m, mode in enumerate(modes):
        for i, name in enumerate(("video", "audio")):
            shown = [step[i] for step in seen[3 * m : 3 * m + 3]]
            if name not in mode:  # clean: the model sees the given frames as they are
                assert all(torch.equal(s, given[i]) for s in shown)
                continue
            assert not any(torch.isclose(s, given[i]).all() for s in shown)  # noised: never as they are
            noise_level = [(s - given[i]).std().item() for s in shown]
            assert noise_level == sorted(noise_level, reverse=True)  # less noise at every step
    for out in runs:
        assert torch.equal(out.video[:, :, :4], given[0]) and torch.equal(out.audio[:, :, :20], given[1])


def test_windows_cover_any_length_and_each_continues_what_came_before():
    for total, window, overlap in [(7, 2, 1), (9, 4, 1), (10, 4, 2), (3, 4, 1), (61, 2, 1)]:
        plan = plan_windows(total, window, overlap)
        assert plan[0].start == 0 and plan[0].given == 0 and plan[-1].stop == total
        for before, part in itertools.pairwise(plan):
            assert part.seconds == min(window, total) and part.start + part.given == before.stop
            assert overlap <= part.given < part.seconds
    assert plan_windows(6, 2, 1, done=4)[0].start == 3
    for args in [(5, 2, 2), (5, 2, 0), (5, 0, 1), (4, 2, 1, 4), (5.5, 2, 1)]:
        with pytest.raises(InputError):
            plan_windows(*args)


def test_long_sampling_is_the_native_first_window_then_continuations(bundle, text):
    latent = _latent("t2av", 3)
    out = sample_long(bundle.dit, latent, text, seed=5, steps=2, cfg=2.0, sampler="ddim", window=2, overlap=1)
    first = sample(bundle.dit, make_task_latent("t2av", 2, SIZE, SIZE), text, 5, 2, 2.0, "ddim").latent
    assert torch.equal(out.latent.video[:, :, :10], first.video) and torch.equal(
        out.latent.audio[:, :, :50], first.audio
    )
    second_in = window_latent(out.latent, plan_windows(3, 2, 1)[1])
    second = sample(bundle.dit, second_in, text, 6, 2, 2.0, "ddim", given_frames=5).latent
    assert torch.equal(second.video, second_in.video) and torch.equal(second.audio, second_in.audio)


def test_progress_runs_once_over_all_windows(bundle, text):
    calls = []
    sample_long(
        bundle.dit, _latent("t2av", 4), text, steps=2, sampler="ddim", progress=lambda s, n: calls.append((s, n))
    )
    assert calls == [(s, 6) for s in range(1, 7)]


@pytest.mark.parametrize("task", ["a2v", "v2a"])
def test_long_a2v_v2a_keep_their_whole_condition(bundle, task):
    latent = _latent("t2av", 5)
    latent = latent.__class__(
        **{
            **latent.__dict__,
            "task": task,
            "video": torch.randn_like(latent.video),
            "audio": torch.randn_like(latent.audio),
        }
    )
    out = sample_long(bundle.dit, latent, None, steps=1, sampler="ddim").latent
    kept = "audio" if task == "a2v" else "video"
    assert torch.equal(getattr(out, kept), getattr(latent, kept))
    made = "video" if task == "a2v" else "audio"
    assert not torch.isclose(getattr(out, made), getattr(latent, made)).any()


def test_extension_keeps_the_clip_and_adds_the_seconds(bundle, text):
    clip = sample(bundle.dit, make_task_latent("t2av", 2, SIZE, SIZE), text, 0, 1, 1.0, "ddim").latent
    longer = sample_long(bundle.dit, extend_latent(clip, 3), text, steps=1, sampler="ddim", done=2).latent
    assert longer.duration == 5 and longer.num_frames == 85 and longer.video.shape[2] == 25
    assert torch.equal(longer.video[:, :, :10], clip.video) and torch.equal(longer.audio[:, :, :50], clip.audio)
    a2v = clip.__class__(**{**clip.__dict__, "task": "a2v"})
    with pytest.raises(InputError, match="condition"):
        extend_latent(a2v, 1)
    extended = extend_latent(a2v, 1, torch.ones(1, 8, 25, 16))
    assert torch.equal(extended.audio[:, :, 50:], torch.ones(1, 8, 25, 16))


def test_segment_decoding_covers_every_step_once_and_is_exact_where_it_fits(bundle):
    for length in (7, 50, 51, 160):
        kept = [i for _, _, start, stop in segments(length, 50, 8) for i in range(start, stop)]
        assert kept == list(range(length))
    z = torch.randn(1, 8, 50, 16)
    assert torch.equal(decode_audio_long(bundle.audio_codec, z, 50, 8), bundle.audio_codec.decode(z))


@pytest.mark.parametrize("seam", ["latent", "crossfade"])
@pytest.mark.parametrize("task", ["t2av", "a2v", "v2a"])
def test_generate_long_gives_exact_counts_for_lengths_that_are_not_whole_windows(pipe, task, seam):
    seconds = 5
    frames = torch.rand(seconds * 17 + 3, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))
    wave = 0.3 * torch.sin(torch.arange(seconds * 16000 + 100) / 16000 * 2 * torch.pi * 440).unsqueeze(0)
    result = generate_long(
        pipe,
        task,
        prompt="a red ball bounces" if task == "t2av" else None,
        video=media.VideoClip(frames, 17.0) if task == "v2a" else None,
        audio=media.AudioClip(wave, 16000) if task == "a2v" else None,
        duration=seconds if task == "t2av" else None,
        steps=1,
        sampler="ddim",
        height=SIZE,
        width=SIZE,
        seam=seam,
    )
    assert result.frames.shape == (1, seconds * 17, SIZE, SIZE, 3) and result.waveform.shape == (1, 1, seconds * 16000)
    assert torch.isfinite(result.waveform).all() and 0 <= result.frames.min() <= result.frames.max() <= 1
    if task == "v2a":
        assert torch.equal(result.frames[0], frames[: seconds * 17])
    if task == "a2v":
        assert torch.equal(result.waveform[0, 0], wave[0, : seconds * 16000])


def test_a_clip_within_one_window_is_the_native_pipeline(pipe):
    kwargs = dict(prompt="a red ball bounces", duration=2, steps=2, sampler="ddim", height=SIZE, width=SIZE, seed=3)
    native, long = pipe.generate("t2av", **kwargs), generate_long(pipe, "t2av", **kwargs)
    assert torch.equal(native.frames, long.frames) and torch.equal(native.waveform, long.waveform)


def test_crossfade_joins_windows_where_they_overlap(pipe):
    latent = _latent("t2av", 3)
    latent = latent.with_latents(torch.randn_like(latent.video), torch.randn_like(latent.audio))
    _, joined = decode_long(pipe, latent, 2, 1, "crossfade")
    codec = pipe.bundle.audio_codec
    first, second = codec.decode(latent.audio[:, :, :50]), codec.decode(latent.audio[:, :, 25:])
    assert torch.equal(joined[0, 0, :16000], first[0, :16000]) and torch.equal(joined[0, 0, 32000:], second[0, 16000:])
    mid = joined[0, 0, 16000:32000]
    assert torch.allclose(mid[[0, -1]], torch.stack([first[0, 16000], second[0, 15999]]), atol=1e-3)
    with pytest.raises(InputError, match="seam"):
        decode_long(pipe, latent, 2, 1, "blend")


def test_sound_and_picture_take_their_own_guidance_in_one_call(bundle, text):
    latent = make_task_latent("t2av", 2, SIZE, SIZE)
    null = bundle.dit.null_caption(1, text.y.shape[1])
    x = torch.randn(1, pack(latent.video, latent.audio).shape[1])
    t = torch.tensor([500])
    calls = []
    handle = bundle.dit.register_forward_hook(lambda *_: calls.append(1))
    try:

        def run(video_scale, audio_scale=None):
            fn = make_model_fn(bundle.dit, latent, text.y, text.mask, null, text.mask, video_scale, audio_scale)
            return latent.unpack(fn(x, t)[0])

        mixed, video_guided, audio_guided = run(4.0, 1.5), run(4.0), run(1.5)
    finally:
        handle.remove()
    assert len(calls) == 3  # one batched DiT call each
    assert torch.allclose(mixed[0], video_guided[0], atol=1e-6) and torch.allclose(
        mixed[1], audio_guided[1], atol=1e-6
    )
    assert not torch.allclose(mixed[0], audio_guided[0], atol=1e-4)
    with pytest.raises(InputError, match="audio_cfg_scale"):
        make_model_fn(bundle.dit, latent, text.y, text.mask, None, None, 2.0, -1.0)


def test_guidance_on_the_condition_is_one_call_away_from_the_model_without_it(bundle, text):
    latent = _latent("t2av", 2)
    latent = dataclasses.replace(latent, task="v2a", video=torch.randn_like(latent.video))
    keep = keep_mask("v2a", latent.video.shape, latent.audio.shape)
    gen = torch.Generator().manual_seed(0)
    x = torch.where(keep, pack(latent.video, latent.audio), torch.randn(1, keep.numel(), generator=gen))
    noise, t = torch.randn(1, keep.numel(), generator=gen), torch.tensor([500])
    null = bundle.dit.null_caption(1, text.y.shape[1])
    calls = []
    handle = bundle.dit.register_forward_hook(lambda *_: calls.append(1))
    try:
        both = make_model_fn(bundle.dit, latent, text.y, text.mask, null, text.mask, 2.0, None, 3.0, noise)(x, t)[0]
    finally:
        handle.remove()
    assert len(calls) == 1  # text-guided and condition-guided branches in one batched DiT call
    text_guided = make_model_fn(bundle.dit, latent, text.y, text.mask, null, text.mask, 2.0)(x, t)[0]
    cond = make_model_fn(bundle.dit, latent, text.y, text.mask, None, None, 1.0)(x, t)[0]
    without = make_model_fn(bundle.dit, dataclasses.replace(latent, task="t2av"), text.y, text.mask, None, None, 1.0)
    abar = float(NoiseSchedule().alphas_cumprod[500])
    uncond = without(torch.where(keep, abar**0.5 * x + (1 - abar) ** 0.5 * noise, x), t)[0]
    assert torch.allclose(both, text_guided + 2.0 * (cond - uncond), atol=1e-5)
    assert not torch.allclose(both, text_guided, atol=1e-3)
    for bad_latent, bad_noise in ((dataclasses.replace(latent, task="t2av"), noise), (latent, None)):
        with pytest.raises(InputError, match="condition_scale"):
            make_model_fn(bundle.dit, bad_latent, text.y, text.mask, None, None, 1.0, None, 2.0, bad_noise)


# ---- nodes --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_parts(pack):
    nodes = {name: cls() for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
    dit, _, _, text_encoder = nodes["UniFormLoadBundle"].run(
        bundle="uniform-tiny (embedded)", precision="auto", offload="auto"
    )
    (text,) = nodes["UniFormTextEncode"].run(
        text_encoder=text_encoder, prompt="a red ball bounces", negative_prompt=""
    )
    return nodes, dit, text


WIDGETS = dict(seed=0, steps=1, cfg_video=3.0, cfg_audio=1.0, sampler="ddim", window=2, overlap=1)


def test_long_sampler_node_makes_a_task_latent_of_any_length(node_parts):
    nodes, dit, text = node_parts
    (latent,) = nodes["UniFormTaskLatent"].run(task="t2av", duration=3, width=SIZE, height=SIZE)
    (out,) = nodes["UniFormLongSampler"].run(dit=dit, latent=latent, text=text, **WIDGETS)
    assert out.duration == 3 and out.video.shape[2] == 15 and out.audio.shape[2] == 75
    with pytest.raises(InputError, match="UniForm Long Sampler: .*text"):
        nodes["UniFormLongSampler"].run(dit=dit, latent=latent, **WIDGETS)


def test_extend_node_keeps_the_clip_and_adds_seconds(node_parts):
    nodes, dit, text = node_parts
    (latent,) = nodes["UniFormTaskLatent"].run(task="t2av", duration=2, width=SIZE, height=SIZE)
    (clip,) = nodes["UniFormLongSampler"].run(dit=dit, latent=latent, text=text, **WIDGETS)
    (longer,) = nodes["UniFormExtend"].run(dit=dit, latent=clip, seconds=2, text=text, **WIDGETS)
    assert longer.duration == 4 and longer.num_frames == 68
    assert torch.equal(longer.video[:, :, :10], clip.video) and torch.equal(longer.audio[:, :, :50], clip.audio)
    a2v = clip.__class__(**{**clip.__dict__, "task": "a2v"})
    with pytest.raises(InputError, match="UniForm Extend: .*audio condition"):
        nodes["UniFormExtend"].run(dit=dit, latent=a2v, seconds=1, **WIDGETS)


def test_long_nodes_guide_on_the_condition_as_their_widget_says(node_parts):
    """-1 (the widget's default) is the library's measured default, 1 turns it off; T2AV refuses other scales."""
    nodes, dit, text = node_parts
    (t2av,) = nodes["UniFormTaskLatent"].run(task="t2av", duration=3, width=SIZE, height=SIZE)
    video = torch.randn(t2av.video.shape, generator=torch.Generator().manual_seed(0))
    v2a = dataclasses.replace(t2av, task="v2a", video=video)
    node = nodes["UniFormLongSampler"]
    run = lambda scale: node.run(dit=dit, latent=v2a, cfg_condition=scale, **WIDGETS)[0]  # noqa: E731
    library = sample_long(dit.module, v2a, None, 0, 1, 3.0, "ddim", 1, 2, 1, cfg_audio=1.0).latent.audio
    assert torch.equal(run(-1.0).audio, library) and (run(1.0).audio - library).abs().max() > 1e-3
    for name, extra in (("UniFormLongSampler", {}), ("UniFormExtend", {"seconds": 1})):
        with pytest.raises(InputError, match=f"^{nodes[name].DISPLAY_NAME}: cfg_condition guides the condition"):
            nodes[name].run(dit=dit, latent=t2av, text=text, cfg_condition=3.0, **extra, **WIDGETS)


def test_cli_makes_a_clip_longer_than_the_models_window(tmp_path):
    from uniform_core.cli import main

    out = tmp_path / "long.mp4"
    argv = ["generate", "--task", "t2av", "--prompt", "a red ball bounces", "--duration", "3", "--steps", "1"]
    assert main([*argv, "--cfg-audio", "1.5", "--out", str(out)]) == 0
    clip = media.read_video(out)
    assert clip.frames.shape[0] == 3 * 17 and abs(clip.audio.waveform.shape[-1] / clip.audio.sample_rate - 3) < 0.07


@pytest.fixture(scope="module")
def codec_nodes(node_parts):
    nodes = node_parts[0]
    _, video_vae, audio_vae, _ = nodes["UniFormLoadBundle"].run(
        bundle="uniform-tiny (embedded)", precision="auto", offload="auto"
    )
    return nodes, video_vae, audio_vae


def test_encode_nodes_take_inputs_longer_than_one_native_clip(codec_nodes):
    nodes, video_vae, audio_vae = codec_nodes
    seconds = 18  # beyond checks.MAX_SECONDS (16): encoded 16 s at a time
    frames = torch.rand(seconds * 17, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))
    latent, conformed, _ = nodes["UniFormVideoEncode"].run(
        video_vae=video_vae, fps=17.0, duration=0, width=0, height=0, images=frames
    )
    assert latent.latent.shape[2] == seconds * 5 and torch.equal(conformed, frames)
    head = nodes["UniFormVideoEncode"].run(video_vae=video_vae, fps=17.0, duration=2, width=0, height=0, images=frames)
    assert torch.allclose(latent.latent[:, :, :10], head[0].latent, atol=1e-5)  # the VAE encodes 1 s chunks apart
    wave = 0.3 * torch.sin(torch.arange(seconds * 16000) / 16000 * 2 * torch.pi * 440).unsqueeze(0)
    audio_latent, audio = nodes["UniFormAudioEncode"].run(
        audio_vae=audio_vae, audio={"waveform": wave.unsqueeze(0), "sample_rate": 16000}, duration=0
    )
    assert audio_latent.latent.shape == (1, 8, seconds * 25, 16) and audio["waveform"].shape[-1] == seconds * 16000
    assert torch.isfinite(audio_latent.latent).all()


def test_audio_decode_node_decodes_long_latents_in_segments(codec_nodes, monkeypatch):
    from uniform_core.codecs.audio import AudioCodec
    from uniform_core.pipeline import decode_audio

    nodes, _, audio_vae = codec_nodes
    runs = []
    decode = AudioCodec.decode
    monkeypatch.setattr(AudioCodec, "decode", lambda self, z: runs.append(z.shape[2]) or decode(self, z))
    latent = _latent("t2av", 20)
    latent = latent.with_latents(latent.video, torch.randn_like(latent.audio))
    (audio,) = nodes["UniFormAudioDecode"].run(audio_vae=audio_vae, latent=latent)
    assert audio[0]["waveform"].shape == (1, 1, 20 * 16000) and torch.isfinite(audio[0]["waveform"]).all()
    assert len(runs) > 1 and max(runs) <= 16 * 25  # no codec run longer than one 16 s segment
    short = window_latent(latent, Window(0, 2, 0))
    (audio,) = nodes["UniFormAudioDecode"].run(audio_vae=audio_vae, latent=short)
    assert torch.equal(audio[0]["waveform"][0], decode_audio(audio_vae.module, short)[0][0])
