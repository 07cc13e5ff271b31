"""Classifier-free guidance around the UniForm DiT, in the sampler's packed layout.

Conditional and unconditional passes run as one DiT call on a batch of 2B (Open-Sora's forward_with_cfg):
inputs [x; x], captions [y; y_null]. The guided noise is eps_u + s (eps_c - eps_u) (Ho & Salimans 2022); the
learned variance is taken from the conditional half. Sound and picture may be guided by different scales in the
same batched call: the scale is then a vector over the packed layout (``cfg_video`` on video entries, ``cfg_audio``
on audio entries). A2V/V2A may also be guided away from the model without its clean condition (``condition_scale``):
a third pass in the same call runs the T2AV task token on the condition noised to the current step, and
eps += (s_c - 1) (eps_cond - eps_uncond_condition) on top of the text guidance.
"""

from __future__ import annotations

import math

import torch

from .. import checks
from ..errors import InputError
from ..tasks import TASKS, model_task_index, task_index
from .samplers import ModelFn
from .schedule import NoiseSchedule
from .task_latent import TaskLatent, keep_mask, pack, unpack

# The condition guidance scale the pipeline uses when none is given, per task (1 = off). Measured on uniform-tiny,
# 16 report-seed 2 s clips, 10 DDIM steps (README "Long clips"): V2A event F1 0.80 -> 0.92 at 3 (7 clips better, 0
# worse); A2V 0.90 -> 0.93 (5 better, 3 worse: within noise, so off: it would double A2V's DiT batch).
CONDITION_CFG = {"t2av": 1.0, "a2v": 1.0, "v2a": 3.0}


def guidance_scales(cfg) -> dict[str, float]:
    """The CFG scale of each task, from one number (every task) or a ``{task: scale}`` mapping naming all three.

    Per-task scales exist because the guidance that makes text-to-audio-video follow its prompt can pull A2V and
    V2A samples off their condition's timing (measured on uniform-tiny, see its model card)."""
    if isinstance(cfg, dict):
        if set(cfg) != set(TASKS):
            tasks = ", ".join(TASKS)
            raise InputError(f"cfg must be a number >= 0 or a mapping of each task ({tasks}) to one; got {cfg!r}")
        return {task: checks.cfg(cfg[task], f"cfg[{task!r}]") for task in TASKS}
    return dict.fromkeys(TASKS, checks.cfg(cfg))


def cfg_combine(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """eps_uncond + scale * (eps_cond - eps_uncond); scale 1 is the conditional model, 0 the unconditional one.
    ``scale`` is a number or a [D] tensor (one scale per packed entry). One ``lerp``: a single pass a step."""
    return torch.lerp(eps_uncond, eps_cond, scale)


def _pad_caption(y: torch.Tensor, mask: torch.Tensor | None, length: int, mask_dtype: torch.dtype):
    """Zero-pad caption y [B, L, C] to ``length`` tokens, with a mask (of ``mask_dtype`` if made here) hiding them."""
    if mask is None:
        mask = torch.ones(y.shape[:2], dtype=mask_dtype, device=y.device)
    pad = length - y.shape[1]
    y = torch.cat([y, y.new_zeros(y.shape[0], pad, y.shape[2])], dim=1)
    return y, torch.cat([mask, mask.new_zeros(mask.shape[0], pad)], dim=1)


def _expand_batch(name: str, value: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    if value is None or value.shape[0] == batch:
        return value
    if value.shape[0] == 1:
        return value.expand(batch, *value.shape[1:])
    raise InputError(f"{name} must have batch size 1 or {batch}; got {value.shape[0]}")


def make_model_fn(
    dit: torch.nn.Module,
    latent: TaskLatent,
    y: torch.Tensor | None,
    mask: torch.Tensor | None,
    y_null: torch.Tensor | None,
    mask_null: torch.Tensor | None,
    cfg_scale: float,
    audio_cfg_scale: float | None = None,
    condition_scale: float = 1.0,
    condition_noise: torch.Tensor | None = None,
    token: str | None = None,
) -> ModelFn:
    """A ``model_fn(x [B, D], t [B] long) -> (eps [B, D], v [B, D])`` for :func:`samplers.sample`.

    dit: the UniForm DiT (``dit(video, audio, timestep, y, mask, task, fps, height=, width=)`` returning
    (video_out [B, 2Cv, ...], audio_out [B, 2Ca, ...]) with eps in the first half of the channels, the variance value
    in the second). latent: gives the task, shapes, fps and pixel size. y: caption embeddings [B or 1, L, Dc] with
    mask [B or 1, L] (or None = all valid); None means no text (A2V/V2A may run without it): the null caption is the
    only condition and no guidance is applied. y_null / mask_null: the unconditional (or negative-prompt)
    caption; None uses ``dit.null_caption`` with y's length and mask, as Open-Sora does. Captions of different
    lengths are zero-padded and masked. cfg_scale >= 0 guides the video, and the audio too unless
    ``audio_cfg_scale`` >= 0 is given; when both are 1 only the conditional pass runs (batch B).
    condition_scale >= 0 (A2V/V2A only) guides away from the T2AV model shown the condition noised with
    ``condition_noise`` [B or 1, D] to the current step (see the module docstring); 1 is off. token: the model task
    whose token the DiT is given (``tasks.MODEL_TASKS``, e.g. ``"continue"`` from
    :func:`~uniform_core.diffusion.continuation.continuation_task`); None: the latent's task.
    """
    audio_cfg_scale = cfg_scale if audio_cfg_scale is None else audio_cfg_scale
    checks.cfg(cfg_scale, "cfg_scale")
    checks.cfg(audio_cfg_scale, "audio_cfg_scale")
    if y is None and y_null is None:
        raise InputError("make_model_fn needs y or y_null: with no caption at all pass y_null=dit.null_caption(...)")
    if y is None:  # text-free: the unconditional model is the whole prediction
        y, mask, y_null, mask_null, cfg_scale, audio_cfg_scale = y_null, mask_null, None, None, 1.0, 1.0
    checks.cfg(condition_scale, "condition_scale")
    conditioned = condition_scale != 1.0
    if conditioned and (latent.task == "t2av" or condition_noise is None):
        raise InputError(
            f"condition_scale {condition_scale} needs an a2v/v2a latent and condition_noise; got task "
            f"{latent.task!r} and {'no' if condition_noise is None else 'a'} condition_noise"
        )
    guided = cfg_scale != 1.0 or audio_cfg_scale != 1.0
    if guided and y_null is None:
        y_null, mask_null = dit.null_caption(y.shape[0], y.shape[1]).to(y), mask
    if guided and (y_null.shape[1] != y.shape[1] or (mask is None) != (mask_null is None)):
        length = max(y.shape[1], y_null.shape[1])
        mask_dtype = mask.dtype if mask is not None else mask_null.dtype if mask_null is not None else torch.bool
        y, mask = _pad_caption(y, mask, length, mask_dtype)
        y_null, mask_null = _pad_caption(y_null, mask_null, length, mask_dtype)

    video_shape, audio_shape = latent.video.shape[1:], latent.audio.shape[1:]
    video_channels, audio_channels = video_shape[0], audio_shape[0]
    scale: float | torch.Tensor = float(cfg_scale)
    if audio_cfg_scale != cfg_scale:  # one scale per packed entry: [video entries | audio entries]
        sizes = (math.prod(video_shape), math.prod(audio_shape))
        scale = torch.cat([torch.full((sizes[0],), float(cfg_scale)), torch.full((sizes[1],), float(audio_cfg_scale))])
    task, t2av = model_task_index(latent.task if token is None else token), task_index("t2av")
    keep = keep_mask(latent.task, video_shape, audio_shape)
    abar = NoiseSchedule().alphas_cumprod
    param = next(dit.parameters(), None)
    dtype = param.dtype if param is not None else latent.video.dtype
    constants: dict[int, dict] = {}  # per item batch: what no step changes, made at the first step

    def batch_constants(batch: int, x: torch.Tensor) -> dict:
        """The DiT's tasks, fps, captions and masks for ``batch`` items like ``x``; the guidance scale, the keep
        mask, the abar table and the condition noise on x's device."""
        tasks = [task, task] if guided else [task]
        cond_y, cond_mask = [_expand_batch("y", y, batch)], [_expand_batch("mask", mask, batch)]
        if guided:  # the same latent without the caption
            cond_y.append(_expand_batch("y_null", y_null, batch))
            cond_mask.append(_expand_batch("mask_null", mask_null, batch))
        if conditioned:  # the T2AV task with the first pass's caption
            tasks.append(t2av)
            cond_y.append(cond_y[0])
            cond_mask.append(cond_mask[0])
        n = len(tasks)
        return {
            "task": torch.tensor(tasks, device=x.device).repeat_interleave(batch),
            "fps": torch.full((n * batch,), float(latent.fps), device=x.device),
            "y": torch.cat(cond_y),
            "mask": None if cond_mask[0] is None else torch.cat(cond_mask),
            "scale": scale if isinstance(scale, float) else scale.to(x),
            "keep": keep.to(x.device),
            "abar": abar.to(x.device, x.dtype),
            "condition_noise": _expand_batch("condition_noise", condition_noise, batch).to(x) if conditioned else None,
        }

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = x.shape[0]
        if batch not in constants:
            constants[batch] = batch_constants(batch, x)
        c = constants[batch]
        inputs = [x, x] if guided else [x]
        if conditioned:  # the same caption without the clean condition: T2AV on the condition noised to step t
            a = c["abar"][t].view(-1, 1)
            inputs.append(torch.where(c["keep"], a.sqrt() * x + (1 - a).sqrt() * c["condition_noise"], x))
        n = len(inputs)
        video, audio = unpack(torch.cat(inputs), video_shape, audio_shape)
        video_out, audio_out = dit(
            video.to(dtype),
            audio.to(dtype),
            t.repeat(n).float(),
            c["y"],
            c["mask"],
            c["task"],
            c["fps"],
            height=latent.height,
            width=latent.width,
        )
        eps = pack(video_out[:, :video_channels], audio_out[:, :audio_channels]).to(x.dtype).chunk(n)
        var = pack(video_out[:batch, video_channels:], audio_out[:batch, audio_channels:]).to(x.dtype)
        guided_eps = cfg_combine(eps[0], eps[1], c["scale"]) if guided else eps[0]
        if conditioned:
            guided_eps = guided_eps + (condition_scale - 1.0) * (eps[0] - eps[-1])
        return guided_eps, var

    return model_fn
