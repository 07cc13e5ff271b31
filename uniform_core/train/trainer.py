"""The multi-task UniForm DiT trainer (paper III-A, IV-A2) on accelerate; the loss is ``multitask_loss``.

Exact resume: the data order and all of a step's random draws are pure functions of ``(seed, step)``, drawn for
the global batch of which each process takes its share, so the losses do not depend on how many processes or
micro-batches (``grad_accumulation``) the batch is split into; a checkpoint holds the model, EMA, optimizer, LR
schedule and RNG states, so a resumed run repeats the loss curve of an uninterrupted one. Checkpoints are
safetensors + JSON only (``state_file``), never pickles, and a step folder appears whole or not at all
(``step_folders``). The same code runs on a CPU, one GPU, or many GPUs and nodes under ``accelerate launch``
(data parallel, or FSDP from ``configs/accelerate_fsdp.yaml``: then parameters, EMA and optimizer state are
sharded and each process writes its own shards, see ``sharded_checkpoint``); ``batch_size`` is the global batch.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from diffusers.optimization import get_constant_schedule_with_warmup
from diffusers.training_utils import EMAModel

from ..checkpoint import load_matching, load_state_dict_file, read_component_config
from ..diffusion.schedule import NoiseSchedule
from ..empty_init import empty_init
from ..errors import CheckpointError, InputError
from ..model.uniform_dit import CHECKPOINT_KIND, UniFormDiT
from . import step_folders
from .config import DiTTrainConfig
from .distributed import full, is_sharded, layout, local_parameters
from .latent_cache import LatentCache
from .log import LossLog, progress_bar
from .multitask_loss import CaptionDropDiT, StepDraws, diffusion_loss, draw_step
from .sharded_checkpoint import is_tensor_shard, load_shards, read_shard_header, save_shards, shard_name
from .state_file import check_state_file, load_state, restore_rng_states, rng_states, save_state

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILES = {  # what of the trainer each training-state file of a step folder holds
    "ema": "ema.safetensors",
    "optimizer": "optimizer.safetensors",
    "scheduler": "scheduler.safetensors",
    "scaler": "scaler.safetensors",  # fp16 only
}
STATE_NAMES = (*STATE_FILES, "rng")  # what load_state reads (the rest are the DiT's weights or shard files)
SHARDED = ("model", "ema", "optimizer")  # what each FSDP process writes a shard of (``sharded_checkpoint``)


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
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            raise InputError(
                "DiT training under DeepSpeed is not supported: its ZeRO states are saved as pickles, which resume "
                "would have to unpickle; use FSDP (configs/accelerate_fsdp.yaml)"
            )
        world, micro = accelerator.num_processes, cfg.grad_accumulation
        if cfg.batch_size % (world * micro):
            raise InputError(
                f"dit.batch_size {cfg.batch_size} must divide evenly over {world} processes x {micro} micro-batches "
                "(dit.grad_accumulation)"
            )
        if cfg.batch_size > len(cache):
            raise InputError(f"dit.batch_size {cfg.batch_size} is larger than the {len(cache)} cached clips")
        self.cfg, self.cache, self.accelerator, self.seed = cfg, cache, accelerator, seed
        self.run_dir = Path(run_dir)
        self.log = log or LossLog(self.run_dir / "train_log.jsonl", accelerator)
        self.schedule = NoiseSchedule()
        torch.manual_seed(seed)
        self.dit = initial_dit(cfg)
        if self.dit.config.caption_channels != cache.caption_channels:
            raise InputError(
                f"DiT preset {cfg.preset!r} takes {self.dit.config.caption_channels}-d captions but the cached text "
                f"embeddings are {cache.caption_channels}-d; use the text encoder that matches the preset"
            )
        self.dit.gradient_checkpointing = cfg.activation_checkpointing
        optimizer = torch.optim.AdamW(
            self.dit.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        scheduler = get_constant_schedule_with_warmup(optimizer, cfg.warmup_steps)
        accelerator.gradient_accumulation_steps = micro
        # under FSDP, prepare shards self.dit in place: its parameters become this process's shards
        prepared = accelerator.prepare(CaptionDropDiT(self.dit), optimizer, scheduler)
        self.model, self.optimizer, self.scheduler = prepared
        self.sharded = is_sharded(self.dit)
        for p in self.dit.parameters():
            layout(p)  # a sharding the checkpoints cannot write (e.g. hybrid) is refused now, not at the first save
        self.ema = EMAModel(local_parameters(self.dit), decay=cfg.ema_decay, use_ema_warmup=True, power=2 / 3)
        self.ema.to(accelerator.device)
        self.step = 0

    # ---- data order and draws: pure functions of (seed, step) ----

    def batch_indices(self, step: int) -> torch.Tensor:
        """Cache rows of this process's share of global batch ``step`` (a fresh permutation every epoch)."""
        n, size = len(self.cache), self.cfg.batch_size
        per_epoch = n // size
        epoch, k = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        return order[k * size : (k + 1) * size][self._share()]

    def step_draws(self, step: int, video_shape, audio_shape) -> StepDraws:
        """This process's share of the draws of global batch ``step``."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 1_009 + 1)
        steps = self.schedule.num_timesteps
        draws = draw_step(self.cfg.batch_size, video_shape, audio_shape, self.cfg, generator, steps)
        return draws.part(self._share())

    def _share(self) -> slice:
        share = self.cfg.batch_size // self.accelerator.num_processes
        return slice(self.accelerator.process_index * share, (self.accelerator.process_index + 1) * share)

    # ---- one step ----

    def train_step(self) -> dict[str, float]:
        """Run global step ``self.step + 1`` (``grad_accumulation`` micro-batches, then one optimizer step);
        returns its losses averaged over the global batch, and the LR used."""
        cfg, acc = self.cfg, self.accelerator
        rows = self.batch_indices(self.step)
        micro = len(rows) // cfg.grad_accumulation
        parts = [slice(i * micro, (i + 1) * micro) for i in range(cfg.grad_accumulation)]
        batches = [self.cache.batch(rows[items], acc.device) for items in parts]  # latents: small beside activations
        draws = self.step_draws(self.step, batches[0]["video"].shape[1:], batches[0]["audio"].shape[1:])
        self.model.train()
        lr = self.scheduler.get_last_lr()[0]
        sums: dict[str, torch.Tensor] = {}
        for items, batch in zip(parts, batches, strict=True):
            with acc.accumulate(self.model):  # gradients are synced, clipped and applied at the last micro-batch
                with acc.autocast():
                    terms = diffusion_loss(
                        self.model, self.schedule, batch, draws.part(items), cfg.snr_gamma, cfg.high_noise_weight
                    )
                acc.backward(terms["loss"])
                if cfg.grad_clip and acc.sync_gradients:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0) + v.detach() / cfg.grad_accumulation
        self.scheduler.step()
        self.ema.step(local_parameters(self.dit))
        self.step += 1
        values = {k: acc.reduce(v, "mean").item() for k, v in sums.items()}
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
        """Write ``run_dir/checkpoints/step_XXXXXX`` whole or not at all (see ``step_folders``): the DiT, EMA and
        optimizer (from the main process, or under FSDP each process its shards), the LR schedule (and fp16 loss
        scale), each process's RNG states, and a marker listing them all; then keep the newest
        ``cfg.keep_checkpoints`` complete ones."""
        acc = self.accelerator
        checkpoints = self.run_dir / "checkpoints"
        partial = step_folders.partial_folder(checkpoints, self.step)
        acc.wait_for_everyone()
        if acc.is_main_process:
            step_folders.clear_partial_folders(checkpoints)
            partial.mkdir(parents=True)
        acc.wait_for_everyone()
        save_state(partial / _rng_file(acc.process_index), rng_states())
        if self.sharded:
            config = self.dit.config.to_dict()
            save_shards(partial, self.dit, self.ema, self.optimizer, acc.process_index, acc.num_processes, config)
        if acc.is_main_process:
            if not self.sharded:
                self.dit.save(partial / MODEL_FILE)
            for name, state in self._states().items():
                save_state(partial / STATE_FILES[name], state)
        acc.wait_for_everyone()
        folder = step_folders.step_folder(checkpoints, self.step)
        if acc.is_main_process:
            info = {"step": self.step, "seed": self.seed, "processes": acc.num_processes, "sharded": self.sharded}
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
        if bool(info.get("sharded")) != self.sharded:
            written = "sharded by FSDP" if info.get("sharded") else "without sharding"
            raise CheckpointError(
                f"checkpoint {str(folder)!r} was written {written}, this run {'is' if self.sharded else 'is not'} "
                "sharded; resume with the accelerate config that wrote it (or export it: uniform-av train --export)"
            )
        wanted = self._files()
        if acc.scaler is None:
            wanted.pop("scaler")
        lacking = sorted(f for f in wanted.values() if f not in info["files"])
        if lacking:
            raise CheckpointError(
                f"checkpoint {str(folder)!r} lacks {', '.join(lacking)}: it was written by {info.get('processes')} "
                f"process(es), this run has {acc.num_processes}; resume with the same processes and mixed_precision"
            )
        model_state = None if self.sharded else load_state_dict_file(folder / wanted.pop("model"))
        states = {name: load_state(folder / file) for name, file in wanted.items() if name in STATE_NAMES}
        if self.sharded:
            load_shards(folder, self.dit, self.ema, self.optimizer, acc.process_index, acc.num_processes)
        else:
            load_matching(self.dit, model_state, f"checkpoint {folder / MODEL_FILE}")
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

    def _files(self) -> dict[str, str]:
        """The files this process reads back from a step folder, by what they restore."""
        acc = self.accelerator
        files = {**STATE_FILES, "rng": _rng_file(acc.process_index)}
        if not self.sharded:
            return {"model": MODEL_FILE, **files}
        for what in SHARDED:  # each process's own shard files replace the main process's whole ones
            files.pop(what, None)
            files[f"{what} shard"] = shard_name(what, acc.process_index, acc.num_processes)
        return files

    def _states(self) -> dict:
        states = {"scheduler": self.scheduler.state_dict()}
        if not self.sharded:
            states = {"ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(), **states}
        if self.accelerator.scaler is not None:
            states["scaler"] = self.accelerator.scaler.state_dict()
        return states

    def ema_dit(self) -> UniFormDiT:
        """A copy of the DiT holding the EMA weights, on the CPU, in eval mode. Under FSDP the shards are gathered
        (a collective: call it on every process)."""
        if not self.sharded:
            dit = copy.deepcopy(self.dit).cpu()
            self.ema.copy_to(dit.parameters())
            return dit.eval()
        state = {name: full(t) for name, t in self.dit.state_dict().items()}
        for (name, p), shadow in zip(self.dit.named_parameters(), self.ema.shadow_params, strict=True):
            state[name] = full(p, shadow)
        with empty_init():
            dit = UniFormDiT(self.dit.config)
        dit.to_empty(device="cpu")
        load_matching(dit, state, "gathered FSDP shards")
        return dit.eval()


def initial_dit(cfg: DiTTrainConfig) -> UniFormDiT:
    """A fresh DiT of ``cfg.preset`` with ``cfg.num_tasks`` task tokens, or one whose shared part comes from
    ``cfg.init_from`` (paper IV-A2 starts from image-generation weights)."""
    if cfg.init_from is None:
        return UniFormDiT(cfg.model_config)
    from ..model.init_weights import init_from_opensora, init_from_pixart

    kind, _, path = cfg.init_from.partition(":")
    init = init_from_opensora if kind == "opensora" else init_from_pixart
    dit, report = init(path, cfg.model_config)
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
        elif is_tensor_shard(name):
            read_shard_header(folder / name)
        elif name.endswith(".safetensors"):
            check_state_file(folder / name)
    if info["seed"] != seed:
        raise InputError(f"checkpoint {str(folder)!r} was trained with seed {info['seed']}, the config has {seed}")
    return info


def _rng_file(process_index: int) -> str:
    return f"random_states_{process_index}.safetensors"
