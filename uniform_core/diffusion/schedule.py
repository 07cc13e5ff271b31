"""The DDPM noise schedule UniForm trains with, and its training loss.

Linear betas 1e-4..0.02 over 1000 steps (paper III-B, Open-Sora IDDPM). Tables are kept in float64 and cast to
the caller's dtype when gathered, as improved-diffusion does. Notation (paper eq. 2-9, Nichol & Dhariwal 2021):

    alpha_t = 1 - beta_t,   abar_t = prod_{s<=t} alpha_s,   SNR(t) = abar_t / (1 - abar_t)
    q(x_t | x_0)        = N(sqrt(abar_t) x_0, (1 - abar_t) I)                                  (eq. 3-4)
    q(x_{t-1} | x_t, x_0) = N(c1_t x_0 + c2_t x_t, btilde_t I)
        c1_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t),  c2_t = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)
        btilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)                                        (eq. 9)
    learned range:  log Sigma_theta = f log beta_t + (1 - f) log btilde_t,  f = (v + 1) / 2,  v in [-1, 1]
"""

from __future__ import annotations

import math

import torch

from .. import checks
from ..errors import InputError


class NoiseSchedule:
    """Linear-beta DDPM schedule with the tables used by q_sample, the sampler schedulers and the IDDPM loss."""

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        checks.integer(num_timesteps, "num_timesteps", 2)
        if not 0.0 < beta_start < beta_end < 1.0:
            raise InputError(f"betas must satisfy 0 < beta_start < beta_end < 1; got {beta_start!r}, {beta_end!r}")
        self.num_timesteps = num_timesteps
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)

        self.betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])
        one_minus = 1.0 - self.alphas_cumprod
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / one_minus
        # btilde_0 = 0; improved-diffusion repeats btilde_1 there so the log stays finite.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = self.betas * self.alphas_cumprod_prev.sqrt() / one_minus
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / one_minus
        self._tables = {
            "sqrt_abar": self.alphas_cumprod.sqrt(),
            "sqrt_one_minus_abar": one_minus.sqrt(),
            "snr": self.alphas_cumprod / one_minus,
            "log_beta": self.betas.log(),
            "log_btilde": self.posterior_log_variance_clipped,
            "coef1": self.posterior_mean_coef1,
            "coef2": self.posterior_mean_coef2,
        }
        self._cache: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(num_timesteps={self.num_timesteps}, beta_start={self.beta_start}, "
            f"beta_end={self.beta_end})"
        )

    def _gather(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at timesteps ``t`` [B], shaped [B, 1, ...] to broadcast against ``like``."""
        key = (name, t.device, like.dtype)
        if key not in self._cache:  # cast in float64 first, then move once per device/dtype
            self._cache[key] = self._tables[name].to(like.dtype).to(t.device)
        return self._cache[key][t].view(-1, *([1] * (like.ndim - 1)))

    def _check_t(self, t: torch.Tensor, batch: int | None) -> None:
        """t must be [batch] long; values are not range-checked here (that would sync with the device)."""
        ok = isinstance(t, torch.Tensor) and t.dtype == torch.long and t.ndim == 1
        if not ok or (batch is not None and t.shape[0] != batch):
            raise InputError(
                f"t must be a LongTensor of shape [{batch or 'B'}] with timesteps in 0..{self.num_timesteps - 1}; "
                f"got {getattr(t, 'dtype', type(t))} {tuple(getattr(t, 'shape', ()))}"
            )

    def q_sample(
        self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, generated_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (eq. 4).

        x0, noise: [B, ...]; t: [B] long. Where ``generated_mask`` (broadcastable to x0, 1 = generated) is 0 the
        entry stays exactly x0: the task noise scheme, in which the conditioning modality is never noised.
        """
        self._check_t(t, x0.shape[0])
        if noise.shape != x0.shape:
            raise InputError(f"noise must have the shape of x0 {tuple(x0.shape)}; got {tuple(noise.shape)}")
        x_t = self._gather("sqrt_abar", t, x0) * x0 + self._gather("sqrt_one_minus_abar", t, x0) * noise
        if generated_mask is None:
            return x_t
        return torch.where(generated_mask.to(x0.device).bool(), x_t, x0)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t) at timesteps ``t`` [B] long, as float32 [B]."""
        self._check_t(t, None)
        return self._gather("snr", t, torch.empty(0, dtype=torch.float32)).view(-1)

    def training_loss(
        self,
        model_eps: torch.Tensor,
        model_var: torch.Tensor,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        generated_mask: torch.Tensor,
        snr_gamma: float | None = None,
        high_noise_weight: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """IDDPM hybrid loss restricted to the generated entries (paper eq. 5, 10-12).

        All tensors are [B, ...] of one shape except t ([B] long) and ``generated_mask`` (broadcastable to x0,
        1 = generated, 0 = clean condition). Per item b, with M the mask and N_b = sum M:

            mse_b = sum M (eps_theta - eps)^2 / N_b
            vb_b  = sum M KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) / N_b   in bits; at t = 0 the discretised
                    Gaussian decoder NLL instead. p uses the posterior mean of x0_hat(eps_theta.detach()) and the
                    learned-range variance, so vb trains only the variance (improved-diffusion, Open-Sora IDDPM).
            loss  = mean_b(w_b mse_b + vb_b),  w_b = min(SNR(t_b), snr_gamma) / SNR(t_b)  (min-SNR-gamma weighting
                    for eps prediction, Hang et al. 2023; the paper's gamma_t), or w_b = 1 when snr_gamma is None.
                    With ``high_noise_weight`` K, items with SNR < 1 weigh max(w_b, min(1 / SNR, K)): there the
                    eps loss becomes an x0 loss, capped at K. Plain eps loss weighs x0 errors by SNR, which is
                    ~0.001 at the high noise where the timing of sparse events is decided, so it hardly rewards
                    reading that timing from the clean conditioning modality.

        Returns scalars ``loss``, ``mse`` (unweighted) and ``vb``.
        """
        shape = x0.shape
        for name, value in (("model_eps", model_eps), ("model_var", model_var), ("x_t", x_t), ("noise", noise)):
            if value.shape != shape:
                raise InputError(f"{name} must have the shape of x0 {tuple(shape)}; got {tuple(value.shape)}")
        self._check_t(t, shape[0])
        if snr_gamma is not None and not snr_gamma > 0:
            raise InputError(f"snr_gamma must be > 0 or None; got {snr_gamma!r}")
        if high_noise_weight is not None and not high_noise_weight >= 1:
            raise InputError(f"high_noise_weight must be >= 1 or None; got {high_noise_weight!r}")
        try:
            mask = torch.broadcast_to(generated_mask.to(device=x0.device, dtype=torch.float32), shape)
        except RuntimeError as err:
            raise InputError(
                f"generated_mask {tuple(generated_mask.shape)} does not broadcast to {tuple(shape)}"
            ) from err

        x0, x_t, noise = x0.float(), x_t.float(), noise.float()
        eps, var = model_eps.float(), model_var.float()
        count = mask.flatten(1).sum(1).clamp_min(1.0)

        def masked_mean(values: torch.Tensor) -> torch.Tensor:
            return (values * mask).flatten(1).sum(1) / count

        mse = masked_mean((eps - noise) ** 2)

        true_mean = self._gather("coef1", t, x0) * x0 + self._gather("coef2", t, x0) * x_t
        true_log_var = self._gather("log_btilde", t, x0)
        x0_hat = (x_t - self._gather("sqrt_one_minus_abar", t, x0) * eps.detach()) / self._gather("sqrt_abar", t, x0)
        model_mean = self._gather("coef1", t, x0) * x0_hat + self._gather("coef2", t, x0) * x_t
        frac = (var + 1.0) / 2.0
        model_log_var = frac * self._gather("log_beta", t, x0) + (1.0 - frac) * true_log_var

        kl = _normal_kl(true_mean, true_log_var, model_mean, model_log_var) / math.log(2.0)
        nll = -_discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var) / math.log(2.0)
        first = (t == 0).view(-1, *([1] * (x0.ndim - 1)))
        vb = masked_mean(torch.where(first, nll, kl))

        weight = torch.ones_like(mse)
        snr = self._gather("snr", t, mse).view(-1)
        if snr_gamma is not None:
            weight = snr.clamp(max=snr_gamma) / snr
        if high_noise_weight is not None:
            weight = torch.where(snr < 1, torch.maximum(weight, (1 / snr).clamp(max=high_noise_weight)), weight)
        return {"loss": (weight * mse + vb).mean(), "mse": mse.mean(), "vb": vb.mean()}


def _normal_kl(mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor, log_var2: torch.Tensor):
    """KL(N(mean1, e^log_var1) || N(mean2, e^log_var2)) per element, in nats."""
    return 0.5 * (
        -1.0 + log_var2 - log_var1 + torch.exp(log_var1 - log_var2) + (mean1 - mean2) ** 2 * torch.exp(-log_var2)
    )


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Tanh approximation of the standard normal CDF (the one improved-diffusion uses)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor):
    """log P(x) of a Gaussian integrated over 8-bit bins of [-1, 1], open-ended at the edges (IDDPM decoder at t=0)."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_mid = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_mid))
