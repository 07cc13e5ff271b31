"""Continuation: the first latent frames of both modalities are given and kept clean, the rest is generated.

This is the task noise scheme of A2V/V2A (paper III-A) applied along time instead of along a modality: the given
entries of the packed latent are the model's clean input at every step (their noise is zero, with the one shared
timestep the model sees for the whole latent) and are reset to their given value after every sampler step, exactly
as :func:`samplers.sample` treats a task's kept modality. It needs no training: the task token stays the window's
own task (t2av, a2v or v2a), so a T2AV window whose first second is given is still the T2AV model.

A model trained with a fourth task token (``num_tasks`` 4, :data:`~uniform_core.tasks.MODEL_TASKS`) learned exactly
this case for T2AV: the ``"continue"`` items of training keep their first K frames of both modalities clean and
are noised and learned on the rest (``train.multitask_loss``). :func:`continuation_task` then gives such a window
that token, when its given frames are shown clean as trained; A2V/V2A windows keep their own token.

Long generation (:mod:`uniform_core.long`) shows the given frames at each step's noise level instead by default
(``samplers.sample(renoise=...)``), which measured better on the tiny model; the mask is the same either way.

Given frames cover the same time window in both modalities: ``k`` video latent frames and the
``k * AUDIO_STEPS_PER_LATENT_FRAME`` audio latent steps that fall in them.
"""

from __future__ import annotations

import torch

from .. import checks
from ..tasks import AUDIO_STEPS_PER_LATENT_FRAME, CONTINUE, has_continue_token
from .task_latent import _item_shape, keep_mask


def continuation_keep_mask(task: str, video_shape, audio_shape, given_frames: int) -> torch.Tensor:
    """[D] bool over the packed layout: the task's kept modality plus the first ``given_frames`` video latent frames
    and their ``5 * given_frames`` audio latent steps. ``given_frames`` 0 is the task's own mask."""
    video_shape = _item_shape(video_shape, 4, "video_shape")
    audio_shape = _item_shape(audio_shape, 3, "audio_shape")
    frames = video_shape[1]
    name = f"given_frames (the window has {frames} latent frames and at least one must be generated)"
    checks.integer(given_frames, name, 0, frames - 1)
    given_video = torch.zeros(video_shape, dtype=torch.bool)
    given_video[:, :given_frames] = True
    given_audio = torch.zeros(audio_shape, dtype=torch.bool)
    given_audio[:, : given_frames * AUDIO_STEPS_PER_LATENT_FRAME] = True
    return keep_mask(task, video_shape, audio_shape) | torch.cat([given_video.flatten(), given_audio.flatten()])


def continuation_task(task: str, num_tasks: int, given_frames: int, given_noised: tuple[str, ...] = ()) -> str:
    """The model task (token) a ``task`` latent with ``given_frames`` given frames samples with on a model of
    ``num_tasks`` task tokens: ``"continue"`` for T2AV with given frames all shown clean (``given_noised`` empty)
    when the model learned that token, else ``task`` itself (training-free continuation)."""
    if task == "t2av" and given_frames > 0 and not given_noised and has_continue_token(num_tasks):
        return CONTINUE
    return task
