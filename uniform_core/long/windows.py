"""Sampling a clip of any length in overlapping windows of the model's native length.

Each window continues the one before: the seconds it shares with what is already made are given and kept clean
(:mod:`~uniform_core.diffusion.continuation`), the rest is sampled; its conditioning modality (A2V audio, V2A video)
is the window's own part of the whole clip's condition. The clip's latent is tiny next to one window's activations
(60 s at 64x64 is 1 MB), so it is held whole and every window reads and writes its own slice of it: memory is
that of one window whatever the length.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .. import checks
from ..diffusion.task_latent import TaskLatent
from ..errors import InputError
from ..pipeline import Cancel, Progress, SampleOutput, TextConditioning, sample
from ..stages import Preview
from ..tasks import AUDIO_LATENT_STEPS_PER_SECOND, FRAMES_PER_CHUNK, LATENT_FRAMES_PER_CHUNK, has_continue_token

# How a window sees the seconds it shares with the one before: the modalities shown at each step's noise level
GIVEN_MODES = {"clean": (), "noised": ("video", "audio"), "clean-video": ("audio",)}
# The mode each task uses unless told (measured, see sample_long); V2A's picture is its condition either way
GIVEN_DEFAULTS = {"t2av": "clean-video", "a2v": "noised", "v2a": "noised"}


def default_given(dit: torch.nn.Module, task: str) -> str:
    """How ``task``'s windows see their given seconds unless told: as trained for T2AV on a model with the
    ``"continue"`` token (which those windows then sample with), else the training-free ``GIVEN_DEFAULTS``."""
    if task == "t2av" and has_continue_token(dit.config.num_tasks):
        return "clean"
    return GIVEN_DEFAULTS[task]


@dataclass(frozen=True)
class Window:
    """Seconds ``start`` to ``start + seconds`` of the clip; its first ``given`` seconds are already made."""

    start: int
    seconds: int
    given: int

    @property
    def stop(self) -> int:
        return self.start + self.seconds


def plan_windows(total: int, window: int, overlap: int, done: int = 0) -> list[Window]:
    """The windows that make seconds ``done`` to ``total`` of a clip, each ``window`` s long (or the whole clip if
    shorter) and sharing at least ``overlap`` s with what came before it. The last window is moved back to end
    at ``total``, so any whole-second length works; it then shares more than ``overlap``."""
    for name, value, low in (("total", total, 1), ("window", window, 1), ("overlap", overlap, 1), ("done", done, 0)):
        checks.integer(value, f"{name} (seconds)", low)
    if overlap >= window:
        raise InputError(f"overlap ({overlap} s) must be shorter than the window ({window} s)")
    if done >= total:
        raise InputError(f"nothing to make: {done} s of {total} s are already made")
    seconds = min(window, total)
    windows = [] if done else [Window(0, seconds, 0)]
    end = done or seconds
    while end < total:
        start = max(0, min(end - overlap, total - seconds))
        windows.append(Window(start, seconds, end - start))
        end = start + seconds
    return windows


def window_latent(latent: TaskLatent, window: Window) -> TaskLatent:
    """The part of ``latent`` that ``window`` covers, as a task latent of its own."""
    v, a = LATENT_FRAMES_PER_CHUNK, AUDIO_LATENT_STEPS_PER_SECOND
    return dataclasses.replace(
        latent,
        video=latent.video[:, :, window.start * v : window.stop * v],
        audio=latent.audio[:, :, window.start * a : window.stop * a],
        num_frames=window.seconds * FRAMES_PER_CHUNK,
        duration=float(window.seconds),
    )


@torch.no_grad()
def sample_long(
    dit: torch.nn.Module,
    latent: TaskLatent,
    text: TextConditioning | None = None,
    seed: int = 0,
    steps: int = 30,
    cfg: float = 5.0,
    sampler: str = "iddpm",
    batch_size: int = 1,
    window: int = 2,
    overlap: int = 1,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    cfg_audio: float | None = None,
    done: int = 0,
    given: str | None = None,
    preview: Preview | None = None,
    cfg_condition: float | None = None,
) -> SampleOutput:
    """:func:`pipeline.sample` for a ``latent`` of any whole-second duration, in windows of ``window`` s that
    share ``overlap`` s (see :func:`plan_windows`). ``done``: seconds at the start of ``latent`` that are already
    made (extension). Window ``w`` samples item ``i`` with seed ``seed + w * batch_size + i``. ``progress(step,
    total)`` counts the steps of all windows together, so one bar runs over the windows. ``given``: how a window
    sees the seconds it shares with the one before: ``"clean"`` (as A2V/V2A see their condition), ``"noised"``
    (at each step's noise level, replaced after every step; see :func:`samplers.sample`) or ``"clean-video"``
    (picture clean, sound noised); None: :func:`default_given` (``GIVEN_DEFAULTS[task]``, or ``"clean"`` with the
    ``"continue"`` token for T2AV on a model trained with it; another mode runs such a model training-free, with
    the T2AV token). Measured on the tiny model (README "Long clips"): a clean given second of sound dropped V2A
    event F1 on 8 s held-out clips to 0.44 and 0.00 where noised sound scored 0.53 and 0.59; a clean given picture
    lowers T2AV's frame difference at window seams (0.046 vs 0.049) but dropped 30 s A2V event F1 from 0.90 to 0.85
    (6 report clips), so T2AV sees the picture clean and A2V noised. ``preview``: as in :func:`pipeline.sample`,
    the window being sampled, with steps counted like ``progress``'s. ``cfg_condition``: guidance on the A2V/V2A
    condition (:func:`pipeline.sample`; None: the measured ``guidance.CONDITION_CFG[task]``, so the Long Sampler and
    Extend nodes get it too)."""
    given = default_given(dit, latent.task) if given is None else given
    if given not in GIVEN_MODES:
        raise InputError(f"given must be one of {', '.join(GIVEN_MODES)}; got {given!r}")
    seconds = int(latent.duration)
    if latent.duration != seconds or latent.video.shape[2] != seconds * LATENT_FRAMES_PER_CHUNK:
        raise InputError(f"long sampling needs a latent of whole seconds; got {latent.duration} s")
    plan = plan_windows(seconds, window, overlap, done)
    batch = max(batch_size, latent.batch_size)
    if latent.batch_size not in (1, batch):
        raise InputError(f"latent batch {latent.batch_size} does not match batch_size {batch_size}")
    video = latent.video.expand(batch, *latent.video.shape[1:]).clone()
    audio = latent.audio.expand(batch, *latent.audio.shape[1:]).clone()
    out = latent.with_latents(video, audio)
    total = len(plan) * steps
    for w, part in enumerate(plan):
        piece = window_latent(out, part)
        k = part.given * LATENT_FRAMES_PER_CHUNK  # the slice already holds what earlier windows made
        report = None if progress is None else (lambda step, _n, w=w: progress(w * steps + step, total))
        shown = None if preview is None else (lambda step, _n, v, a, w=w: preview(w * steps + step, total, v, a))
        noised = GIVEN_MODES[given]
        result = sample(
            dit,
            piece,
            text,
            seed + w * batch,
            steps,
            cfg,
            sampler,
            batch,
            report,
            cancel,
            cfg_audio,
            k,
            noised,
            shown,
            cfg_condition,
        )
        done_piece = window_latent(result.latent, dataclasses.replace(part, start=0))
        v, a = LATENT_FRAMES_PER_CHUNK, AUDIO_LATENT_STEPS_PER_SECOND
        video[:, :, part.start * v : part.stop * v] = done_piece.video
        audio[:, :, part.start * a : part.stop * a] = done_piece.audio
    return SampleOutput(latent=out, seeds=[seed + i for i in range(batch)])


def extend_latent(latent: TaskLatent, seconds: int, condition: torch.Tensor | None = None) -> TaskLatent:
    """``latent`` with ``seconds`` more at its end, zeros where they are to be generated. A2V and V2A need the
    ``condition`` latent of the added seconds (A2V: audio [1 or B, 8, 25 * seconds, 16]; V2A: video
    [1 or B, 4, 5 * seconds, h, w])."""
    checks.integer(seconds, "seconds to add", 1)
    added = {"video": seconds * LATENT_FRAMES_PER_CHUNK, "audio": seconds * AUDIO_LATENT_STEPS_PER_SECOND}
    parts = {}
    for name in ("video", "audio"):
        old = getattr(latent, name)
        new = old.new_zeros(old.shape[0], old.shape[1], added[name], *old.shape[3:])
        conditioned = (latent.task, name) in (("a2v", "audio"), ("v2a", "video"))
        if conditioned:
            if condition is None or tuple(condition.shape[1:]) != tuple(new.shape[1:]):
                got = None if condition is None else tuple(condition.shape)
                raise InputError(
                    f"extending a {latent.task} latent by {seconds} s needs the {name} condition of those seconds, "
                    f"[B, {', '.join(map(str, new.shape[1:]))}]; got {got}"
                )
            new = condition.to(old).expand(old.shape[0], *new.shape[1:])
        parts[name] = torch.cat([old, new], dim=2)
    total = int(latent.duration) + seconds
    return dataclasses.replace(latent, **parts, num_frames=total * FRAMES_PER_CHUNK, duration=float(total))
