"""UniForm's multi-task training loss (paper III-A, III-C4) and the random draws of one step.

Every item of every batch draws its task (T2AV, A2V, V2A, and with a 4-task DiT the internal "continue"), whether its
caption is replaced by the learned null caption (p = 0.5, for classifier-free guidance), a timestep and noise. Only
the generated entries are noised; the conditioning ones enter clean, and the loss (masked noise MSE with min-SNR
weighting plus the IDDPM learned-variance term, ``NoiseSchedule.training_loss``) covers the generated entries only.
A "continue" item is T2AV whose first K latent frames of both modalities (K uniform in 1..F-1 of its F frames) are
given: clean in the input and without loss, exactly the mask continuation sampling keeps
(``diffusion.continuation``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.continuation import continuation_keep_mask
from ..diffusion.schedule import NoiseSchedule
from ..diffusion.task_latent import pack
from ..model.uniform_dit import UniFormDiT
from ..tasks import CONTINUE, model_task_index
from .config import DiTTrainConfig

A2V, V2A, CONTINUE_TASK = (model_task_index(task) for task in ("a2v", "v2a", CONTINUE))


@dataclass
class StepDraws:
    """The random choices of one step for a batch of B items."""

    task: torch.Tensor  # (B,) long index into tasks.MODEL_TASKS
    drop_caption: torch.Tensor  # (B,) bool: caption replaced by the learned null caption
    one_token_null: torch.Tensor  # (B,) bool: a dropped caption takes the pipeline's no-text form (1 null token)
    t: torch.Tensor  # (B,) long timestep in 0..num_timesteps-1
    video_noise: torch.Tensor
    audio_noise: torch.Tensor
    given: torch.Tensor  # (B,) long: latent frames given clean (continue items: 1..F-1; others 0)

    def part(self, items: slice) -> StepDraws:
        """The draws of items ``items`` of the batch."""
        return StepDraws(**{name: value[items] for name, value in vars(self).items()})


def draw_step(
    batch: int, video_shape, audio_shape, cfg: DiTTrainConfig, generator: torch.Generator, num_timesteps: int
) -> StepDraws:
    """Draw tasks (weighted by ``cfg.task_weights``), caption drops (``cfg.caption_dropout``), timesteps
    (uniform), noise and the given frames of continue items for ``batch`` items with ``generator``. Half of the
    dropped captions use the one-token null caption the pipeline runs with when no text is given, the other half the
    CFG form (null tokens under the prompt's mask). ``video_shape`` is per item, (C, F, H, W)."""
    weights = torch.tensor(cfg.task_weights, dtype=torch.float64)
    task = torch.multinomial(weights, batch, replacement=True, generator=generator)
    drop_caption = torch.rand(batch, generator=generator) < cfg.caption_dropout
    one_token_null = torch.rand(batch, generator=generator) < 0.5
    t = torch.randint(0, num_timesteps, (batch,), generator=generator)
    video_noise = torch.randn(batch, *video_shape, generator=generator)
    audio_noise = torch.randn(batch, *audio_shape, generator=generator)
    given = torch.zeros(batch, dtype=torch.long)
    if len(weights) > CONTINUE_TASK:  # drawn last, so a 3-task run's draws are what they always were
        frames = int(video_shape[1])
        given = torch.where(task == CONTINUE_TASK, torch.randint(1, frames, (batch,), generator=generator), given)
    return StepDraws(task, drop_caption, one_token_null, t, video_noise, audio_noise, given)


def generated_masks(
    task: torch.Tensor, video: torch.Tensor, audio: torch.Tensor, given: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, D) float in the packed layout: 1 on the entries item b's task generates, 0 on its clean condition.
    ``given`` (B,) long: a continue item generates what T2AV does but its first ``given[b]`` latent frames (video
    frames and their audio steps, :func:`~uniform_core.diffusion.continuation.continuation_keep_mask`)."""
    gen_video = (task != V2A).float().view(-1, 1, 1, 1, 1).expand_as(video)
    gen_audio = (task != A2V).float().view(-1, 1, 1, 1).expand_as(audio)
    masks = pack(gen_video, gen_audio)
    if given is None:
        return masks
    for k in given[task == CONTINUE_TASK].unique().tolist():
        kept = continuation_keep_mask("t2av", video.shape, audio.shape, k).to(masks.device)
        items = ((task == CONTINUE_TASK) & (given == k)).to(masks.device)
        masks[items] = masks[items].masked_fill(kept, 0.0)
    return masks


class CaptionDropDiT(torch.nn.Module):
    """The DiT as the trainer calls it: dropped captions are replaced by the learned null caption inside
    ``forward``. This is the module accelerate prepares: under FSDP the null caption is a shard of the root unit,
    whole only while the root's ``forward`` runs."""

    def __init__(self, dit: UniFormDiT):
        super().__init__()
        self.dit = dit

    def forward(self, video, audio, t, y, mask, task, drop_caption, one_token_null):
        """The DiT's inputs plus ``drop_caption`` and ``one_token_null``, (B,) bool (see :class:`StepDraws`)."""
        y = torch.where(drop_caption[:, None, None], self.dit.null_caption(y.shape[0], y.shape[1]).to(y.dtype), y)
        first_only = torch.zeros_like(mask)
        first_only[:, 0] = True
        mask = torch.where((drop_caption & one_token_null)[:, None], first_only, mask)
        return self.dit(video, audio, t, y, mask, task)


def diffusion_loss(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    batch: dict[str, torch.Tensor],
    draws: StepDraws,
    snr_gamma: float | None,
    high_noise_weight: float | None = None,
) -> dict[str, torch.Tensor]:
    """UniForm's training loss for one batch (``video``, ``audio``, ``y``, ``mask`` from the latent cache).

    ``model`` is a :class:`CaptionDropDiT` (or accelerate's wrapper of one). Returns ``loss``, ``mse`` and ``vb``
    scalars (see ``NoiseSchedule.training_loss``).
    """
    video, audio = batch["video"], batch["audio"]
    device = video.device
    task, t = draws.task.to(device), draws.t.to(device)
    x0 = pack(video, audio)
    noise = pack(draws.video_noise.to(device), draws.audio_noise.to(device))
    generated = generated_masks(task, video, audio, draws.given.to(device))
    x_t = schedule.q_sample(x0, t, noise, generated)
    video_t, audio_t = x_t[:, : video[0].numel()].view_as(video), x_t[:, video[0].numel() :].view_as(audio)

    drop, one_token = draws.drop_caption.to(device), draws.one_token_null.to(device)
    video_out, audio_out = model(video_t, audio_t, t.float(), batch["y"], batch["mask"], task, drop, one_token)
    cv, ca = video.shape[1], audio.shape[1]
    eps = pack(video_out[:, :cv], audio_out[:, :ca])
    var = pack(video_out[:, cv:], audio_out[:, ca:])
    return schedule.training_loss(
        eps, var, x0, x_t, t, noise, generated, snr_gamma=snr_gamma, high_noise_weight=high_noise_weight
    )
