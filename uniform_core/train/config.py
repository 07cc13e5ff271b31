"""The training recipe: one frozen dataclass per stage, read from one JSON file (``configs/uniform-tiny.json``).

A recipe trains the three codecs (video VAE, audio VAE, vocoder) and then the UniForm DiT on latents cached with
those codecs; the text encoder is frozen at its seeded initialisation, as FLAN-T5 is frozen in the paper.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import checks
from ..diffusion.guidance import guidance_scales
from ..diffusion.samplers import check_sampler
from ..errors import InputError
from ..model.uniform_dit import PRESETS, UniFormConfig
from ..tasks import MODEL_TASKS, TASKS, has_continue_token
from .synthetic import HELDOUT_FIRST_SEED

LATENT_STORES = ("auto", "cache", "shards")


@dataclass(frozen=True)
class DataConfig:
    """The training clips: synthetic seeds ``first_seed .. first_seed + num_clips - 1``, or at most ``num_clips``
    real clips from one of ``folder``, ``csv`` or ``tar`` (see ``uniform_core.train.sources``). Real clips are
    streamed: shuffled across shards by (seed, epoch) through a ``shuffle_buffer``, and clips that cannot be read,
    are too short or are silent are skipped and counted.

    ``latents``: where the DiT stage reads its latents from: ``"cache"`` (one file held in memory, for small sets),
    ``"shards"`` (the extract stage's safetensors shards of ``shard_clips`` clips, read lazily, for any size) or
    ``"auto"`` (shards for ``csv`` and ``tar``, the cache otherwise)."""

    num_clips: int = 2048
    first_seed: int = 0
    seconds: int = 2
    size: int = 64
    max_objects: int = 1
    codec_clips: int = 256  # the first clips, held in memory while the codecs train
    folder: str | None = None  # real data: video files with a .json ("caption") or .txt caption beside each
    csv: str | None = None  # real data: an AudioSet/VGGSound-style CSV (file or YouTube id, start seconds, caption)
    root: str | None = None  # the folder the CSV's files are in (default: the CSV's own folder)
    name_format: str = "{ytid}_{start:06d}.mp4"  # a CSV row's file name when it gives a YouTube id, not a file
    split: str | None = None  # only the CSV rows whose "split" column is this (VGGSound: "train" or "test")
    tar: str | None = None  # real data: WebDataset-style .tar shards: a folder of them or a glob ("shards/*.tar")
    shuffle_buffer: int = 1000  # clips drawn at random from this many; 1 streams in shard order
    latents: str = "auto"
    shard_clips: int = 256  # clips per latent shard file
    extract_batch: int = 8  # clips per encoder call in the extract stage
    decode_workers: int = 4  # threads per process decoding the next clips while the encoders run (0: none)

    def __post_init__(self):
        given = [name for name in ("folder", "csv", "tar") if getattr(self, name) is not None]
        if len(given) > 1:
            raise InputError(f"data: give one of folder, csv or tar; got {', '.join(given)}")
        if self.latents not in LATENT_STORES:
            raise InputError(f"data.latents must be one of {', '.join(LATENT_STORES)}; got {self.latents!r}")
        if self.latents == "cache" and self.streamed:
            raise InputError(f"data.latents 'cache' holds a whole data set in memory; a {given[0]} data set is read "
                             "as latent shards: set data.latents to 'shards' (or 'auto')")  # fmt: skip
        for name in ("num_clips", "seconds", "size", "shuffle_buffer", "shard_clips", "extract_batch"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise InputError(f"data.{name} must be a whole number >= 1; got {getattr(self, name)!r}")
        if not (isinstance(self.decode_workers, int) and self.decode_workers >= 0):
            raise InputError(f"data.decode_workers must be a whole number >= 0; got {self.decode_workers!r}")
        try:
            self.name_format.format(ytid="x", start=0)
        except (KeyError, IndexError, ValueError) as e:
            raise InputError(
                f"data.name_format {self.name_format!r} must name files with {{ytid}} and {{start}} only ({e!r})"
            ) from e

    @property
    def synthetic(self) -> bool:
        return self.folder is None and self.csv is None and self.tar is None

    @property
    def streamed(self) -> bool:
        """Whether the clips can only be streamed (CSV rows and tar members have no cheap random access)."""
        return self.csv is not None or self.tar is not None

    @property
    def uses_shards(self) -> bool:
        return self.latents == "shards" or (self.latents == "auto" and self.streamed)


@dataclass(frozen=True)
class CodecTrainConfig:
    """One codec's stage. ``kl_weight`` is ignored for the vocoder (it has no latent); ``adversarial_from``,
    ``disc_width`` and ``loudness_from`` are the vocoder's alone. The video VAE trains in two stages: its 2D VAE
    on frames (``steps``, ``batch_size`` frames), then its temporal VAE on the 2D latents (``stage2_steps``,
    ``batch_size`` 17-frame chunks, KL weight ``stage2_kl_weight``, default ``kl_weight``), then both decoders on
    pixels with the encoders frozen (``stage3_steps``, ``stage3_batch_size`` chunks, learning rate ``lr`` on a
    cosine). A temporal VAE trained long at KL 1e-6 can fold its latent's channels into one direction and hide the
    object's colour from the DiT (``uniform_core.eval.latent_probe``); a larger stage-2 KL keeps them apart."""

    preset: str = "tiny"
    pretrained: str | None = None  # a file/folder its loader reads (e.g. Open-Sora VAE, AudioLDM): used, not trained
    steps: int = 1000
    stage2_steps: int = 0
    stage3_steps: int = 0
    stage3_batch_size: int = 4
    batch_size: int = 8
    lr: float = 1e-3
    kl_weight: float = 1e-6
    stage2_kl_weight: float | None = None  # video VAE: the temporal stage's KL weight; None: kl_weight
    grad_clip: float = 1.0
    log_every: int = 25
    adversarial_from: int | None = None  # vocoder: the step after which HiFi-GAN's discriminators join; None: never
    disc_width: float = 0.125  # vocoder: the discriminators' channels, as a share of HiFi-GAN's
    loudness_from: int | None = None  # vocoder: the step after which the linear-magnitude STFT loss joins; None: never


@dataclass(frozen=True)
class DiTTrainConfig:
    """The multi-task DiT stage (paper IV-A2: AdamW-style optimiser, LR 1e-4 after 1000 linear warm-up steps).

    ``num_tasks`` 4 adds the internal ``"continue"`` task (T2AV with its first K latent frames of both modalities
    given clean, ``multitask_loss``), drawn with the 4th of ``task_weights``; 3 (the default) is the paper's model."""

    preset: str = "tiny"
    init_from: str | None = None  # "opensora:FILE" (STDiT-v3) or "pixart:FILE" (PixArt-Sigma XL/2) initial weights
    steps: int = 4000
    batch_size: int = 16  # global batch, split over processes
    lr: float = 1e-4
    warmup_steps: int = 1000
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.5  # paper III-A: text kept with 50% probability, for classifier-free guidance
    task_weights: tuple[float, ...] = (1.0, 1.0, 1.0)  # sampling weights of t2av, a2v, v2a (and continue)
    num_tasks: int = len(TASKS)  # the DiT's task tokens: 3, or 4 with "continue"
    snr_gamma: float | None = 5.0  # min-SNR-gamma step weighting (Hang et al. 2023); None = uniform weights
    high_noise_weight: float | None = None  # x0-style weight min(1/SNR, this) where SNR < 1; None = paper's
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    mixed_precision: str = "no"  # accelerate's: "no", "fp16", "bf16"
    max_minutes: float | None = None  # stop early (with a checkpoint) after this long; --resume continues
    grad_accumulation: int = 1  # micro-batches per optimizer step (accelerate's gradient_accumulation_steps)
    activation_checkpointing: bool = False  # recompute each transformer block in backward (less memory, ~30% slower)

    def __post_init__(self):
        extra = MODEL_TASKS[len(TASKS)]
        name = (
            f"dit.num_tasks ({len(TASKS)}: {', '.join(TASKS)}; {len(MODEL_TASKS)}: also the internal {extra!r} task)"
        )
        checks.integer(self.num_tasks, name, len(TASKS), len(MODEL_TASKS))
        tasks, w = MODEL_TASKS[: self.num_tasks], self.task_weights
        if not isinstance(w, tuple | list) or len(w) != self.num_tasks:
            hint = ""
            if isinstance(w, tuple | list) and len(w) == len(MODEL_TASKS) and self.num_tasks == len(TASKS):
                hint = f" (a 4th weight, for {extra!r}, needs dit.num_tasks {len(MODEL_TASKS)})"
            raise InputError(f"dit.task_weights must be {self.num_tasks} weights >= 0 for {tasks}{hint}; got {w!r}")
        for task, weight in zip(tasks, w, strict=True):
            checks.number(weight, f"dit.task_weights ({task})", 0.0)
        if sum(w) <= 0:
            raise InputError(f"dit.task_weights must not all be 0; got {w}")
        if has_continue_token(self.num_tasks) and not w[-1] > 0:
            raise InputError(
                f"dit.task_weights[{self.num_tasks - 1}] ({extra!r}) must be > 0 with dit.num_tasks "
                f"{self.num_tasks}: long T2AV sampling uses that token, so it must be trained; got {w}"
            )

    @property
    def model_config(self) -> UniFormConfig:
        """The DiT config this stage trains: preset ``preset`` with ``num_tasks`` task tokens."""
        if self.preset not in PRESETS:
            raise InputError(f"unknown DiT preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[self.preset], num_tasks=self.num_tasks)


@dataclass(frozen=True)
class TrainConfig:
    """A whole recipe: what one ``uniform-av train --config FILE`` runs."""

    name: str = "uniform-tiny"
    seed: int = 0
    out_dir: str = "runs/uniform-tiny"
    text_encoder_preset: str = "tiny"
    text_encoder_path: str | None = None  # a T5 folder/file to use instead of the seeded preset (e.g. FLAN-T5)
    sampler: str = "iddpm"  # written into the bundle: the sampler and CFG scale its weights sample best with
    cfg: float | dict[str, float] = 5.0  # one scale, or one per task ({"t2av": 2.0, "a2v": 1.0, "v2a": 1.0})
    data: DataConfig = field(default_factory=DataConfig)
    video_vae: CodecTrainConfig = field(default_factory=CodecTrainConfig)
    audio_vae: CodecTrainConfig = field(default_factory=CodecTrainConfig)
    vocoder: CodecTrainConfig = field(default_factory=CodecTrainConfig)
    dit: DiTTrainConfig = field(default_factory=DiTTrainConfig)

    def __post_init__(self):
        d = self.dit
        if not 0.0 <= d.caption_dropout <= 1.0:
            raise InputError(f"dit.caption_dropout must be in [0, 1]; got {d.caption_dropout!r}")
        if d.init_from is not None and d.init_from.partition(":")[0] not in ("opensora", "pixart"):
            raise InputError(f"dit.init_from must be 'opensora:FILE' or 'pixart:FILE'; got {d.init_from!r}")
        if d.mixed_precision not in ("no", "fp16", "bf16"):
            raise InputError(f"dit.mixed_precision must be 'no', 'fp16' or 'bf16'; got {d.mixed_precision!r}")
        for name, stage in (("video_vae", self.video_vae), ("audio_vae", self.audio_vae), ("vocoder", self.vocoder)):
            if stage.steps < 0 or stage.batch_size < 1:
                raise InputError(
                    f"{name}: steps must be >= 0 and batch_size >= 1; got {stage.steps}, {stage.batch_size}"
                )
            checks.number(stage.kl_weight, f"{name}.kl_weight", 0)
            if stage.stage2_kl_weight is not None:
                checks.number(stage.stage2_kl_weight, f"{name}.stage2_kl_weight", 0)
        if self.video_vae.stage3_batch_size < 1:
            raise InputError(f"video_vae.stage3_batch_size must be >= 1; got {self.video_vae.stage3_batch_size}")
        check_sampler(self.sampler)
        guidance_scales(self.cfg)
        if d.high_noise_weight is not None and not d.high_noise_weight >= 1:
            raise InputError(f"dit.high_noise_weight must be >= 1 or null; got {d.high_noise_weight!r}")
        if d.steps < 0 or d.batch_size < 1 or d.warmup_steps < 0:
            raise InputError(f"dit: steps, warmup_steps must be >= 0 and batch_size >= 1; got {d}")
        checks.integer(d.grad_accumulation, "dit.grad_accumulation", 1)
        checks.instance(d.activation_checkpointing, bool, "dit.activation_checkpointing")
        if d.checkpoint_every < 1 or d.keep_checkpoints < 1 or d.log_every < 1:
            raise InputError(
                f"dit: checkpoint_every, keep_checkpoints and log_every must be >= 1; got {d.checkpoint_every}, "
                f"{d.keep_checkpoints}, {d.log_every}"
            )
        if self.data.first_seed < 0:
            raise InputError(f"data.first_seed must be >= 0; got {self.data.first_seed}")
        if self.data.synthetic and self.data.first_seed + self.data.num_clips > HELDOUT_FIRST_SEED:
            raise InputError(
                f"data seeds {self.data.first_seed}..{self.data.first_seed + self.data.num_clips - 1} reach the "
                f"held-out evaluation seeds (from {HELDOUT_FIRST_SEED}); train on lower seeds"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> TrainConfig:
        """A copy with top-level fields, or ``"stage.field"`` keys, changed (e.g. ``{"dit.steps": 10}``)."""
        nested: dict[str, dict] = {}
        top = {}
        for key, value in changes.items():
            stage, _, name = key.partition(".")
            if name:
                nested.setdefault(stage, {})[name] = value
            else:
                top[key] = value
        for stage, fields_ in nested.items():
            top[stage] = dataclasses.replace(getattr(self, stage), **fields_)
        return dataclasses.replace(self, **top)


_STAGES = {"data": DataConfig, "video_vae": CodecTrainConfig, "audio_vae": CodecTrainConfig}
_STAGES |= {"vocoder": CodecTrainConfig, "dit": DiTTrainConfig}


def config_from_dict(raw: dict, source: str = "config") -> TrainConfig:
    """Build a :class:`TrainConfig` from plain JSON data; unknown keys are an InputError naming them."""
    if not isinstance(raw, dict):
        raise InputError(f"{source} must be a JSON object; got {type(raw).__name__}")
    kwargs = dict(_known(raw, TrainConfig, source))
    for stage, cls in _STAGES.items():
        if stage in kwargs:
            sub = kwargs[stage]
            if not isinstance(sub, dict):
                raise InputError(f"{source}: {stage!r} must be an object; got {sub!r}")
            values = _known(sub, cls, f"{source}: {stage}")
            kwargs[stage] = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    return TrainConfig(**kwargs)


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a recipe JSON file (see ``configs/uniform-tiny.json``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--config {str(path)!r} is not a file; pass a recipe JSON such as configs/uniform-tiny.json")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"--config {str(path)!r} is not valid JSON: {e}") from e
    return config_from_dict(raw, source=str(path))


def _known(raw: dict, cls, where: str) -> dict:
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - allowed - {"comment"})
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return {k: v for k, v in raw.items() if k != "comment"}
