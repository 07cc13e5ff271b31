"""The trained continuation task ("continue", the 4th task token of a DiT with num_tasks 4): its training draws and
loss masks, a 4-task DiT that trains and saves, checkpoints that load into the config they were written with, clear
errors for a 3-task model and for recipes that do not fit, and long T2AV sampling that uses the token after the first
window while a 3-task model samples as it always did. Tiny models on the CPU, built here."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from uniform_core.bundle import random_tiny_bundle
from uniform_core.checkpoint import load_matching
from uniform_core.diffusion.continuation import continuation_keep_mask, continuation_task
from uniform_core.diffusion.schedule import NoiseSchedule
from uniform_core.errors import CheckpointError, InputError
from uniform_core.long import sample_long
from uniform_core.long.windows import default_given
from uniform_core.model import PRESETS, UniFormDiT
from uniform_core.pipeline import encode_text, make_task_latent
from uniform_core.tasks import MODEL_TASKS, TASKS, model_task_index
from uniform_core.train.config import DiTTrainConfig, config_from_dict, load_config
from uniform_core.train.latent_cache import LatentCache
from uniform_core.train.multitask_loss import CaptionDropDiT, diffusion_loss, draw_step, generated_masks
from uniform_core.train.recipe import make_accelerator
from uniform_core.train.trainer import DiTTrainer

REPO = Path(__file__).resolve().parents[1]
CONTINUE = MODEL_TASKS.index("continue")
FOUR = DiTTrainConfig(num_tasks=4, task_weights=(1.0, 1.0, 1.0, 1.0))
VIDEO_SHAPE, AUDIO_SHAPE = (4, 10, 4, 4), (8, 50, 16)  # 2 s of a 32x32 clip: F = 10 latent frames
VIDEO_PER_FRAME, AUDIO_PER_FRAME = 4 * 4 * 4, 8 * 5 * 16  # entries of one latent frame in each modality


def _four_task_dit(seed=0) -> UniFormDiT:
    torch.manual_seed(seed)
    return UniFormDiT(dataclasses.replace(PRESETS["tiny"], num_tasks=4))


def _cache(n=4, seed=0) -> LatentCache:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, 6, dtype=torch.bool)
    return LatentCache(
        video=torch.randn(n, *VIDEO_SHAPE, generator=g),
        audio=torch.randn(n, *AUDIO_SHAPE, generator=g),
        text=torch.randn(n, 6, 64, generator=g),
        text_mask=mask,
        seeds=torch.arange(n),
        captions=[f"clip {i}" for i in range(n)],
    )


# ---- draws and masks --------------------------------------------------------------------------------------------


def test_continue_items_draw_k_in_1_to_f_minus_1_and_others_none():
    draws = draw_step(2000, (1, 10, 1, 1), (1, 50, 1), FOUR, torch.Generator().manual_seed(0), 1000)
    share = torch.bincount(draws.task, minlength=4).float() / 2000
    assert torch.allclose(share, torch.full((4,), 0.25), atol=0.04), share
    cont = draws.task == CONTINUE
    assert (draws.given[~cont] == 0).all()
    k = draws.given[cont]
    assert k.min() == 1 and k.max() == 9 and set(k.tolist()) == set(range(1, 10))
    counts = torch.bincount(k, minlength=10)[1:].float()
    assert counts.min() > 0.6 * counts.mean(), counts  # uniform over 1..9 (about 55 each)
    three = draw_step(500, (1, 10, 1, 1), (1, 50, 1), DiTTrainConfig(), torch.Generator().manual_seed(0), 1000)
    assert (three.given == 0).all() and three.task.max() < 3


def test_a_continue_items_given_frames_have_zero_weight_over_many_draws():
    video, audio = torch.zeros(1, *VIDEO_SHAPE), torch.zeros(1, *AUDIO_SHAPE)
    draws = draw_step(300, VIDEO_SHAPE, AUDIO_SHAPE, FOUR, torch.Generator().manual_seed(3), 1000)
    masks = generated_masks(draws.task, video.expand(300, -1, -1, -1, -1), audio.expand(300, -1, -1, -1), draws.given)
    per_frame = VIDEO_PER_FRAME + AUDIO_PER_FRAME
    for b in range(300):
        task, k, mask = draws.task[b].item(), draws.given[b].item(), masks[b]
        if task != CONTINUE:
            assert torch.equal(mask, generated_masks(draws.task[b : b + 1], video, audio)[0])
            continue
        kept = continuation_keep_mask("t2av", VIDEO_SHAPE, AUDIO_SHAPE, k)
        assert (mask[kept] == 0).all() and (mask[~kept] == 1).all() and (mask == 0).sum() == k * per_frame
        v, a = mask[: math.prod(VIDEO_SHAPE)].view(VIDEO_SHAPE), mask[math.prod(VIDEO_SHAPE) :].view(AUDIO_SHAPE)
        assert (
            (v[:, :k] == 0).all()
            and (v[:, k:] == 1).all()
            and (a[:, : 5 * k] == 0).all()
            and (a[:, 5 * k :] == 1).all()
        )


class Spy(torch.nn.Module):
    """Calls the DiT and keeps its inputs and (grad-retaining) outputs."""

    def __init__(self, dit):
        super().__init__()
        self.dit = dit
        self.null_caption = dit.null_caption

    def forward(self, video, audio, t, y, mask, task):
        self.inputs = {"video": video, "audio": audio, "task": task}
        self.outputs = self.dit(video, audio, t, y, mask, task)
        for out in self.outputs:
            out.retain_grad()
        return self.outputs


def test_a_continue_items_given_frames_enter_clean_and_get_no_loss_the_rest_is_t2av():
    dit, batch = _four_task_dit(), _cache(2).batch(torch.arange(2))
    draws = draw_step(2, VIDEO_SHAPE, AUDIO_SHAPE, FOUR, torch.Generator().manual_seed(0), 1000)
    draws.task[:], draws.given[:], draws.t[:] = CONTINUE, torch.tensor([3, 7]), 600
    spy = Spy(dit)
    diffusion_loss(CaptionDropDiT(spy), NoiseSchedule(), batch, draws, snr_gamma=5.0)["loss"].backward()
    assert spy.inputs["task"].tolist() == [CONTINUE, CONTINUE]
    video_grad, audio_grad = (out.grad for out in spy.outputs)
    for b, k in enumerate((3, 7)):
        shown_v, shown_a = spy.inputs["video"][b], spy.inputs["audio"][b]
        assert torch.equal(shown_v[:, :k], batch["video"][b, :, :k])  # noise 0 on the given frames
        assert torch.equal(shown_a[:, : 5 * k], batch["audio"][b, :, : 5 * k])
        assert not torch.isclose(shown_v[:, k:], batch["video"][b, :, k:]).any()  # noised on the rest
        assert not torch.isclose(shown_a[:, 5 * k :], batch["audio"][b, :, 5 * k :]).any()
        assert (video_grad[b, :, :k] == 0).all() and (audio_grad[b, :, : 5 * k] == 0).all()  # no loss there
        assert (video_grad[b, :4, k:] != 0).all() and (audio_grad[b, :8, 5 * k :] != 0).all()  # eps loss elsewhere


# ---- a 4-task DiT trains, saves and loads; 3-task models and recipes get clear errors ---------------------------


def test_a_few_continue_steps_lower_the_loss_on_a_fixed_batch():
    dit, batch = _four_task_dit(), _cache(2).batch(torch.arange(2))
    draws = draw_step(2, VIDEO_SHAPE, AUDIO_SHAPE, FOUR, torch.Generator().manual_seed(0), 1000)
    draws.task[:], draws.given[:], draws.t[:] = CONTINUE, torch.tensor([3, 7]), 300
    optimizer = torch.optim.AdamW(dit.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = diffusion_loss(CaptionDropDiT(dit), NoiseSchedule(), batch, draws, snr_gamma=5.0)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_a_4_task_tiny_dit_trains_and_its_checkpoint_loads_as_4_tasks(tmp_path):
    cfg = DiTTrainConfig(
        steps=3, batch_size=2, lr=1e-3, warmup_steps=1, checkpoint_every=3, log_every=1, num_tasks=4,
        task_weights=(0.0, 0.0, 0.0, 1.0),
    )  # fmt: skip
    trainer = DiTTrainer(cfg, _cache(4), tmp_path / "run", make_accelerator(cpu=True), seed=0)
    assert trainer.dit.task_embedding.weight.shape == (4, 128)
    before = trainer.dit.task_embedding.weight[CONTINUE].detach().clone()
    losses = [trainer.train_step()["loss"] for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    assert not torch.equal(trainer.dit.task_embedding.weight[CONTINUE], before)  # the continue token learned
    folder = trainer.save_checkpoint()
    loaded = UniFormDiT.load(folder / "model.safetensors")
    assert loaded.config.num_tasks == 4 and torch.equal(
        loaded.task_embedding.weight, trainer.dit.task_embedding.weight
    )
    three = DiTTrainer(DiTTrainConfig(steps=3, batch_size=2, warmup_steps=1), _cache(4), tmp_path / "r3",
                       make_accelerator(cpu=True), seed=0)  # fmt: skip
    with pytest.raises(
        CheckpointError, match=r"mis-shaped keys: task_embedding\.weight: file \(4, 128\) vs model \(3"
    ):
        three.load_checkpoint(folder)  # a run resumes only into the task count it was trained with


def test_3_and_4_task_checkpoints_load_into_their_own_config_and_the_shipped_bundle_has_3(tmp_path):
    torch.manual_seed(0)
    three, four = UniFormDiT.from_preset("tiny"), _four_task_dit()
    three.save(tmp_path / "three.safetensors")
    four.save(tmp_path / "four.safetensors")
    assert UniFormDiT.load(tmp_path / "three.safetensors").config.num_tasks == 3
    assert UniFormDiT.load(tmp_path / "four.safetensors").config.num_tasks == 4
    with pytest.raises(CheckpointError, match=r"task_embedding\.weight: file \(4, 128\) vs model \(3, 128\)"):
        load_matching(three, four.state_dict(), "four")
    shipped = UniFormDiT.load(REPO / "uniform_core" / "assets" / "uniform-tiny" / "dit.safetensors")
    assert shipped.config.num_tasks == 3 and shipped.task_embedding.weight.shape[0] == 3
    assert default_given(shipped, "t2av") == "clean-video"
    with pytest.raises(InputError, match="num_tasks must be 3"):
        dataclasses.replace(PRESETS["tiny"], num_tasks=5)  # the model's own config refuses it too


def test_a_3_task_model_has_no_continue_token():
    torch.manual_seed(0)
    dit = UniFormDiT.from_preset("tiny").eval()
    x = dict(video=torch.randn(1, 4, 5, 2, 2), audio=torch.randn(1, 8, 25, 16), timestep=torch.tensor([500.0]),
             y=torch.randn(1, 3, 64))  # fmt: skip
    with pytest.raises(InputError, match=r"3 task tokens \(t2av, a2v, v2a\) and no 'continue' token.*num_tasks 4"):
        dit(**x, task="continue")
    with pytest.raises(InputError, match=r"indices 0..2 .*this DiT has 3 task tokens"):
        dit(**x, task=torch.tensor([CONTINUE]))
    with pytest.raises(InputError, match="no 'continue' token"):
        model_task_index("continue", 3)
    four = _four_task_dit().eval()
    with torch.no_grad():
        by_name, by_index = four(**x, task="continue"), four(**x, task=torch.tensor([3]))
    assert all(torch.equal(a, b) for a, b in zip(by_name, by_index, strict=True))
    assert model_task_index("continue") == 3 and TASKS == ("t2av", "a2v", "v2a")  # users still choose from three


def test_recipes_with_a_4th_weight_need_4_tasks_and_the_documented_one_has_them():
    with pytest.raises(InputError, match=r"4th weight, for 'continue', needs dit.num_tasks 4"):
        DiTTrainConfig(task_weights=(1.0, 1.0, 1.0, 0.5))
    with pytest.raises(InputError, match="needs dit.num_tasks 4"):
        config_from_dict({"dit": {"task_weights": [1, 1, 1, 1]}})
    with pytest.raises(InputError, match=r"must be 4 weights >= 0 for \('t2av', 'a2v', 'v2a', 'continue'\)"):
        config_from_dict({"dit": {"num_tasks": 4, "task_weights": [1, 1, 1]}})
    with pytest.raises(InputError, match=r"task_weights\[3\] \('continue'\) must be > 0"):
        config_from_dict({"dit": {"num_tasks": 4, "task_weights": [1, 1, 1, 0]}})
    with pytest.raises(InputError, match=r"dit.task_weights \(a2v\) must be a number >= 0.0"):
        config_from_dict({"dit": {"task_weights": [1, -1, 1]}})
    for bad in (5, 2, 4.0, "4"):
        with pytest.raises(
            InputError, match=r"dit.num_tasks \(3: t2av, a2v, v2a; 4: also .* must be an integer from 3 to 4"
        ):
            DiTTrainConfig(num_tasks=bad, task_weights=(1.0,) * 4)
    recipe = load_config(REPO / "configs" / "uniform-tiny.json").dit
    assert (recipe.num_tasks, recipe.task_weights) == (4, (1.2, 0.8, 1.0, 0.4))
    assert recipe.model_config.num_tasks == 4


# ---- sampling ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles():
    """A random 3-task tiny bundle and the same bundle with a 4-task DiT whose first three task rows and every
    other weight are the 3-task DiT's."""
    three = random_tiny_bundle(seed=0)
    four = _four_task_dit(seed=1).eval()
    state = three.dit.state_dict()
    state["task_embedding.weight"] = torch.cat([state["task_embedding.weight"], four.task_embedding.weight[3:]])
    four.load_state_dict(state)
    return three, dataclasses.replace(three, dit=four)


def _tasks_seen(dit, run):
    """(result of run(), the task tensor of every DiT call)."""
    seen = []
    handle = dit.register_forward_pre_hook(lambda _m, args: seen.append(args[5].clone()))
    try:
        return run(), seen
    finally:
        handle.remove()


def test_long_t2av_on_a_4_task_model_uses_the_continue_token_after_the_first_window(bundles):
    _, four = bundles
    text = encode_text(four.text_encoder, "a red ball bounces")
    latent = make_task_latent("t2av", 3, 32, 32, max_seconds=3600)
    kw = dict(seed=5, steps=2, cfg=2.0, sampler="ddim", window=2, overlap=1)
    out, seen = _tasks_seen(four.dit, lambda: sample_long(four.dit, latent, text, **kw).latent)
    assert [t.unique().tolist() for t in seen] == [[0], [0], [CONTINUE], [CONTINUE]]  # cond + uncond in each call
    shown = []
    handle = four.dit.register_forward_pre_hook(lambda _m, args: shown.append((args[0][:1], args[1][:1])))
    try:
        sample_long(four.dit, latent, text, **kw)
    finally:
        handle.remove()
    for video, audio in shown[2:]:  # the second window (seconds 1-3) sees its given second clean, as trained
        assert torch.equal(video[:, :, :5], out.video[:, :, 5:10]) and torch.equal(
            audio[:, :, :25], out.audio[:, :, 25:50]
        )
    for task, token in (("a2v", 1), ("v2a", 2)):  # A2V/V2A windows keep their own token
        cond = dataclasses.replace(
            latent, task=task, video=torch.randn_like(latent.video), audio=torch.randn_like(latent.audio)
        )
        run = lambda c=cond: sample_long(four.dit, c, None, steps=1, sampler="ddim", cfg_condition=1.0)  # noqa: E731
        _, seen = _tasks_seen(four.dit, run)  # (V2A's condition guidance would add a T2AV pass)
        assert {v for t in seen for v in t.tolist()} == {token}
    assert continuation_task("t2av", 4, 5, ("audio",)) == "t2av" and continuation_task("t2av", 4, 0) == "t2av"


def test_a_3_task_model_samples_long_clips_bit_for_bit_as_before(bundles):
    three, four = bundles
    text = encode_text(three.text_encoder, "a red ball bounces")
    latent = make_task_latent("t2av", 3, 32, 32, max_seconds=3600)
    kw = dict(seed=5, steps=2, cfg=2.0, sampler="ddim", window=2, overlap=1)
    default, seen = _tasks_seen(three.dit, lambda: sample_long(three.dit, latent, text, **kw).latent)
    assert {v for t in seen for v in t.tolist()} == {0}
    # the training-free default of a 3-task model, spelled out; and the 4-task model run training-free on the same
    # three task rows: both the same bits
    explicit = sample_long(three.dit, latent, text, **kw, given="clean-video").latent
    training_free = sample_long(four.dit, latent, text, **kw, given="clean-video").latent
    for other in (explicit, training_free):
        assert torch.equal(default.video, other.video) and torch.equal(default.audio, other.audio)
    trained = sample_long(four.dit, latent, text, **kw).latent
    assert torch.equal(trained.video[:, :, :10], default.video[:, :, :10])  # the first window is the native clip
    assert not torch.equal(trained.video[:, :, 10:], default.video[:, :, 10:])  # the rest: the continue token
