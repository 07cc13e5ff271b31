"""The trainer on tiny models: it learns, it draws tasks and caption drops as the paper says, the conditioning
modality gets no loss, resume repeats the loss curve, two CPU processes train together, the latent cache is used,
and the codec stages and recipe files behave."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from accelerate import debug_launcher
from accelerate.state import AcceleratorState
from smallest_recipe import smallest_recipe, write_recipe

from uniform_core.codecs.audio import AudioCodec, AudioVAE, Vocoder
from uniform_core.codecs.text import TextEncoder
from uniform_core.codecs.video_vae import VideoVAE
from uniform_core.diffusion.schedule import NoiseSchedule
from uniform_core.errors import InputError
from uniform_core.model.uniform_dit import UniFormDiT
from uniform_core.tasks import TASKS
from uniform_core.train import codec_training, vocoder_training
from uniform_core.train.config import DataConfig, DiTTrainConfig, config_from_dict, load_config
from uniform_core.train.latent_cache import LatentCache, build_latent_cache, load_or_build
from uniform_core.train.log import read_log
from uniform_core.train.recipe import make_accelerator, resolve_run
from uniform_core.train.trainer import CaptionDropDiT, DiTTrainer, StepDraws, diffusion_loss, draw_step

REPO = Path(__file__).resolve().parents[1]
T2AV, A2V, V2A = range(3)
VIDEO_SHAPE, AUDIO_SHAPE = (4, 5, 4, 4), (8, 25, 16)  # 1 s of a 32x32 clip


def _cache(n=8, seed=0) -> LatentCache:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, 6, dtype=torch.bool)
    mask[:, 4:] = False
    return LatentCache(
        video=torch.randn(n, *VIDEO_SHAPE, generator=g),
        audio=torch.randn(n, *AUDIO_SHAPE, generator=g),
        text=torch.randn(n, 6, 64, generator=g) * mask[..., None],
        text_mask=mask,
        seeds=torch.arange(n),
        captions=[f"clip {i}" for i in range(n)],
    )


def _draws(task: int, batch=2, t=500, drop=False) -> StepDraws:
    g = torch.Generator().manual_seed(1)
    return StepDraws(
        task=torch.full((batch,), task),
        drop_caption=torch.full((batch,), drop),
        one_token_null=torch.zeros(batch, dtype=torch.bool),
        t=torch.full((batch,), t),
        video_noise=torch.randn(batch, *VIDEO_SHAPE, generator=g),
        audio_noise=torch.randn(batch, *AUDIO_SHAPE, generator=g),
        given=torch.zeros(batch, dtype=torch.long),
    )


class Spy(torch.nn.Module):
    """Calls the DiT and keeps its inputs and (grad-retaining) outputs."""

    def __init__(self, dit):
        super().__init__()
        self.dit = dit
        self.null_caption = dit.null_caption

    def forward(self, video, audio, t, y, mask, task):
        self.inputs = {"video": video, "audio": audio, "y": y, "mask": mask}
        self.outputs = self.dit(video, audio, t, y, mask, task)
        for out in self.outputs:
            out.retain_grad()
        return self.outputs


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return UniFormDiT.from_preset("tiny")


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    dit = UniFormDiT.from_preset("tiny")
    batch = _cache(2).batch(torch.arange(2))
    draws, schedule = _draws(T2AV, t=300), NoiseSchedule()
    optimizer = torch.optim.AdamW(dit.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = diffusion_loss(CaptionDropDiT(dit), schedule, batch, draws, snr_gamma=5.0)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_task_draws_cover_all_tasks_and_caption_dropout_has_its_rate():
    cfg = DiTTrainConfig()
    draws = draw_step(4000, (1,), (1,), cfg, torch.Generator().manual_seed(0), 1000)
    counts = torch.bincount(draws.task, minlength=len(TASKS)).float() / 4000
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.03), counts
    assert abs(draws.drop_caption.float().mean().item() - 0.5) < 0.03
    assert draws.t.min() >= 0 and draws.t.max() <= 999 and draws.t.float().std() > 250
    never = draw_step(500, (1,), (1,), DiTTrainConfig(caption_dropout=0.0, task_weights=(0, 1, 0)),
                      torch.Generator().manual_seed(0), 1000)  # fmt: skip
    assert not never.drop_caption.any() and (never.task == A2V).all()


@pytest.mark.parametrize("task", [T2AV, A2V, V2A])
def test_only_the_generated_modality_is_noised_and_gets_loss(dit, task):
    batch = _cache(2).batch(torch.arange(2))
    spy = Spy(dit)
    loss = diffusion_loss(CaptionDropDiT(spy), NoiseSchedule(), batch, _draws(task), snr_gamma=5.0)["loss"]
    loss.backward()
    video_grad, audio_grad = (out.grad.abs().sum().item() for out in spy.outputs)
    video_clean = torch.equal(spy.inputs["video"], batch["video"])
    audio_clean = torch.equal(spy.inputs["audio"], batch["audio"])
    assert (video_grad > 0, audio_grad > 0) == (task != V2A, task != A2V)
    assert (video_clean, audio_clean) == (task == V2A, task == A2V)
    dit.zero_grad()


def test_dropped_captions_become_the_learned_null_caption(dit):
    batch = _cache(2).batch(torch.arange(2))
    spy = Spy(dit)
    draws = _draws(T2AV, drop=True)
    draws.drop_caption[1] = False
    draws.one_token_null[0] = True
    diffusion_loss(CaptionDropDiT(spy), NoiseSchedule(), batch, draws, snr_gamma=None)
    y, mask = spy.inputs["y"], spy.inputs["mask"]
    assert torch.equal(y[0], dit.null_caption(1, 6)[0]) and mask[0].tolist() == [True] + [False] * 5
    assert torch.equal(y[1], batch["y"][1]) and torch.equal(mask[1], batch["mask"][1])
    draws.one_token_null[0] = False
    diffusion_loss(CaptionDropDiT(spy), NoiseSchedule(), batch, draws, snr_gamma=None)
    assert torch.equal(spy.inputs["mask"][0], batch["mask"][0])  # the CFG form keeps the prompt's mask


def _trainer(run_dir, cfg, cache, seed=0):
    return DiTTrainer(cfg, cache, run_dir, make_accelerator(cpu=True), seed=seed)


def test_resume_gives_the_same_loss_curve_as_an_uninterrupted_run(tmp_path):
    cfg = DiTTrainConfig(
        steps=4, batch_size=4, lr=1e-3, warmup_steps=2, checkpoint_every=2, log_every=1, keep_checkpoints=1
    )
    cache = _cache(8)
    whole = _trainer(tmp_path / "whole", cfg, cache)
    whole.train()
    first = _trainer(tmp_path / "split", cfg, cache)
    first.train(steps=2)
    resumed = _trainer(tmp_path / "split", cfg, cache)
    resumed.load_checkpoint(tmp_path / "split" / "checkpoints" / "step_000002")
    resumed.train()
    curve = [(e["step"], e["loss"], e["lr"]) for e in read_log(tmp_path / "whole" / "train_log.jsonl")]
    assert [s for s, _, _ in curve] == [1, 2, 3, 4]
    assert [(e["step"], e["loss"], e["lr"]) for e in read_log(tmp_path / "split" / "train_log.jsonl")] == curve
    for a, b in zip(whole.ema_dit().state_dict().values(), resumed.ema_dit().state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len(list((tmp_path / "whole" / "checkpoints").glob("step_*"))) == cfg.keep_checkpoints


def _two_process_run(run_dir):
    AcceleratorState._reset_state(reset_partial_state=True)  # forget the parent's one-process state
    cache = _cache(8)
    cfg = DiTTrainConfig(steps=2, batch_size=4, warmup_steps=1, checkpoint_every=2, log_every=1)
    trainer = DiTTrainer(cfg, cache, run_dir, make_accelerator(cpu=True), seed=0)
    rank = trainer.accelerator.process_index
    rows = torch.cat([trainer.batch_indices(s) for s in range(2)])
    trainer.train()
    params = torch.cat([p.detach().flatten() for p in trainer.accelerator.unwrap_model(trainer.model).parameters()])
    torch.save({"world": trainer.accelerator.num_processes, "rows": rows, "params": params},
               Path(run_dir) / f"rank{rank}.pt")  # fmt: skip


@pytest.mark.skipif(
    os.environ.get("OMP_NUM_THREADS") != "1",
    reason="debug_launcher forks, and a child of a process with a multi-threaded OpenMP pool can hang: "
    "run with OMP_NUM_THREADS=1 (the README's test command and CI do)",
)
def test_two_cpu_processes_train_one_model_through_accelerate(tmp_path):
    debug_launcher(_two_process_run, args=(str(tmp_path),), num_processes=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert not set(ranks[0]["rows"].tolist()) & set(ranks[1]["rows"].tolist())  # each process its own share
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])  # gradients were averaged: one model
    assert [e["step"] for e in read_log(tmp_path / "train_log.jsonl")] == [1, 2]
    assert (tmp_path / "checkpoints" / "step_000002" / "trainer_state.json").is_file()


class Counting:
    """Counts calls of an encoder method."""

    def __init__(self, monkeypatch, cls, name="encode"):
        self.calls, original = 0, getattr(cls, name)

        def counted(module, *args, **kwargs):
            self.calls += 1
            return original(module, *args, **kwargs)

        monkeypatch.setattr(cls, name, counted)


def test_latents_are_encoded_once_per_clip_and_never_during_training(tmp_path, monkeypatch):
    torch.manual_seed(0)
    video_vae, text = VideoVAE.from_preset("tiny").eval(), TextEncoder.from_preset("tiny")
    codec = AudioCodec(AudioVAE.from_preset("tiny"), Vocoder.from_preset("tiny")).eval()
    counters = [Counting(monkeypatch, cls) for cls in (VideoVAE, AudioCodec, TextEncoder)]
    data = DataConfig(num_clips=4, seconds=2, size=64)
    path = tmp_path / "latents.safetensors"
    cache = load_or_build(path, data, video_vae, codec, text, max_text_tokens=64, chunk=2)
    assert [c.calls for c in counters] == [2, 2, 2]  # 4 clips, 2 per call
    assert cache.video.shape == (4, 4, 10, 8, 8) and cache.audio.shape == (4, 8, 50, 16)
    assert cache.text.shape[0] == 4 and cache.text_mask[:, 0].all() and len(set(cache.captions)) > 1
    again = load_or_build(path, data, video_vae, codec, text, max_text_tokens=64, chunk=2)
    assert [c.calls for c in counters] == [2, 2, 2] and torch.equal(again.video, cache.video)

    def refuse(*args, **kwargs):
        raise AssertionError("an encoder ran during DiT training")

    for cls in (VideoVAE, AudioCodec, TextEncoder):
        monkeypatch.setattr(cls, "encode", refuse)
    cfg = DiTTrainConfig(steps=2, batch_size=2, warmup_steps=1, checkpoint_every=2, log_every=1)
    assert _trainer(tmp_path / "run", cfg, LatentCache.load(path)).train() == 2


def test_a_cache_for_other_encoders_is_rebuilt(tmp_path):
    torch.manual_seed(0)
    video_vae, text = VideoVAE.from_preset("tiny").eval(), TextEncoder.from_preset("tiny")
    codec = AudioCodec(AudioVAE.from_preset("tiny"), Vocoder.from_preset("tiny")).eval()
    data = DataConfig(num_clips=2, seconds=2, size=64)
    path = tmp_path / "latents.safetensors"
    old = load_or_build(path, data, video_vae, codec, text, max_text_tokens=64)
    with torch.no_grad():
        next(video_vae.parameters()).add_(0.1)
    new = load_or_build(path, data, video_vae, codec, text, max_text_tokens=64)
    assert new.fingerprint != old.fingerprint and not torch.equal(new.video, old.video)
    assert torch.equal(build_latent_cache(data, video_vae, codec, text, 64).video, new.video)


def test_codec_stages_train_and_set_latent_scales():
    pool = codec_training.ClipPool(DataConfig(num_clips=2, seconds=2, size=64), 2)
    acc = make_accelerator(cpu=True)
    log = codec_training.LossLog(os.devnull, acc)
    log.enabled = False
    cfg = config_from_dict({"audio_vae": {"steps": 2, "batch_size": 2}}).audio_vae
    vae = codec_training.train_audio_vae(pool, cfg, acc, log, seed=0)
    with torch.no_grad():
        z = AudioCodec(vae, Vocoder.from_preset("tiny")).encode(pool.waveforms, deterministic=True)
    assert abs(z.std().item() - 1.0) < 0.2  # scaled to unit variance on the clips it was measured on
    wave = pool.waveforms[:, :4096]
    assert vocoder_training.stft_loss(wave, wave).item() < 1e-4 < vocoder_training.stft_loss(wave * 0.5, wave).item()


def test_the_documented_recipe_loads_and_bad_recipes_say_what_is_wrong(tmp_path):
    cfg = load_config(REPO / "configs" / "uniform-tiny.json")
    assert (cfg.name, cfg.data.size, cfg.data.seconds, cfg.dit.caption_dropout) == ("uniform-tiny", 64, 2, 0.3)
    with pytest.raises(InputError, match="stepz"):
        config_from_dict({"dit": {"stepz": 3}})
    with pytest.raises(InputError, match="caption_dropout"):
        config_from_dict({"dit": {"caption_dropout": 2}})
    assert (cfg.video_vae.kl_weight, cfg.video_vae.stage2_kl_weight) == (1e-6, 1e-3)
    for bad in (-1e-3, float("nan"), "1e-3", True):
        with pytest.raises(InputError, match=r"video_vae\.stage2_kl_weight must be a (finite )?number >= 0"):
            config_from_dict({"video_vae": {"stage2_kl_weight": bad}})
    with pytest.raises(InputError, match=r"audio_vae\.kl_weight must be a finite number >= 0; got None"):
        config_from_dict({"audio_vae": {"kl_weight": None}})
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg.to_dict()))
    with pytest.raises(InputError, match="--resume"):
        resolve_run(cfg, tmp_path / "old", None)
    assert resolve_run(cfg, None, tmp_path / "old") == (tmp_path / "old", None)


def test_a_folder_of_captioned_videos_is_a_training_set(tmp_path):
    from uniform_core.train.data import clip_source
    from uniform_core.train.synthetic import SyntheticSpec, make_clip, write_dataset

    write_dataset(tmp_path, [3, 4], SyntheticSpec())
    count, get = clip_source(DataConfig(folder=str(tmp_path), seconds=2, size=48))
    clip = get(1)
    assert count == 2 and clip.caption == make_clip(4).caption
    assert clip.frames.shape == (34, 48, 48, 3) and clip.waveform.shape == (32000,)
    (tmp_path / "000004.json").unlink()
    with pytest.raises(InputError, match="000004.mp4.*no caption"):
        get(1)


def test_the_train_command_writes_a_bundle_that_loads_with_the_recipe_s_sampling(tmp_path, capsys):
    """`uniform-av train` end to end on a few clips and steps: codecs, cache, DiT, then a bundle folder that
    load_bundle reads, carrying the recipe's sampler and CFG scale in its bundle.json."""
    from uniform_core.bundle import load_bundle
    from uniform_core.cli import main

    config = write_recipe(
        tmp_path,
        smallest_recipe(
            name="smoke", sampler="ddim", cfg={"t2av": 2.0, "a2v": 1.0, "v2a": 1.5}, dit={"high_noise_weight": 50.0}
        ),
    )
    assert main(["train", "--config", config, "--out", str(tmp_path / "run")]) == 0
    bundle = load_bundle(tmp_path / "run" / "bundle")
    assert (bundle.name, bundle.duration, bundle.height, bundle.sampler) == ("smoke", 2, 64, "ddim")
    assert [bundle.cfg_for(task) for task in ("t2av", "a2v", "v2a")] == [2.0, 1.0, 1.5]
    assert [r["step"] for r in read_log(tmp_path / "run" / "train_log.jsonl") if r["stage"] == "dit"][-1] == 2
    with pytest.raises(InputError, match="sampler must be one of"):
        config_from_dict({"sampler": "plms"})
    with pytest.raises(InputError, match=r"cfg must be a number >= 0 or a mapping of each task \(t2av, a2v, v2a\)"):
        config_from_dict({"cfg": {"t2av": 2.0}})


def test_the_codec_stages_run_alone_and_the_dit_then_trains_on_them(tmp_path, capsys):
    """`--stage codecs` writes the codecs and nothing of the DiT; `--resume` then trains the DiT on those very files
    (they are reused, not retrained), so each stage runs on its own from the stages before it."""
    from uniform_core.cli import main

    run, config = tmp_path / "run", write_recipe(tmp_path, smallest_recipe())
    assert main(["train", "--config", config, "--out", str(run), "--stage", "codecs"]) == 0
    assert f"wrote {run / 'codecs'}" in capsys.readouterr().out
    codecs = {p.name: p.read_bytes() for p in (run / "codecs").glob("*.safetensors")}
    assert set(codecs) == {"video_vae.safetensors", "audio_vae.safetensors", "vocoder.safetensors",
                           "text_encoder.safetensors"}  # fmt: skip
    assert not (run / "checkpoints").exists() and not (run / "latents.safetensors").exists()
    assert main(["train", "--config", config, "--resume", str(run)]) == 0
    assert {p.name: p.read_bytes() for p in (run / "codecs").glob("*.safetensors")} == codecs
    assert [r["step"] for r in read_log(run / "train_log.jsonl", "dit")][-1] == 2
    assert (run / "bundle" / "dit.safetensors").is_file()
    capsys.readouterr()
    assert main(["train", "--config", config, "--out", str(tmp_path / "other"), "--stage", "dit"]) != 0
    assert "--stage must be one of all, codecs, extract; got 'dit'" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()  # refused before anything is written
