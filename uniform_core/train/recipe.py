"""One command, one recipe: train the codecs, cache the latents, train the DiT, write a bundle folder.

A run folder holds everything a run makes, so an interrupted run continues where it stopped (``--resume``)::

    config.json          the recipe as run
    train_log.jsonl      every stage's losses
    codecs/              video_vae / audio_vae / vocoder / text_encoder .safetensors (a finished stage is kept)
    latents.safetensors  the latent + text-embedding cache of the training clips (data.latents "cache"), or
    latents/             the extract stage's latent shards + index.json (data.latents "shards": any data set size)
    checkpoints/step_*/  DiT checkpoints (model, EMA, optimizer, LR schedule, RNG states: safetensors + JSON)
    bundle/              the result: a bundle folder that ``load_bundle`` / ``--bundle`` / the nodes read

Every file of it is written atomically (``uniform_core.atomic``), and a resumed run checks the checkpoint and the
files it will reuse before it writes anything, so a refused ``--resume`` leaves the run folder as it was.

The text encoder is not trained: like FLAN-T5 in the paper it stays frozen, here at its seeded random
initialisation, which still gives each caption a distinct, deterministic embedding for the DiT to learn from.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import DistributedType

from ..atomic import write_text
from ..bundle import Bundle, save_bundle
from ..checkpoint import read_metadata
from ..codecs.audio import AudioCodec, load_audio_vae, load_vocoder
from ..codecs.text import TextEncoder, load_text_encoder
from ..codecs.video_vae import load_video_vae
from ..errors import InputError
from .codec_training import ClipPool, train_audio_vae, train_video_vae
from .config import TrainConfig
from .extract import extract_latents
from .latent_cache import LatentCache, load_or_build
from .latent_shards import LatentShards
from .log import LossLog
from .step_folders import STEP_NAME, newest_complete
from .trainer import DiTTrainer, check_resumable
from .vocoder_training import train_vocoder

logger = logging.getLogger(__name__)

CODEC_STAGES = ("video_vae", "audio_vae", "vocoder")


def make_accelerator(mixed_precision: str = "no", cpu: bool | None = None) -> Accelerator:
    """The accelerator every stage shares. The LR schedule is stepped once per optimizer step whatever the number
    of processes (``batch_size`` is already the global batch); unused-parameter search is on because the null
    caption only gets a gradient in steps that drop a caption."""
    kwargs = {} if cpu is None else {"cpu": cpu}
    return Accelerator(
        mixed_precision=mixed_precision,
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        **kwargs,
    )


def resolve_run(config: TrainConfig, out_dir: str | os.PathLike | None, resume: str | os.PathLike | None):
    """(run folder, checkpoint to resume from or None). ``resume`` is a run folder (its newest complete checkpoint
    is taken; newer broken ones are logged as skipped) or one of its ``step_*`` checkpoints (checked: a broken one is
    a CheckpointError naming it). Writes nothing."""
    if resume is not None:
        resume = Path(resume)
        if STEP_NAME.fullmatch(resume.name):
            check_resumable(resume, config.seed)
            return resume.parent.parent, resume
        if not (resume / "config.json").is_file():
            raise InputError(f"--resume {str(resume)!r} is neither a run folder (with config.json) nor a checkpoint")
        checkpoint = newest_complete(resume / "checkpoints")
        if checkpoint is None:
            logger.info("resume: %s has no complete DiT checkpoint; the DiT starts from step 0", resume)
        else:
            check_resumable(checkpoint, config.seed)
            logger.info("resume: newest complete DiT checkpoint of %s is %s", resume, checkpoint.name)
        return resume, checkpoint
    run = Path(out_dir if out_dir is not None else config.out_dir)
    if run.is_dir() and any(run.iterdir()):
        raise InputError(
            f"run folder {str(run)!r} is not empty; pass --resume {run} to continue that run, or choose another --out"
        )
    return run, None


def check_run_files(config: TrainConfig, run: Path, processes: int, sharded: bool = False) -> None:
    """Refuse, before anything is written, what would stop the run later: files it would reuse that cannot be read,
    a batch that does not split over the processes, and (``sharded``: under FSDP or DeepSpeed) a codec to train,
    as the codec stages train data parallel only."""
    micro = config.dit.grad_accumulation
    if config.dit.batch_size % (processes * micro):
        raise InputError(
            f"dit.batch_size {config.dit.batch_size} must divide evenly over {processes} processes x {micro} "
            "micro-batches (dit.grad_accumulation)"
        )
    reused = [run / "codecs" / f"{name}.safetensors" for name in (*CODEC_STAGES, "text_encoder")]
    reused.append(run / "latents.safetensors")
    for path in reused:
        if path.is_file():
            read_metadata(path)
    untrained = [
        n
        for n in CODEC_STAGES
        if getattr(config, n).pretrained is None and not (run / "codecs" / f"{n}.safetensors").is_file()
    ]
    if sharded and untrained:
        raise InputError(
            f"{', '.join(untrained)} would be trained under FSDP/DeepSpeed, which only the DiT stage supports: give "
            "their pretrained weights (e.g. Open-Sora VAE, AudioLDM), or train them first without the engine config "
            "and --resume the run folder with it"
        )
    pretrained = {f"{name}.pretrained": getattr(config, name).pretrained for name in CODEC_STAGES}
    pretrained["text_encoder_path"] = config.text_encoder_path
    for field, path in pretrained.items():
        if path is not None and not Path(path).exists():
            raise InputError(f"{field} {path!r} does not exist; give a file or folder its loader reads")


STAGES = ("all", "codecs", "extract")


def train_bundle(
    config: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    stage: str = "all",
) -> Path:
    """Run the whole recipe; returns the bundle folder (``<run>/bundle``), written once the DiT reaches
    ``config.dit.steps`` (a run stopped by ``dit.max_minutes`` returns its run folder's latest bundle path all
    the same, written from the EMA weights of the step reached). ``stage="codecs"`` stops after the codec stages
    and returns their folder (``<run>/codecs``); ``stage="extract"`` stops after the latent shards and returns
    their folder (``<run>/latents``); ``--resume`` the run to go on from them (the DiT's 2 h then run alone)."""
    if stage not in STAGES:
        raise InputError(f"--stage must be one of {', '.join(STAGES)}; got {stage!r}")
    if stage == "extract" and not config.data.uses_shards:
        raise InputError('--stage extract writes latent shards: set data.latents to "shards" in the recipe')
    # the codecs get their own accelerator so that DiT checkpoints hold the DiT's state only
    codec_acc = make_accelerator(config.dit.mixed_precision)
    started = time.monotonic()
    run, checkpoint = resolve_run(config, out_dir, resume)
    engine = codec_acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    check_run_files(config, run, codec_acc.num_processes, sharded=engine)
    codec_acc.wait_for_everyone()  # every process has looked at the run folder before the main one writes to it
    if codec_acc.is_main_process:
        write_text(run / "config.json", json.dumps(config.to_dict(), indent=1) + "\n")
    log = LossLog(run / "train_log.jsonl", codec_acc)

    video_vae, audio_vae, vocoder, text_encoder = train_codecs(config, run / "codecs", codec_acc, log)
    if stage == "codecs":
        return run / "codecs"
    codec = AudioCodec(audio_vae, vocoder)

    if config.data.uses_shards:  # every process encodes its share
        video_vae.to(codec_acc.device), codec.to(codec_acc.device), text_encoder.to(codec_acc.device)
        extract_latents(
            config.data, run / "latents", video_vae, codec, text_encoder, codec_acc, config.seed,
            _max_text_tokens(config),
        )  # fmt: skip
        video_vae.cpu(), codec.cpu(), text_encoder.cpu()
        if stage == "extract":
            return run / "latents"
        cache = LatentShards(run / "latents")
    else:
        cache_path = run / "latents.safetensors"
        if codec_acc.is_main_process:
            video_vae.to(codec_acc.device), codec.to(codec_acc.device), text_encoder.to(codec_acc.device)
            load_or_build(
                cache_path, config.data, video_vae, codec, text_encoder, max_text_tokens=_max_text_tokens(config)
            )
            video_vae.cpu(), codec.cpu(), text_encoder.cpu()
        codec_acc.wait_for_everyone()
        cache = LatentCache.load(cache_path)

    acc = make_accelerator(config.dit.mixed_precision)

    trainer = DiTTrainer(config.dit, cache, run, acc, seed=config.seed, log=log)
    if checkpoint is not None:
        trainer.load_checkpoint(checkpoint)
    trainer.train(max_minutes=config.dit.max_minutes)

    bundle_dir = run / "bundle"
    dit = trainer.ema_dit()  # every process: under FSDP this gathers the shards
    if acc.is_main_process:
        bundle = Bundle(
            dit=dit,
            video_vae=video_vae,
            audio_codec=codec,
            text_encoder=text_encoder,
            name=config.name,
            height=config.data.size,
            width=config.data.size,
            duration=config.data.seconds,
            sampler=config.sampler,
            cfg=config.cfg,
        )
        summary = {"dit_step": trainer.step, "wall_time_s": round(time.monotonic() - started, 1)}
        save_bundle(bundle, bundle_dir, extra={"training.json": json.dumps(summary) + "\n"})
        logger.info("bundle written to %s (DiT step %d)", bundle_dir, trainer.step)
    acc.wait_for_everyone()
    return bundle_dir


def train_codecs(config: TrainConfig, folder: Path, acc: Accelerator, log: LossLog):
    """Video VAE, audio VAE, vocoder (each loaded from its ``pretrained`` path, or trained unless its file is
    already in ``folder``) and the frozen text encoder (``text_encoder_path``, or made from the seed once)."""
    files = {name: folder / f"{name}.safetensors" for name in (*CODEC_STAGES, "text_encoder")}
    for name in CODEC_STAGES:
        if getattr(config, name).pretrained is not None:
            files[name] = Path(getattr(config, name).pretrained)
    if config.text_encoder_path is not None:
        files["text_encoder"] = Path(config.text_encoder_path)
    pool = None
    if not all(files[name].exists() for name in CODEC_STAGES):
        pool = ClipPool(config.data, config.data.codec_clips)
    trainers = {"video_vae": train_video_vae, "audio_vae": train_audio_vae, "vocoder": train_vocoder}
    loaders = {"video_vae": load_video_vae, "audio_vae": load_audio_vae, "vocoder": load_vocoder}
    modules = {}
    for i, name in enumerate(CODEC_STAGES):
        if not files[name].exists():
            log.truncate(name, 0)
            module = trainers[name](pool, getattr(config, name), acc, log, config.seed + i + 1)
            if acc.is_main_process:
                module.save(files[name])
            acc.wait_for_everyone()
        modules[name] = loaders[name](files[name]).eval().requires_grad_(False)
    if not files["text_encoder"].exists():
        if acc.is_main_process:
            torch.manual_seed(config.seed)
            TextEncoder.from_preset(config.text_encoder_preset).save(files["text_encoder"])
        acc.wait_for_everyone()
    text_encoder = load_text_encoder(files["text_encoder"]).eval().requires_grad_(False)
    return modules["video_vae"], modules["audio_vae"], modules["vocoder"], text_encoder


def _max_text_tokens(config: TrainConfig) -> int:
    from ..model.uniform_dit import PRESETS

    return PRESETS[config.dit.preset].model_max_length
