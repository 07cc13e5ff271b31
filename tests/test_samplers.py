"""Samplers over the packed audio-video latent: timesteps, task noise schemes, seeds, and a known-answer check."""

import math

import pytest
import torch

from uniform_core.diffusion import SAMPLERS, NoiseSchedule, keep_mask, make_scheduler, pack, sample, sampler_timesteps
from uniform_core.errors import Cancelled, InputError
from uniform_core.tasks import TASKS

VIDEO = (4, 2, 4, 4)  # per item: C, T, H, W
AUDIO = (8, 10, 4)  # per item: C, 5T, F
ABAR = NoiseSchedule().alphas_cumprod


class RecordingModel:
    """A model_fn stand-in that mixes entries within an item (so kept entries influence the rest) and records calls."""

    def __init__(self):
        self.inputs, self.timesteps = [], []

    def __call__(self, x, t):
        self.inputs.append(x.clone())
        self.timesteps.append(t.clone())
        mixed = x + x.mean(dim=1, keepdim=True)
        return 0.5 * torch.tanh(mixed) + 1e-4 * t[:, None], torch.tanh(0.3 * mixed)


def _setup(task, batch, seed0=0):
    """Per-item noise drawn from generator i (as the pipeline does), a random clean condition, and the keep mask."""
    generators = [torch.Generator().manual_seed(seed0 + i) for i in range(batch)]
    d = math.prod(VIDEO) + math.prod(AUDIO)
    noise = torch.stack([torch.randn(d, generator=g) for g in generators])
    clean_gen = torch.Generator().manual_seed(1234)
    clean = pack(torch.randn(batch, *VIDEO, generator=clean_gen), torch.randn(batch, *AUDIO, generator=clean_gen))
    keep = keep_mask(task, VIDEO, AUDIO)
    return noise, clean, keep, generators


def test_iddpm_30_steps_uses_the_iddpm_respacing():
    expected = [0, 34, 69, 103, 138, 172, 207, 241, 276, 310, 344, 379, 413, 448, 482, 517, 551, 586, 620, 655]
    expected += [689, 723, 758, 792, 827, 861, 896, 930, 965, 999]
    assert sampler_timesteps("iddpm", 30).tolist() == expected[::-1]
    # the model is called at exactly those timesteps, as [B] long
    model = RecordingModel()
    noise, clean, keep, gens = _setup("t2av", 2)
    sample(model, noise, clean, keep, "iddpm", 30, gens)
    assert [int(t[0]) for t in model.timesteps] == expected[::-1]
    assert all(t.dtype == torch.long and t.shape == (2,) and bool((t == t[0]).all()) for t in model.timesteps)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_timesteps_descend_within_range(sampler):
    for steps in (1, 7, 30):
        ts = sampler_timesteps(sampler, steps)
        assert len(ts) == steps and bool((ts[:-1] > ts[1:]).all()) and 0 <= int(ts[-1]) and int(ts[0]) <= 999


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("task", TASKS)
def test_task_noise_scheme_and_seeds(task, sampler):
    steps, batch = 4, 3
    noise, clean, keep, gens = _setup(task, batch)
    model = RecordingModel()
    out = sample(model, noise, clean, keep, sampler, steps, gens)

    assert out.shape == noise.shape and out.dtype == noise.dtype and bool(torch.isfinite(out).all())
    assert int(keep.sum()) == {"t2av": 0, "a2v": math.prod(AUDIO), "v2a": math.prod(VIDEO)}[task]
    assert torch.equal(out[:, keep], clean[:, keep])  # the condition comes back bit for bit
    assert len(model.inputs) == steps
    for x in model.inputs:  # and the model saw it clean (zero noise) at every step, whatever the scaling
        assert torch.equal(x[:, keep], clean[:, keep])
    assert not torch.equal(out[:, ~keep], noise[:, ~keep])

    # same generators -> identical; different seeds -> different generated part
    noise_again, _, _, gens_again = _setup(task, batch)
    assert torch.equal(sample(RecordingModel(), noise_again, clean, keep, sampler, steps, gens_again), out)
    noise_other, _, _, gens_other = _setup(task, batch, seed0=100)
    other = sample(RecordingModel(), noise_other, clean, keep, sampler, steps, gens_other)
    assert torch.equal(other[:, keep], clean[:, keep])
    assert (other[:, ~keep] - out[:, ~keep]).abs().min() > 0

    # item i of the batch equals the single run with generator i
    for i in range(batch):
        _, _, _, single_gens = _setup(task, batch)
        single = sample(RecordingModel(), noise[i : i + 1], clean[i : i + 1], keep, sampler, steps, [single_gens[i]])
        assert torch.equal(single, out[i : i + 1])


def test_iddpm_noise_comes_from_the_generators_only():
    noise, clean, keep, gens = _setup("t2av", 1)
    torch.manual_seed(0)
    first = sample(RecordingModel(), noise, clean, keep, "iddpm", 5, [torch.Generator().manual_seed(7)])
    torch.manual_seed(1)  # the global RNG must not matter
    second = sample(RecordingModel(), noise, clean, keep, "iddpm", 5, [torch.Generator().manual_seed(7)])
    third = sample(RecordingModel(), noise, clean, keep, "iddpm", 5, [torch.Generator().manual_seed(8)])
    assert torch.equal(first, second) and not torch.equal(first, third)


def _smooth_model(x, t):
    return 0.8 * torch.tanh(x) + 1e-4 * t[:, None], torch.tanh(0.5 * x)


def test_iddpm_matches_the_iddpm_respaced_ancestral_step():
    """Reference: IDDPM's respaced chain in float64 (space_timesteps, betas 1 - abar_t/abar_prev, p_sample)."""
    steps, d = 12, 64
    use = [round(i * 999 / (steps - 1)) for i in range(steps)]
    abar = ABAR[use]
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    betas = 1 - abar / abar_prev
    post_var = betas * (1 - abar_prev) / (1 - abar)
    log_var_clipped = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    coef1 = betas * abar_prev.sqrt() / (1 - abar)
    coef2 = (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar)

    gen = torch.Generator().manual_seed(11)
    noise = torch.randn(1, d, generator=gen)
    x = noise.double()
    for i in reversed(range(steps)):
        eps, v = (o.double() for o in _smooth_model(x.float(), torch.tensor([use[i]])))
        x0_hat = (x - (1 - abar[i]).sqrt() * eps) / abar[i].sqrt()
        mean = coef1[i] * x0_hat + coef2[i] * x
        frac = (v + 1) / 2
        log_var = frac * betas[i].log() + (1 - frac) * log_var_clipped[i]
        x = mean + (torch.exp(0.5 * log_var) * torch.randn(1, d, generator=gen).double() if i > 0 else 0)

    keep = torch.zeros(d, dtype=torch.bool)
    gen = torch.Generator().manual_seed(11)
    torch.randn(1, d, generator=gen)  # the initial noise, so that the step noise lines up with the reference
    out = sample(_smooth_model, noise, torch.zeros_like(noise), keep, "iddpm", steps, [gen])
    assert torch.allclose(out.double(), x, atol=1e-4)
    unaligned = sample(_smooth_model, noise, torch.zeros_like(noise), keep, "iddpm", steps, [torch.Generator()])
    assert not torch.allclose(unaligned.double(), x, atol=1e-2)  # the step noise matters at this tolerance


@pytest.mark.parametrize("steps", [1, 7, 30, 250])
def test_iddpm_step_equals_diffusers_ddpm_scheduler_step(steps):
    """The precomputed step against the DDPMScheduler loop it replaced: same timesteps, same generator draws."""
    noise, clean, keep, gens = _setup("a2v", 2)
    out = sample(RecordingModel(), noise, clean, keep, "iddpm", steps, gens)

    _, _, _, gens = _setup("a2v", 2)
    scheduler = make_scheduler("iddpm", steps)
    model, x = RecordingModel(), torch.where(keep, clean, noise)
    for t in scheduler.timesteps:
        eps, v = model(torch.where(keep, clean, x), t.long().expand(2))
        x = torch.where(keep, clean, scheduler.step(torch.cat([eps, v], dim=1), t, x, generator=gens).prev_sample)
    assert torch.equal(out[:, keep], clean[:, keep])
    assert torch.allclose(out, x, rtol=1e-4, atol=1e-5)  # float64 coefficients against float32 ones
    if steps > 1:  # the noise of every step but the last comes from the generators
        assert not torch.allclose(out, sample(RecordingModel(), noise, clean, keep, "iddpm", steps), atol=1e-2)


@pytest.mark.parametrize("steps", [30, 167])
def test_ddim_is_the_eta_zero_ddim_update(steps):
    """Reference: DDIM eq. 12 with eta 0 on the sampler's grid, ending at abar = 1."""
    grid = sampler_timesteps("ddim", steps).tolist()
    assert grid[0] == 999 and len(set(grid)) == steps
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(1, 64, generator=gen)
    x = noise.double()
    for i, step in enumerate(grid):
        eps = _smooth_model(x.float(), torch.tensor([step]))[0].double()
        a, a_prev = ABAR[step], (ABAR[grid[i + 1]] if i + 1 < steps else torch.tensor(1.0, dtype=torch.float64))
        x0_hat = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps
    out = sample(
        _smooth_model, noise, torch.zeros_like(noise), torch.zeros(64, dtype=torch.bool), "ddim", steps, [gen]
    )
    assert torch.allclose(out.double(), x, atol=1e-4)


# ---- known answer: Gaussian data with the exact noise predictor ------------------------------------------------

MU, S = 0.7, 0.4  # x0 ~ N(MU, S^2), one scalar per entry


def exact_model(sampler, steps, variance="exact"):
    """E[eps | x_t] for Gaussian data, and for iddpm the learned-range value that gives the true reverse variance.

    With x_t = a x0 + b eps: E[eps|x_t] = b (x_t - a MU) / (a^2 S^2 + b^2), Var(x0|x_t) = S^2 b^2 / (a^2 S^2 + b^2).
    Over a respaced step t -> p: beta = 1 - abar_t/abar_p, btilde = beta (1 - abar_p)/(1 - abar_t), and
    Var(x_p | x_t) = btilde + c1^2 Var(x0|x_t) with c1 = sqrt(abar_p) beta / (1 - abar_t).
    """
    grid = sampler_timesteps(sampler, steps).tolist()
    following = dict(zip(grid, grid[1:] + [-1], strict=True))

    def model_fn(x, t):
        step = int(t[0])
        a2 = float(ABAR[step])
        b2 = 1.0 - a2
        eps = math.sqrt(b2) * (x - math.sqrt(a2) * MU) / (a2 * S * S + b2)
        if variance != "exact":
            return eps, torch.full_like(x, variance)
        prev = following[step]
        if prev < 0:  # last step: no noise is added, the variance is unused
            return eps, torch.zeros_like(x)
        a2p = float(ABAR[prev])
        beta = 1.0 - a2 / a2p
        btilde = beta * (1.0 - a2p) / b2
        c1 = math.sqrt(a2p) * beta / b2
        var = btilde + c1 * c1 * S * S * b2 / (a2 * S * S + b2)
        return eps, torch.full_like(x, 2.0 * math.log(var / btilde) / math.log(beta / btilde) - 1.0)

    return model_fn


def _gaussian_samples(sampler, steps, n, variance="exact", normalise=False):
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(1, n, generator=gen)
    if normalise:  # deterministic samplers are affine in the noise: remove its sampling error
        noise = (noise - noise.mean()) / noise.std()
    keep = torch.zeros(n, dtype=torch.bool)
    out = sample(exact_model(sampler, steps, variance), noise, torch.zeros_like(noise), keep, sampler, steps, [gen])
    return float(out.mean()), float(out.std())


def test_iddpm_with_exact_model_and_variance_samples_the_data_distribution():
    mean, std = _gaussian_samples("iddpm", 30, 20_000)
    assert abs(mean - MU) < 0.015 and abs(std - S) < 0.025 * S
    # the learned variance is what makes 30 respaced steps exact: either end of its range misses
    _, std_small = _gaussian_samples("iddpm", 30, 20_000, variance=-1.0)
    _, std_large = _gaussian_samples("iddpm", 30, 20_000, variance=1.0)
    assert std_small < 0.9 * S and std_large > 1.05 * S


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "euler"])
def test_deterministic_samplers_converge_to_the_data_distribution(sampler):
    n = 4000
    mean_few, std_few = _gaussian_samples(sampler, 25, n, normalise=True)
    mean_many, std_many = _gaussian_samples(sampler, 167, n, normalise=True)  # 167 does not divide 1000
    assert abs(mean_few - MU) < 0.01 and abs(mean_many - MU) < 0.01
    assert abs(std_many - S) < 0.04 * S
    assert abs(std_many - S) < 0.5 * abs(std_few - S)  # discretisation error shrinks with more steps


# ---- progress, cancellation, bad inputs -----------------------------------------------------------------------


def test_callback_and_cancel():
    noise, clean, keep, gens = _setup("a2v", 1)
    seen = []
    sample(RecordingModel(), noise, clean, keep, "ddim", 5, gens, callback=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(1, 6)]

    model = RecordingModel()
    with pytest.raises(Cancelled):
        sample(model, noise, clean, keep, "euler", 5, gens, cancel=lambda: len(model.inputs) >= 2)
    assert len(model.inputs) == 2


def test_bad_inputs():
    noise, clean, keep, gens = _setup("v2a", 2)
    model = RecordingModel()
    with pytest.raises(InputError, match="iddpm, ddim, dpmpp_2m, euler"):
        sample(model, noise, clean, keep, "heun", 5, gens)
    for steps in (0, -3, 1001, 2.5, True):
        with pytest.raises(InputError, match="steps"):
            sample(model, noise, clean, keep, "ddim", steps, gens)
    with pytest.raises(InputError, match="keep"):
        sample(model, noise, clean, keep.float(), "ddim", 3, gens)
    with pytest.raises(InputError, match="keep"):
        sample(model, noise, clean, keep[:-1], "ddim", 3, gens)
    with pytest.raises(InputError, match="clean"):
        sample(model, noise, clean[:1], keep, "ddim", 3, gens)
    with pytest.raises(InputError, match="generators"):
        sample(model, noise, clean, keep, "iddpm", 3, gens[:1])
    with pytest.raises(InputError, match="model_fn"):
        sample(lambda x, t: (x[:, :-1], x[:, :-1]), noise, clean, keep, "ddim", 3, gens)
    assert model.inputs == []  # nothing ran


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_no_host_device_sync_inside_the_loop(sampler):
    noise, clean, keep, gens = _setup("a2v", 2)
    noise, clean, keep = noise.cuda(), clean.cuda(), keep.cuda()
    model = lambda x, t: (0.5 * torch.tanh(x) + 1e-4 * t[:, None], torch.tanh(x))  # noqa: E731
    expected = sample(model, noise, clean, keep, sampler, 6, gens)
    calls = []

    def watched(x, t):
        if not calls:  # from the first model call on we are inside the loop
            torch.cuda.set_sync_debug_mode("error")
        calls.append(1)
        return model(x, t)

    try:
        _, _, _, gens = _setup("a2v", 2)
        out = sample(watched, noise, clean, keep, sampler, 6, gens)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(out, expected) and torch.equal(out[:, keep], clean[:, keep])
