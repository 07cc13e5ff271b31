"""Samplers over the packed audio-video latent, built on diffusers' schedulers.

Every sampler runs the same loop; only the scheduler differs:

    1. x_T = noise * init_noise_sigma, with the kept (condition) entries set to ``clean``
    2. for each timestep t (high to low):
       a. model input = scale_model_input(x_t), kept entries replaced by ``clean`` (their noise is zero at every
          step, paper III-A, whatever scaling the scheduler uses)
       b. eps, v = model_fn(input, t)
       c. x_{t-1} = scheduler.step(...); kept entries reset to ``clean``
    3. return x_0; its kept entries are bit-identical to ``clean``

Samplers (30 steps each by default):
    iddpm     DDPMScheduler's timesteps, learned-range variance, "linspace" spacing = IDDPM respacing: for 30
              steps {0, 34, 69, ..., 965, 999}, respaced betas 1 - abar_t / abar_prev, ancestral noise (the
              paper's / Open-Sora 1.0-1.1's sampler); its step is :class:`~.iddpm.RespacedIDDPM`, the same
              update with the coefficients computed once per run.
    ddim      DDIM, eta 0 (deterministic), as first-order DPM-Solver++ (see make_scheduler for why).
    dpmpp_2m  DPMSolverMultistepScheduler, DPM-Solver++ 2M.
              Both use "linspace" spacing (999, 966, ..., 33 for 30 steps) and a last step to sigma 0.
    euler     EulerDiscreteScheduler (probability-flow ODE, no churn), "trailing" spacing.

Nothing inside the loop reads a device tensor on the host: scheduler tables and timesteps stay on the CPU,
the model's timesteps are moved to the device once, and ancestral noise is drawn on the latent's device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .. import checks
from ..errors import Cancelled, InputError
from .iddpm import RespacedIDDPM
from .schedule import NoiseSchedule

SAMPLERS = ("iddpm", "ddim", "dpmpp_2m", "euler")
SAMPLER_DESCRIPTIONS = {
    "iddpm": "IDDPM ancestral sampling with the learned variance (the paper's sampler; stochastic)",
    "ddim": "DDIM, eta 0 (deterministic)",
    "dpmpp_2m": "DPM-Solver++ 2M (deterministic, good at few steps)",
    "euler": "Euler on the probability-flow ODE (deterministic)",
}

ModelFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def check_sampler(sampler: str) -> None:
    """Raise InputError unless ``sampler`` names one of :data:`SAMPLERS`."""
    if sampler not in SAMPLERS:
        raise InputError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")


def check_sampler_args(sampler: str, steps: int, schedule: NoiseSchedule | None = None) -> None:
    """Raise InputError unless ``sampler`` is known and 1 <= ``steps`` <= the schedule's length."""
    check_sampler(sampler)
    checks.steps(steps, limit=(schedule or NoiseSchedule()).num_timesteps)


def make_scheduler(sampler: str, steps: int, schedule: NoiseSchedule | None = None):
    """The diffusers scheduler for ``sampler`` over ``schedule``'s betas, with its timesteps set (on the CPU)."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler  # seconds: only here

    schedule = schedule or NoiseSchedule()
    check_sampler_args(sampler, steps, schedule)
    common = {
        "num_train_timesteps": schedule.num_timesteps,
        "trained_betas": schedule.betas.numpy(),
        "prediction_type": "epsilon",
    }
    if sampler == "iddpm":
        # "linspace" rounds linspace(0, T-1, steps) exactly like IDDPM's space_timesteps(T, str(steps)), and
        # DDPMScheduler steps to the previous *listed* timestep, so the respaced beta is 1 - abar_t / abar_prev and
        # learned_range interpolates log beta and log btilde of the respaced chain, as IDDPM does. (The only
        # difference, btilde at t=0, never matters: no noise is added on the last step.)
        scheduler = DDPMScheduler(
            **common, variance_type="learned_range", clip_sample=False, timestep_spacing="linspace"
        )
    elif sampler == "ddim":
        # Not DDIMScheduler: its step goes from t to t - T // steps, which is only the next listed timestep on a
        # grid evenly spaced by that ratio. For step counts that do not divide T that grid either starts far
        # below T-1 ("leading": 667 for 334 steps) or mislabels noise levels ("trailing"); on Gaussian data with
        # the exact noise predictor both miss the data std by 10-40 % at 167-600 steps. First-order
        # DPM-Solver++ is algebraically the same update, x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps_hat
        # (DDIM eq. 12, eta 0; Lu et al. 2022), and steps between the listed timesteps for any step count.
        scheduler = DPMSolverMultistepScheduler(
            **common,
            algorithm_type="dpmsolver++",
            solver_order=1,
            final_sigmas_type="zero",
            timestep_spacing="linspace",
        )
    elif sampler == "dpmpp_2m":
        scheduler = DPMSolverMultistepScheduler(
            **common,
            algorithm_type="dpmsolver++",
            solver_order=2,
            lower_order_final=True,
            final_sigmas_type="zero",
            timestep_spacing="linspace",
        )
    else:
        scheduler = EulerDiscreteScheduler(**common, timestep_spacing="trailing", final_sigmas_type="zero")
    scheduler.set_timesteps(steps)
    return scheduler


def sampler_timesteps(sampler: str, steps: int, schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """The timesteps (on the 0..T-1 scale, high to low) at which ``sampler`` calls the model, [steps] long."""
    return make_scheduler(sampler, steps, schedule).timesteps.round().long()


def _noise_generators(generators, batch: int, device: torch.device):
    """Per-item generators for ancestral noise, living on ``device`` so no draw crosses to the host.

    A generator on another device (e.g. CPU generators for CUDA latents) is replaced by a device generator seeded
    from it, before the loop; item i still depends only on generators[i], so batches equal single runs.
    """
    if generators is None:
        return None
    if isinstance(generators, torch.Generator):
        generators = [generators]
    if not isinstance(generators, Sequence) or not all(isinstance(g, torch.Generator) for g in generators):
        raise InputError(f"generators must be a list of torch.Generator, one per batch item; got {type(generators)}")
    if len(generators) != batch:
        raise InputError(f"generators must hold one torch.Generator per batch item ({batch}); got {len(generators)}")
    out = []
    for gen in generators:
        if gen.device.type == device.type:
            out.append(gen)
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
            out.append(torch.Generator(device).manual_seed(seed))
    return out


def _check_inputs(noise: torch.Tensor, clean: torch.Tensor, keep: torch.Tensor) -> None:
    if not isinstance(noise, torch.Tensor) or noise.ndim != 2 or not noise.is_floating_point():
        raise InputError(f"noise must be a float tensor [B, D]; got {getattr(noise, 'shape', type(noise))}")
    if not isinstance(clean, torch.Tensor) or clean.shape != noise.shape:
        raise InputError(
            f"clean must have the shape of noise {tuple(noise.shape)}; got {getattr(clean, 'shape', clean)}"
        )
    if clean.dtype != noise.dtype or clean.device != noise.device:
        raise InputError(
            f"clean must match noise's dtype/device {noise.dtype}/{noise.device}; got {clean.dtype}/{clean.device}"
        )
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or keep.shape != (noise.shape[1],):
        raise InputError(
            f"keep must be a bool tensor [{noise.shape[1]}]; "
            f"got {getattr(keep, 'dtype', type(keep))} {tuple(getattr(keep, 'shape', ()))}"
        )


@torch.no_grad()
def sample(
    model_fn: ModelFn,
    noise: torch.Tensor,
    clean: torch.Tensor,
    keep: torch.Tensor,
    sampler: str = "iddpm",
    steps: int = 30,
    generators: Sequence[torch.Generator] | None = None,
    callback: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    schedule: NoiseSchedule | None = None,
    renoise: torch.Tensor | None = None,
    x0_callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Denoise ``noise`` into x_0 with ``sampler`` in ``steps`` model calls.

    model_fn(x [B, D], t [B] long on the 0..T-1 scale) -> (eps [B, D], v [B, D]), v the learned-range variance
    value in [-1, 1] (only iddpm uses it). noise, clean: [B, D] of one dtype/device; keep: [D] bool, True on the
    condition entries, which the model always sees as ``clean`` and which the result copies bit for bit.
    generators: one torch.Generator per item for the ancestral noise (iddpm), so item i of a batch equals the single
    run with generators[i]; None draws from torch's global RNG. callback(step, total) runs after each step;
    cancel() is polled before each step and True raises Cancelled. renoise: [D] bool, entries that are given by
    ``clean`` but shown at the current noise level (``clean`` noised with ``noise`` by the scheduler's own
    ``add_noise``) and replaced so after every step, instead of clean: the replacement method of training-free
    inpainting (Song et al. 2021), for given parts the model never saw clean in training. x0_callback(step, total,
    x0_hat [B, D]) runs after each step with the model's current estimate of x_0 (for live previews). Returns x_0
    [B, D].
    """
    _check_inputs(noise, clean, keep)
    scheduler = make_scheduler(sampler, steps, schedule)
    batch, device = noise.shape[0], noise.device
    gens = _noise_generators(generators, batch, device)
    keep = keep.to(device)
    timesteps = scheduler.timesteps  # CPU: the scheduler indexes its CPU tables with these
    model_timesteps = timesteps.round().long().to(device)  # one transfer, before the loop
    total = len(timesteps)
    alphas_cumprod = (schedule or NoiseSchedule()).alphas_cumprod  # CPU, indexed by the model's timesteps
    iddpm = RespacedIDDPM(timesteps, alphas_cumprod) if sampler == "iddpm" else None

    x = torch.where(keep, clean, noise * scheduler.init_noise_sigma)
    if renoise is not None:
        renoise = renoise.to(device) & ~keep
        x = torch.where(renoise, scheduler.add_noise(clean, noise, timesteps[:1]).to(x.dtype), x)
    for i, t in enumerate(timesteps):
        if cancel is not None and cancel():
            raise Cancelled(f"sampling cancelled at step {i} of {total}")
        model_in = torch.where(keep, clean, scheduler.scale_model_input(x, t))
        eps, v = model_fn(model_in, model_timesteps[i].expand(batch))
        if eps.shape != x.shape or v.shape != x.shape:
            raise InputError(
                f"model_fn must return (eps, v) shaped {tuple(x.shape)}; got {tuple(eps.shape)}, {tuple(v.shape)}"
            )
        eps, v = eps.to(x.dtype), v.to(x.dtype)
        if iddpm is not None:
            out = iddpm.step(i, eps, v, x, gens)
        else:
            out = scheduler.step(eps, t, x).prev_sample
        x = torch.where(keep, clean, out.to(x.dtype))
        if renoise is not None:  # the given entries at the next step's noise level (clean after the last step)
            given = clean if i + 1 == total else scheduler.add_noise(clean, noise, timesteps[i + 1 : i + 2])
            x = torch.where(renoise, given.to(x.dtype), x)
        if callback is not None:
            callback(i + 1, total)
        if x0_callback is not None:  # x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps (DDPM eq. 4) solved for x_0
            abar = float(alphas_cumprod[int(t.round())])
            x0_callback(i + 1, total, torch.where(keep, clean, (model_in - (1 - abar) ** 0.5 * eps) / abar**0.5))
    return x
