"""IDDPM's ancestral step on the respaced chain, with every coefficient computed once per run.

diffusers' ``DDPMScheduler.step`` rebuilds its coefficients from the abar table at every step (some 25 small tensor
ops, a ``nonzero`` search for the previous timestep and the variance's logs): more than half of what the iddpm loop
spent outside the DiT. The update is the same one. For a listed timestep t and the next listed one s
(abar_s = 1 after the last), in float64 before the loop (Nichol & Dhariwal 2021, Ho et al. 2020):

    beta = 1 - abar_t / abar_s,   btilde = beta (1 - abar_s) / (1 - abar_t)                (respaced chain)
    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)                                    (DDPM eq. 15)
    mu = c1 x0_hat + c2 x_t,  c1 = beta sqrt(abar_s) / (1 - abar_t),
                              c2 = sqrt(1 - beta) (1 - abar_s) / (1 - abar_t)               (DDPM eq. 7)
       = a x_t - b eps,       a = c1 / sqrt(abar_t) + c2,  b = c1 sqrt(1 - abar_t) / sqrt(abar_t)
    log Sigma = f log beta + (1 - f) log btilde,  f = (v + 1) / 2                            (IDDPM eq. 15)
    x_s = mu + exp(log Sigma / 2) z = mu + exp(p + q v) z,  q = (log beta - log btilde) / 4,
                                                            p = log btilde / 2 + q

with z ~ N(0, I) drawn as diffusers draws it (one draw per item generator) and no noise at t = 0. The step then
costs six tensor ops and reads nothing back from the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class RespacedIDDPM:
    """The iddpm update for ``timesteps`` (high to low, on the 0..T-1 scale) of a schedule's ``alphas_cumprod``."""

    def __init__(self, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor):
        t = timesteps.round().long().cpu()
        abar = alphas_cumprod.double().cpu()[t]
        abar_s = torch.cat([abar[1:], abar.new_ones(1)])
        beta = 1 - abar / abar_s
        log_btilde = (beta * (1 - abar_s) / (1 - abar)).clamp_min(1e-20).log()  # btilde = 0 at t = 0, as diffusers
        c1 = beta * abar_s.sqrt() / (1 - abar)
        c2 = (1 - beta).sqrt() * (1 - abar_s) / (1 - abar)
        a = c1 / abar.sqrt() + c2
        b = c1 * (1 - abar).sqrt() / abar.sqrt()
        q = (beta.log() - log_btilde) / 4
        p = log_btilde / 2 + q
        self.coefficients = list(zip(a.tolist(), b.tolist(), p.tolist(), q.tolist(), (t > 0).tolist(), strict=True))

    def step(
        self,
        index: int,
        eps: torch.Tensor,
        v: torch.Tensor,
        x: torch.Tensor,
        generators: Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """x_s from x_t [B, D] at step ``index``, the model's eps [B, D] and learned-range value v [B, D] in [-1, 1].

        generators: one per item on x's device (item i's noise from generators[i]), or None for torch's global RNG.
        """
        a, b, p, q, noisy = self.coefficients[index]
        x_s = (x * a).sub_(eps, alpha=b)
        if noisy:
            x_s.addcmul_(v.mul(q).add_(p).exp_(), _noise(x, generators))
        return x_s


def _noise(x: torch.Tensor, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
    """N(0, I) shaped like x [B, D]: item i from generators[i] (the draws of diffusers' ``randn_tensor``)."""
    if generators is None:
        return torch.randn(x.shape, device=x.device, dtype=x.dtype)
    if len(generators) == 1:
        return torch.randn(x.shape, generator=generators[0], device=x.device, dtype=x.dtype)
    return torch.cat([torch.randn((1, x.shape[1]), generator=g, device=x.device, dtype=x.dtype) for g in generators])
