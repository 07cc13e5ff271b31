"""The multi-task UniForm DiT trainer (paper III-A, III-C4, IV-A2) on accelerate.

Every item of every batch draws its task (T2AV, A2V, V2A), whether its caption is replaced by the learned null
caption (p = 0.5, for classifier-free guidance), a timestep and noise. Only the generated modality is noised; the
conditioning one enters clean, and the loss (masked noise MSE with min-SNR weighting plus the IDDPM learned-variance
term, ``NoiseSchedule.training_loss``) covers the generated entries only.

Exact resume: the data order and all of a step's random draws are pure functions of ``(seed, step, process)``, and a
checkpoint holds the model, EMA, optimizer, LR schedule and RNG states, so a resumed run repeats the loss curve of an
uninterrupted one. Checkpoints are safetensors + JSON only (``state_file``), never pickles, and a step folder appears
whole or not at all (``step_folders``). The same code runs on a CPU, one GPU, or many GPUs and nodes
under ``accelerate launch``; ``batch_size`` is the global batch, split over the processes.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.optimization import get_constant_schedule_with_warmup
from diffusers.training_utils import EMAModel

from ..checkpoint import load_matching, load_state_dict_file, read_component_config
from ..diffusion.schedule import NoiseSchedule
from ..diffusion.task_latent import pack
from ..errors import CheckpointError, InputError
from ..model.uniform_dit import CHECKPOINT_KIND, UniFormDiT
from ..tasks import TASKS
from . import step_folders
from .config import DiTTrainConfig
from .latent_cache import LatentCache
from .log import LossLog, progress_bar
from .state_file import check_state_file, load_state, restore_rng_states, rng_states, save_state

logger = logging.getLogger(__name__)

A2V, V2A = TASKS.index("a2v"), TASKS.index("v2a")
MODEL_FILE = "model.safetensors"
STATE_FILES = {  # what of the trainer each training-state file of a step folder holds
    "ema": "ema.safetensors",
    "optimizer": "optimizer.safetensors",
    "scheduler": "scheduler.safetensors",
    "scaler": "scaler.safetensors",  # fp16 only
}


@dataclass
class StepDraws:
    """The random choices of one step for a batch of B items."""

    task: torch.Tensor  # (B,) long index into TASKS
    drop_caption: torch.Tensor  # (B,) bool: caption replaced by the learned null caption
    one_token_null: torch.Tensor  # (B,) bool: a dropped caption takes the pipeline's no-text form (1 null token)
    t: torch.Tensor  # (B,) long timestep in 0..num_timesteps-1
    video_noise: torch.Tensor
    audio_noise: torch.Tensor


def draw_step(
    batch: int, video_shape, audio_shape, cfg: DiTTrainConfig, generator: torch.Generator, num_timesteps: int
) -> StepDraws:
    """Draw tasks (weighted by ``cfg.task_weights``), caption drops (``cfg.caption_dropout``), timesteps
    (uniform) and noise for ``batch`` items with ``generator``. Half of the dropped captions use the one-token null
    caption the pipeline runs with when no text is given, the other half the CFG form (null tokens under the
    prompt's mask)."""
    weights = torch.tensor(cfg.task_weights, dtype=torch.float64)
    return StepDraws(
        task=torch.multinomial(weights, batch, replacement=True, generator=generator),
        drop_caption=torch.rand(batch, generator=generator) < cfg.caption_dropout,
        one_token_null=torch.rand(batch, generator=generator) < 0.5,
        t=torch.randint(0, num_timesteps, (batch,), generator=generator),
        video_noise=torch.randn(batch, *video_shape, generator=generator),
        audio_noise=torch.randn(batch, *audio_shape, generator=generator),
    )


def generated_masks(task: torch.Tensor, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """(B, D) float in the packed layout: 1 on the entries item b's task generates, 0 on its clean condition."""
    gen_video = (task != V2A).float().view(-1, 1, 1, 1, 1).expand_as(video)
    gen_audio = (task != A2V).float().view(-1, 1, 1, 1).expand_as(audio)
    return pack(gen_video, gen_audio)


def diffusion_loss(
    model: torch.nn.Module,
    dit: UniFormDiT,
    schedule: NoiseSchedule,
    batch: dict[str, torch.Tensor],
    draws: StepDraws,
    snr_gamma: float | None,
    high_noise_weight: float | None = None,
) -> dict[str, torch.Tensor]:
    """UniForm's training loss for one batch (``video``, ``audio``, ``y``, ``mask`` from the latent cache).

    ``model`` is what is called (the DiT, or accelerate's wrapper of it); ``dit`` is the bare DiT that holds the
    null caption. Returns ``loss``, ``mse`` and ``vb`` scalars (see ``NoiseSchedule.training_loss``).
    """
    video, audio = batch["video"], batch["audio"]
    device = video.device
    task, t = draws.task.to(device), draws.t.to(device)
    x0 = pack(video, audio)
    noise = pack(draws.video_noise.to(device), draws.audio_noise.to(device))
    generated = generated_masks(task, video, audio)
    x_t = schedule.q_sample(x0, t, noise, generated)
    video_t, audio_t = x_t[:, : video[0].numel()].view_as(video), x_t[:, video[0].numel() :].view_as(audio)

    y, mask = batch["y"], batch["mask"]
    drop = draws.drop_caption.to(device)
    y = torch.where(drop[:, None, None], dit.null_caption(y.shape[0], y.shape[1]).to(y.dtype), y)
    first_only = torch.zeros_like(mask)
    first_only[:, 0] = True
    mask = torch.where((drop & draws.one_token_null.to(device))[:, None], first_only, mask)

    video_out, audio_out = model(video_t, audio_t, t.float(), y, mask, task)
    cv, ca = video.shape[1], audio.shape[1]
    eps = pack(video_out[:, :cv], audio_out[:, :ca])
    var = pack(video_out[:, cv:], audio_out[:, ca:])
    return schedule.training_loss(
        eps, var, x0, x_t, t, noise, generated, snr_gamma=snr_gamma, high_noise_weight=high_noise_weight
    )


class DiTTrainer:
    """Trains a UniForm DiT on a :class:`LatentCache`; checkpoints go to ``run_dir/checkpoints/step_XXXXXX``."""

    def __init__(
        self,
        cfg: DiTTrainConfig,
        cache: LatentCache,
        run_dir: str | Path,
        accelerator: Accelerator,
        seed: int = 0,
        log: LossLog | None = None,
    ):
        world = accelerator.num_processes
        if cfg.batch_size % world:
            raise InputError(f"dit.batch_size {cfg.batch_size} must divide evenly over {world} processes")
        if cfg.batch_size > len(cache):
            raise InputError(f"dit.batch_size {cfg.batch_size} is larger than the {len(cache)} cached clips")
        self.cfg, self.cache, self.accelerator, self.seed = cfg, cache, accelerator, seed
        self.run_dir = Path(run_dir)
        self.log = log or LossLog(self.run_dir / "train_log.jsonl", accelerator)
        self.schedule = NoiseSchedule()
        torch.manual_seed(seed)
        self.dit = initial_dit(cfg)
        if self.dit.config.caption_channels != cache.text.shape[-1]:
            raise InputError(
                f"DiT preset {cfg.preset!r} takes {self.dit.config.caption_channels}-d captions but the cached text "
                f"embeddings are {cache.text.shape[-1]}-d; use the text encoder that matches the preset"
            )
        optimizer = torch.optim.AdamW(
            self.dit.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        scheduler = get_constant_schedule_with_warmup(optimizer, cfg.warmup_steps)
        self.ema = EMAModel(self.dit.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=2 / 3)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(self.dit, optimizer, scheduler)
        self.ema.to(accelerator.device)
        self.step = 0

    # ---- data order and draws: pure functions of (seed, step, process) ----

    def batch_indices(self, step: int) -> torch.Tensor:
        """Cache rows of this process's share of global batch ``step`` (a fresh permutation every epoch)."""
        n, size = len(self.cache), self.cfg.batch_size
        per_epoch = n // size
        epoch, k = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        share = size // self.accelerator.num_processes
        start = k * size + self.accelerator.process_index * share
        return order[start : start + share]

    def step_generator(self, step: int) -> torch.Generator:
        rank = self.accelerator.process_index
        return torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 1_009 + rank + 1)

    # ---- one step ----

    def train_step(self) -> dict[str, float]:
        """Run global step ``self.step + 1``; returns its losses averaged over processes, and the LR used."""
        cfg, acc = self.cfg, self.accelerator
        batch = self.cache.batch(self.batch_indices(self.step), acc.device)
        draws = draw_step(
            batch["video"].shape[0], batch["video"].shape[1:], batch["audio"].shape[1:], cfg,
            self.step_generator(self.step), self.schedule.num_timesteps,
        )  # fmt: skip
        self.model.train()
        lr = self.scheduler.get_last_lr()[0]
        with acc.autocast():
            terms = diffusion_loss(
                self.model, acc.unwrap_model(self.model), self.schedule, batch, draws, cfg.snr_gamma,
                cfg.high_noise_weight,
            )  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        acc.backward(terms["loss"])
        if cfg.grad_clip:
            acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.step(acc.unwrap_model(self.model).parameters())
        self.step += 1
        values = {k: acc.reduce(v.detach(), "mean").item() for k, v in terms.items()}
        return {**values, "lr": lr}

    # ---- the loop ----

    def train(self, steps: int | None = None, max_minutes: float | None = None) -> int:
        """Train until global step ``steps`` (default ``cfg.steps``) or for ``max_minutes``; checkpoints every
        ``cfg.checkpoint_every`` steps and at the end. Returns the step reached. The loss log's DiT lines after the
        step it starts from are dropped first: they belong to the part of an interrupted run that is redone."""
        cfg, acc = self.cfg, self.accelerator
        self.log.truncate("dit", self.step)
        steps = cfg.steps if steps is None else steps
        start = time.monotonic()
        bar = progress_bar(acc, steps, "dit", initial=self.step)
        sums: dict[str, float] = {}
        count = 0  # steps summed since the last log line (fewer than log_every after resuming mid-interval)
        while self.step < steps:
            values = self.train_step()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.4f}")
            if self.step % cfg.log_every == 0 or self.step == steps:
                self.log.write(stage="dit", step=self.step, **{k: v / count for k, v in sums.items()})
                sums, count = {}, 0
            out_of_time = max_minutes is not None and time.monotonic() - start > 60 * max_minutes
            if self.step % cfg.checkpoint_every == 0 or self.step == steps or out_of_time:
                self.save_checkpoint()
            if out_of_time:
                logger.warning("dit: stopped at step %d after the %g-minute limit", self.step, max_minutes)
                break
        bar.close()
        return self.step

    # ---- checkpoints ----

    def save_checkpoint(self) -> Path:
        """Write ``run_dir/checkpoints/step_XXXXXX`` whole or not at all (see ``step_folders``): the DiT, EMA,
        optimizer, LR schedule (and fp16 loss scale) from the main process, each process's RNG states, and a marker
        listing them; then keep the newest ``cfg.keep_checkpoints`` complete ones."""
        acc = self.accelerator
        checkpoints = self.run_dir / "checkpoints"
        partial = step_folders.partial_folder(checkpoints, self.step)
        acc.wait_for_everyone()
        if acc.is_main_process:
            step_folders.clear_partial_folders(checkpoints)
            partial.mkdir(parents=True)
        acc.wait_for_everyone()
        save_state(partial / _rng_file(acc.process_index), rng_states())
        if acc.is_main_process:
            acc.unwrap_model(self.model).save(partial / MODEL_FILE)
            for name, state in self._states().items():
                save_state(partial / STATE_FILES[name], state)
        acc.wait_for_everyone()
        folder = step_folders.step_folder(checkpoints, self.step)
        if acc.is_main_process:
            info = {"step": self.step, "seed": self.seed, "processes": acc.num_processes}
            step_folders.publish(partial, folder, info)
            step_folders.prune(checkpoints, folder, self.cfg.keep_checkpoints)
        acc.wait_for_everyone()
        return folder

    def load_checkpoint(self, folder: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`.

        Every file is checked against the folder's marker and read before anything is changed; nothing is
        unpickled. A broken folder is a CheckpointError naming it and the file; another seed is an InputError.
        """
        folder = Path(folder)
        info = check_resumable(folder, self.seed)
        acc = self.accelerator
        wanted = {**STATE_FILES, "rng": _rng_file(acc.process_index)}
        if acc.scaler is None:
            wanted.pop("scaler")
        lacking = sorted(f for f in wanted.values() if f not in info["files"])
        if lacking:
            raise CheckpointError(
                f"checkpoint {str(folder)!r} lacks {', '.join(lacking)}: it was written by {info.get('processes')} "
                f"process(es), this run has {acc.num_processes}; resume with the same processes and mixed_precision"
            )
        model_state = load_state_dict_file(folder / MODEL_FILE)
        states = {name: load_state(folder / file) for name, file in wanted.items()}
        load_matching(acc.unwrap_model(self.model), model_state, f"checkpoint {folder / MODEL_FILE}")
        targets = {"ema": self.ema, "optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": acc.scaler}
        for name, state in states.items():
            try:
                if name == "rng":
                    restore_rng_states(state)
                else:
                    targets[name].load_state_dict(state)
            except (KeyError, TypeError, ValueError, RuntimeError) as e:
                raise CheckpointError(f"checkpoint {folder / wanted[name]} does not fit this trainer: {e!r}") from e
        self.ema.to(acc.device)
        self.step = info["step"]
        logger.info("resumed DiT training from %s at step %d", folder, self.step)

    def _states(self) -> dict:
        states = {"ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict()}
        states["scheduler"] = self.scheduler.state_dict()
        if self.accelerator.scaler is not None:
            states["scaler"] = self.accelerator.scaler.state_dict()
        return states

    def ema_dit(self) -> UniFormDiT:
        """A copy of the DiT holding the EMA weights, on the CPU, in eval mode."""
        dit = copy.deepcopy(self.accelerator.unwrap_model(self.model)).cpu()
        self.ema.copy_to(dit.parameters())
        return dit.eval()


def initial_dit(cfg: DiTTrainConfig) -> UniFormDiT:
    """A fresh DiT of ``cfg.preset``, or one whose shared part comes from ``cfg.init_from`` (paper IV-A2 starts
    from image-generation weights)."""
    if cfg.init_from is None:
        return UniFormDiT.from_preset(cfg.preset)
    from ..model.init_weights import init_from_opensora, init_from_pixart
    from ..model.uniform_dit import PRESETS

    kind, _, path = cfg.init_from.partition(":")
    init = init_from_opensora if kind == "opensora" else init_from_pixart
    dit, report = init(path, PRESETS[cfg.preset])
    logger.info("%s", report.summary())
    return dit


def check_resumable(folder: str | Path, seed: int) -> dict:
    """The marker of a complete step folder trained with ``seed`` whose files are what their names say (see
    ``step_folders.verify``; only file headers are read here)."""
    folder = Path(folder)
    info = step_folders.verify(folder)
    for name in info["files"]:
        if name == MODEL_FILE:
            read_component_config(folder / name, CHECKPOINT_KIND)
        elif name.endswith(".safetensors"):
            check_state_file(folder / name)
    if info["seed"] != seed:
        raise InputError(f"checkpoint {str(folder)!r} was trained with seed {info['seed']}, the config has {seed}")
    return info


def _rng_file(process_index: int) -> str:
    return f"random_states_{process_index}.safetensors"
