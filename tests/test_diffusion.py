"""Noise schedule and training loss, task latents, and classifier-free guidance around a DiT."""

import math

import pytest
import torch
from torch import nn

from uniform_core.diffusion import (
    NoiseSchedule,
    TaskLatent,
    cfg_combine,
    keep_mask,
    make_model_fn,
    pack,
    sample,
    unpack,
)
from uniform_core.errors import InputError
from uniform_core.tasks import TASKS

SCHEDULE = NoiseSchedule()
VIDEO = (4, 2, 4, 4)
AUDIO = (8, 10, 4)


# ---- schedule ----------------------------------------------------------------------------------------------------


def test_schedule_tables():
    s = SCHEDULE
    assert s.betas.dtype == torch.float64 and len(s.betas) == 1000
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(s.alphas_cumprod[10], torch.prod(1 - s.betas[:11]))
    t = torch.tensor([0, 1, 500, 999])
    snr = s.snr(t)
    assert snr.shape == (4,) and bool((snr[:-1] > snr[1:]).all())
    assert snr[2].item() == pytest.approx((s.alphas_cumprod[500] / (1 - s.alphas_cumprod[500])).item(), rel=1e-6)


def test_q_sample_and_the_kept_entries():
    x0, noise = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    t = torch.tensor([3, 900])
    x_t = SCHEDULE.q_sample(x0, t, noise)
    a = SCHEDULE.alphas_cumprod[t].float().view(2, 1, 1)
    assert torch.allclose(x_t, a.sqrt() * x0 + (1 - a).sqrt() * noise, atol=1e-6)
    generated = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1)
    masked = SCHEDULE.q_sample(x0, t, noise, generated_mask=generated)
    assert torch.equal(masked[:, 1], x0[:, 1]) and torch.equal(masked[:, [0, 2]], x_t[:, [0, 2]])


def _loss_inputs(batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0, noise = torch.randn(batch, 6, generator=g), torch.randn(batch, 6, generator=g)
    t = torch.tensor([0, 5, 400, 999][:batch])
    x_t = SCHEDULE.q_sample(x0, t, noise)
    eps = (noise + 0.3 * torch.randn(batch, 6, generator=g)).requires_grad_()
    var = (0.5 * torch.randn(batch, 6, generator=g)).requires_grad_()
    generated = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # the first three entries are generated
    return eps, var, x0, x_t, t, noise, generated


def test_training_loss_only_sees_the_generated_entries():
    eps, var, x0, x_t, t, noise, generated = _loss_inputs()
    out = SCHEDULE.training_loss(eps, var, x0, x_t, t, noise, generated)
    assert set(out) == {"loss", "mse", "vb"} and all(v.ndim == 0 and torch.isfinite(v) for v in out.values())
    expected_mse = ((eps - noise) ** 2)[:, :3].mean()
    assert out["mse"].item() == pytest.approx(expected_mse.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx((out["mse"] + out["vb"]).item(), rel=1e-6)

    out["loss"].backward()
    assert bool((eps.grad[:, 3:] == 0).all()) and bool((eps.grad[:, :3] != 0).all())
    assert bool((var.grad[:, 3:] == 0).all()) and bool((var.grad[:, :3] != 0).all())

    # changing the prediction on the conditioning entries changes nothing
    eps2 = eps.detach().clone()
    eps2[:, 3:] += 5.0
    var2 = var.detach().clone()
    var2[:, 3:] = -var2[:, 3:]
    again = SCHEDULE.training_loss(eps2, var2, x0, x_t, t, noise, generated)
    assert again["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)


def test_vb_term_trains_only_the_variance():
    eps, var, x0, x_t, t, noise, generated = _loss_inputs()
    vb = SCHEDULE.training_loss(eps, var, x0, x_t, t, noise, generated)["vb"]
    assert torch.isfinite(vb)
    eps_grad, var_grad = torch.autograd.grad(vb, [eps, var], allow_unused=True)
    assert eps_grad is None or bool((eps_grad == 0).all())  # the mean is detached in the vb term
    assert var_grad.abs().sum() > 0


def test_vb_term_learns_the_true_reverse_variance():
    """Gaussian data and the exact noise predictor: minimising vb drives v to the true Var(x_{t-1} | x_t)."""
    mu, s, step = 0.2, 0.01, 1
    abar, abar_prev, beta = (
        SCHEDULE.alphas_cumprod[step].item(),
        SCHEDULE.alphas_cumprod[step - 1].item(),
        SCHEDULE.betas[step].item(),
    )
    btilde = beta * (1 - abar_prev) / (1 - abar)
    c1 = math.sqrt(abar_prev) * beta / (1 - abar)
    var_x0 = s * s * (1 - abar) / (abar * s * s + 1 - abar)
    target = btilde + c1 * c1 * var_x0
    v_star = 2 * math.log(target / btilde) / math.log(beta / btilde) - 1
    assert -0.8 < v_star < 0.8  # an interior optimum, so the test can tell

    g = torch.Generator().manual_seed(0)
    x0 = mu + s * torch.randn(1, 8192, generator=g, dtype=torch.float64)
    noise = torch.randn(1, 8192, generator=g, dtype=torch.float64)
    t = torch.tensor([step])
    x_t = SCHEDULE.q_sample(x0, t, noise)
    eps = math.sqrt(1 - abar) * (x_t - math.sqrt(abar) * mu) / (abar * s * s + 1 - abar)
    v = torch.tensor(0.9, requires_grad=True)
    opt = torch.optim.Adam([v], lr=0.05)
    first = None
    for _ in range(300):
        vb = SCHEDULE.training_loss(eps, v.expand_as(x0), x0, x_t, t, noise, torch.ones(1))["vb"]
        first = vb.item() if first is None else first
        opt.zero_grad()
        vb.backward()
        opt.step()
    assert vb.item() < first and abs(v.item() - v_star) < 0.1


def test_min_snr_weighting():
    eps, var, x0, x_t, t, noise, generated = _loss_inputs()
    plain = SCHEDULE.training_loss(eps, var, x0, x_t, t, noise, generated)
    weighted = SCHEDULE.training_loss(eps, var, x0, x_t, t, noise, generated, snr_gamma=5.0)
    snr = SCHEDULE.snr(t)
    per_item_mse = ((eps - noise) ** 2)[:, :3].mean(1)
    expected = (torch.clamp(snr, max=5.0) / snr * per_item_mse).mean() + plain["vb"]
    assert weighted["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert weighted["loss"] < plain["loss"]  # low-t items (SNR >> 5) are down-weighted
    assert weighted["mse"].item() == pytest.approx(plain["mse"].item())


def test_high_noise_weight_turns_the_noisy_items_into_a_capped_x0_loss():
    eps, var, x0, x_t, t, noise, generated = _loss_inputs()  # t = 0, 5 (SNR >> 1), 400 (SNR ~ 0.24), 999
    base = SCHEDULE.training_loss(eps, var, x0, x_t, t, noise, generated, snr_gamma=5.0)
    out = SCHEDULE.training_loss(eps, var, x0, x_t, t, noise, generated, snr_gamma=5.0, high_noise_weight=50.0)
    snr = SCHEDULE.snr(t)
    assert snr[2] < 1 < snr[1] and 1 / snr[3] > 50
    per_item_mse = ((eps - noise) ** 2)[:, :3].mean(1)
    weight = torch.tensor([5.0 / snr[0].item(), 5.0 / snr[1].item(), 1 / snr[2].item(), 50.0])
    expected = (weight * per_item_mse).mean() + base["vb"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["mse"].item() == pytest.approx(base["mse"].item()) and out["vb"].item() == pytest.approx(
        base["vb"].item()
    )
    # in x0 terms the weight at t = 400 is 1: the eps error there counts like the x0 error it implies
    x0_error = (
        (x_t - (1 - SCHEDULE.alphas_cumprod[400]).sqrt() * eps) / SCHEDULE.alphas_cumprod[400].sqrt() - x0
    ) ** 2
    assert x0_error[2, :3].mean().item() == pytest.approx(weight[2].item() * per_item_mse[2].item(), rel=1e-4)
    with pytest.raises(InputError, match="high_noise_weight"):
        SCHEDULE.training_loss(eps, var, x0, x_t, t, noise, generated, high_noise_weight=0.5)


def test_training_loss_bad_inputs():
    eps, var, x0, x_t, t, noise, generated = _loss_inputs()
    with pytest.raises(InputError, match="model_var"):
        SCHEDULE.training_loss(eps, var[:, :2], x0, x_t, t, noise, generated)
    with pytest.raises(InputError, match="LongTensor"):
        SCHEDULE.training_loss(eps, var, x0, x_t, t.float(), noise, generated)
    with pytest.raises(InputError, match="generated_mask"):
        SCHEDULE.training_loss(eps, var, x0, x_t, t, noise, torch.ones(5))
    with pytest.raises(InputError, match="snr_gamma"):
        SCHEDULE.training_loss(eps, var, x0, x_t, t, noise, generated, snr_gamma=0.0)
    with pytest.raises(InputError, match="num_timesteps"):
        NoiseSchedule(num_timesteps=1)


# ---- task latents ------------------------------------------------------------------------------------------------


def _latent(task="a2v", batch=2, **kw):
    g = torch.Generator().manual_seed(5)
    fields = dict(
        task=task,
        video=torch.randn(batch, *VIDEO, generator=g),
        audio=torch.randn(batch, *AUDIO, generator=g),
        fps=17.0,
        num_frames=7,
        sample_rate=16000,
        duration=0.4,
        height=32,
        width=32,
    )
    fields.update(kw)
    return TaskLatent(**fields)


def test_pack_unpack_round_trip_and_layout():
    latent = _latent()
    x = pack(latent.video, latent.audio)
    assert x.shape == (2, math.prod(VIDEO) + math.prod(AUDIO))
    assert torch.equal(x[:, : math.prod(VIDEO)], latent.video.flatten(1))  # video first
    video, audio = unpack(x, latent.video.shape, AUDIO)  # shapes with or without the batch dim
    assert torch.equal(video, latent.video) and torch.equal(audio, latent.audio)
    assert torch.equal(latent.pack(), x) and all(
        torch.equal(a, b) for a, b in zip(latent.unpack(x), (video, audio), strict=True)
    )
    with pytest.raises(InputError, match="x must be"):
        unpack(x[:, 1:], VIDEO, AUDIO)


@pytest.mark.parametrize("task", TASKS)
def test_keep_and_generated_masks(task):
    keep = keep_mask(task, VIDEO, AUDIO)
    n_video = math.prod(VIDEO)
    assert keep.dtype == torch.bool and keep.shape == (n_video + math.prod(AUDIO),)
    kept_video, kept_audio = bool(keep[:n_video].all()), bool(keep[n_video:].all())
    assert (kept_video, kept_audio) == {"t2av": (False, False), "a2v": (False, True), "v2a": (True, False)}[task]
    assert keep[:n_video].unique().numel() == 1 and keep[n_video:].unique().numel() == 1
    latent = _latent(task)
    video_mask, audio_mask = latent.generated_mask()
    assert video_mask.item() == float(not kept_video) and audio_mask.item() == float(not kept_audio)
    assert torch.equal(latent.keep_mask(), keep)


def test_task_latent_with_latents_and_validation():
    latent = _latent("v2a")
    new_video, new_audio = torch.zeros(3, *VIDEO), torch.ones(3, *AUDIO)
    out = latent.with_latents(new_video, new_audio)
    assert out.video is new_video and out.audio is new_audio and out.batch_size == 3
    assert (out.task, out.fps, out.num_frames, out.sample_rate, out.duration) == ("v2a", 17.0, 7, 16000, 0.4)
    with pytest.raises(InputError, match="with_latents"):
        latent.with_latents(torch.zeros(2, 4, 3, 4, 4), new_audio)
    with pytest.raises(InputError, match="t2av, a2v, v2a"):
        _latent("tts")
    with pytest.raises(InputError, match="5 latent steps"):
        _latent(audio=torch.zeros(2, 8, 9, 4))
    with pytest.raises(InputError, match="batch"):
        _latent(audio=torch.zeros(1, *AUDIO))
    for field, value in (("fps", 0), ("num_frames", 2.5), ("sample_rate", -1), ("height", 0), ("duration", None)):
        with pytest.raises(InputError, match=field):
            _latent(**{field: value})


# ---- guidance ----------------------------------------------------------------------------------------------------


class FakeDiT(nn.Module):
    """The UniForm DiT call signature, with outputs that depend on every conditioning input; records its calls."""

    def __init__(self, caption_channels=6):
        super().__init__()
        self.null = nn.Parameter(torch.linspace(-1, 1, caption_channels))
        self.calls = []

    def null_caption(self, batch, length):
        return self.null.expand(batch, length, -1)

    def forward(self, video, audio, timestep, y, mask, task, fps, height, width):
        self.calls.append(
            dict(
                video=video,
                audio=audio,
                timestep=timestep,
                y=y,
                mask=mask,
                task=task,
                fps=fps,
                height=height,
                width=width,
            )
        )
        weights = torch.ones(y.shape[:2]) if mask is None else mask.float()
        text = (y.mean(-1) * weights).sum(1) / weights.sum(1)  # [B]
        cond = text + 0.01 * task + 1e-3 * timestep + 1e-3 * fps
        v_eps = torch.tanh(video) + cond.view(-1, 1, 1, 1, 1)
        a_eps = torch.tanh(audio) - cond.view(-1, 1, 1, 1)
        return torch.cat([v_eps, 0.5 * v_eps], 1), torch.cat([a_eps, -0.5 * a_eps], 1)


def test_cfg_combine():
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert cfg_combine(c, u, 0.0).item() == 1.0 and cfg_combine(c, u, 1.0).item() == 2.0
    assert cfg_combine(c, u, 5.0).item() == 6.0


def test_model_fn_runs_cond_and_uncond_as_one_batch():
    dit, latent = FakeDiT(), _latent("a2v", batch=2)
    y = torch.randn(2, 3, 6)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    model_fn = make_model_fn(dit, latent, y, mask, None, None, cfg_scale=5.0)
    x = latent.pack()
    eps, var = model_fn(x, torch.tensor([999, 999]))
    assert len(dit.calls) == 1
    call = dit.calls[0]
    assert call["video"].shape == (4, *VIDEO) and call["audio"].shape == (4, *AUDIO)
    assert torch.equal(call["y"][:2], y) and torch.equal(call["y"][2:], dit.null_caption(2, 3).detach())
    assert torch.equal(call["mask"], torch.cat([mask, mask]))
    assert call["task"].tolist() == [TASKS.index("a2v")] * 4 and call["fps"].tolist() == [17.0] * 4
    assert call["timestep"].dtype == torch.float32 and (call["height"], call["width"]) == (32, 32)

    # guided eps = u + s (c - u); the variance comes from the conditional half
    video_out, audio_out = dit(
        *[call[k] for k in ("video", "audio", "timestep", "y", "mask", "task", "fps")], height=32, width=32
    )
    eps_all, var_all = pack(video_out[:, :4], audio_out[:, :8]), pack(video_out[:, 4:], audio_out[:, 8:])
    assert torch.allclose(eps, eps_all[2:] + 5.0 * (eps_all[:2] - eps_all[2:]))
    assert torch.equal(var, var_all[:2])


@pytest.mark.parametrize("sampler", ["iddpm", "dpmpp_2m"])
def test_sampling_with_cfg_calls_the_dit_once_per_step(sampler):
    dit, latent = FakeDiT(), _latent("v2a", batch=2)
    model_fn = make_model_fn(dit, latent, torch.randn(1, 4, 6), None, torch.zeros(1, 2, 6), None, cfg_scale=5.0)
    noise = torch.randn(2, latent.pack().shape[1])
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = sample(model_fn, noise, latent.pack(), latent.keep_mask(), sampler, 6, gens)
    assert len(dit.calls) == 6 and all(c["video"].shape[0] == 4 for c in dit.calls)
    # a shorter negative caption is zero-padded and masked out
    assert all(c["y"].shape[1] == 4 and c["mask"].tolist()[2:] == [[1, 1, 0, 0]] * 2 for c in dit.calls)
    assert torch.equal(out[:, latent.keep_mask()], latent.pack()[:, latent.keep_mask()])


def test_model_fn_without_guidance_runs_batch_b():
    latent = _latent("a2v", batch=2)
    x, t = latent.pack(), torch.tensor([10, 10])
    dit = FakeDiT()
    eps, _ = make_model_fn(dit, latent, torch.randn(2, 3, 6), None, None, None, cfg_scale=1.0)(x, t)
    assert len(dit.calls) == 1 and dit.calls[0]["video"].shape[0] == 2
    # no text: the null caption is the only condition
    dit = FakeDiT()
    null = dit.null_caption(2, 1).detach()
    make_model_fn(dit, latent, None, None, null, None, cfg_scale=5.0)(x, t)
    assert dit.calls[0]["video"].shape[0] == 2 and torch.equal(dit.calls[0]["y"], null)
    # guidance scale 0 is the unconditional model
    dit = FakeDiT()
    eps0, _ = make_model_fn(dit, latent, torch.randn(2, 3, 6), None, None, None, cfg_scale=0.0)(x, t)
    eps_null, _ = make_model_fn(FakeDiT(), latent, None, None, dit.null_caption(2, 3).detach(), None, 1.0)(x, t)
    assert torch.allclose(eps0, eps_null)


def test_model_fn_bad_inputs():
    dit, latent = FakeDiT(), _latent()
    for scale in (-1.0, "5", None):
        with pytest.raises(InputError, match="cfg_scale"):
            make_model_fn(dit, latent, torch.randn(2, 3, 6), None, None, None, scale)
    with pytest.raises(InputError, match="y_null"):
        make_model_fn(dit, latent, None, None, None, None, 5.0)
    model_fn = make_model_fn(dit, latent, torch.randn(3, 3, 6), None, None, None, 5.0)
    with pytest.raises(InputError, match="batch size"):
        model_fn(latent.pack(), torch.tensor([1, 1]))


def test_model_fn_and_sampling_with_the_tiny_uniform_dit():
    from uniform_core.model.uniform_dit import UniFormDiT

    torch.manual_seed(0)
    dit = UniFormDiT.from_preset("tiny").eval()
    g = torch.Generator().manual_seed(0)
    latent = TaskLatent(
        "a2v",
        video=torch.zeros(2, 4, 5, 4, 4),
        audio=torch.randn(2, 8, 25, 16, generator=g),
        fps=17,
        num_frames=17,
        sample_rate=16000,
        duration=1.0,
        height=32,
        width=32,
    )
    y = torch.randn(2, 5, dit.config.caption_channels, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    batches = []
    dit.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    model_fn = make_model_fn(dit, latent, y, mask, None, None, cfg_scale=5.0)

    with torch.no_grad():
        x = latent.pack() + torch.randn(latent.pack().shape, generator=g)
        t = torch.tensor([500, 500])
        eps, var = model_fn(x, t)
        assert batches == [4]
        video, audio = unpack(x, latent.video.shape, latent.audio.shape)
        task, fps = torch.tensor([1, 1]), torch.tensor([17.0, 17.0])
        cond = dit(video, audio, t.float(), y, mask, task, fps, height=32, width=32)
        uncond = dit(video, audio, t.float(), dit.null_caption(2, 5), mask, task, fps, height=32, width=32)
    eps_c, eps_u = pack(cond[0][:, :4], cond[1][:, :8]), pack(uncond[0][:, :4], uncond[1][:, :8])
    assert torch.allclose(eps, eps_u + 5.0 * (eps_c - eps_u), atol=1e-4)
    assert torch.allclose(var, pack(cond[0][:, 4:], cond[1][:, 8:]), atol=1e-5)

    batches.clear()
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    noise = torch.stack([torch.randn(x.shape[1], generator=gen) for gen in gens])
    out = sample(model_fn, noise, latent.pack(), latent.keep_mask(), "iddpm", 3, gens)
    assert batches == [4, 4, 4] and bool(torch.isfinite(out).all())
    assert torch.equal(unpack(out, latent.video.shape, latent.audio.shape)[1], latent.audio)
