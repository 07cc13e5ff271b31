"""What a DiT training run costs before it starts: tokens, FLOP, memory per GPU and days (``train --estimate``).

Everything is counted from the model config and the latent layout of ``model/uniform_dit.py``, not measured, so it
runs in milliseconds anywhere. FLOP are 2 per multiply-add of every matmul the DiT runs (tests compare them with
``torch.utils.flop_counter`` on the real modules); memory is what each GPU holds for the chosen sharding plus the
tensors autograd saves per sample (tests compare them with the live tensors of a real CPU step).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from .. import checks
from ..errors import InputError
from ..model.uniform_dit import PRESETS, UniFormConfig, UniFormDiT
from ..tasks import LATENT_FRAMES_PER_CHUNK, VIDEO_DOWNSAMPLE
from .config import TrainConfig


@dataclass(frozen=True)
class GPUKind:
    """A GPU's dense bf16 tensor-core peak (no sparsity) and its memory, from the vendor's data sheet."""

    name: str
    bf16_tflops: float
    memory_gib: float


GPUS = {
    "a100": GPUKind("A100 SXM 80 GB", 312.0, 80),
    "a100-40gb": GPUKind("A100 SXM 40 GB", 312.0, 40),
    "h100": GPUKind("H100 SXM", 989.0, 80),
    "h100-pcie": GPUKind("H100 PCIe", 756.0, 80),
    "h200": GPUKind("H200 SXM", 989.0, 141),
    "b200": GPUKind("B200", 2250.0, 180),
    "l40s": GPUKind("L40S", 362.0, 48),
    "rtx4090": GPUKind("RTX 4090", 165.0, 24),
    "mi300x": GPUKind("MI300X", 1307.0, 192),
}
SHARDINGS = {
    "ddp": "DDP: every GPU holds everything",
    "fsdp": "FSDP full shard: weights, gradients, AdamW states and EMA split over the GPUs",
    "zero2": "DeepSpeed ZeRO-2: gradients and AdamW states split; bf16 weights and the EMA on every GPU",
    "zero3": "DeepSpeed ZeRO-3: everything split over the GPUs",
}
DEFAULT_MFU = 0.40  # model FLOP utilisation assumed for a DiT of this size under FSDP; `bench --train` measures it
GiB = 2**30

# Tensors autograd keeps per token of one STDiT3 block, in units of hidden_size values (see activation_bytes).
STREAM_SAVED = 4  # float32 even under autocast: the block input, norm1 output, the input of norm2, norm2 output
COMPUTE_SAVED = 16  # compute dtype: qkv input, q k v, q and k normalised (for the norm weight's gradient) and as
# attention reads them, attention out and its copy, proj out, the cross-attention input, its q and out, MLP input
# and MLP out; plus 2 x mlp_ratio for the MLP hidden (measured on the CPU kernels, tests/test_estimate.py)
BACKWARD_STREAM = 3  # the backward's peak above the saved tensors, in float32 (tokens, hidden) tensors (measured)


@dataclass(frozen=True)
class TokenLayout:
    """One clip's DiT sequence: ``frames`` latent frames of (video + audio + task) tokens, ``text`` caption tokens."""

    frames: int
    video: int  # video patch tokens per frame
    audio: int  # audio tokens per frame
    text: int

    @property
    def per_frame(self) -> int:
        return self.video + self.audio + 1

    @property
    def tokens(self) -> int:
        return self.frames * self.per_frame


def token_layout(config: UniFormConfig, seconds: int, height: int, width: int, text: int | None = None) -> TokenLayout:
    """The layout of a ``seconds`` s clip at ``height`` x ``width`` px; ``text`` defaults to model_max_length (the
    caption cache pads to its longest caption, at most that)."""
    _, ph, pw = config.patch_size
    video = (height // VIDEO_DOWNSAMPLE // ph) * (width // VIDEO_DOWNSAMPLE // pw)
    text = config.model_max_length if text is None else text
    return TokenLayout(seconds * LATENT_FRAMES_PER_CHUNK, video, config.audio_tokens_per_frame, text)


def forward_flop(config: UniFormConfig, layout: TokenLayout) -> dict[str, int]:
    """FLOP (2 per multiply-add) of one sample's DiT forward, by part: ``linear`` (every nn.Linear and the patch
    embedding convolutions), ``self_attention`` (QK^T and AV of the spatial and temporal blocks), ``cross_attention``
    (QK^T and AV over the caption tokens) and ``total``."""
    c, n, C, L = config, layout.tokens, config.hidden_size, layout.text
    hidden = int(C * c.mlp_ratio)
    per_token = 3 * C * C + C * C + 2 * C * C + 2 * C * hidden  # qkv, proj, cross q + proj, fc1 + fc2
    per_block = 2 * n * per_token + 2 * L * C * 2 * C  # + the caption's k and v
    pt, ph, pw = c.patch_size
    video_tokens, audio_tokens = layout.frames * layout.video, layout.frames * layout.audio
    audio_patch = c.audio_patch_size[0] * c.audio_patch_size[1]
    embed = (
        2 * video_tokens * c.in_channels * pt * ph * pw * C + 2 * audio_tokens * c.audio_in_channels * audio_patch * C
    )
    text = 2 * L * (c.caption_channels * C + C * C)  # y_proj
    conditions = 2 * 2 * (256 * C + C * C) + 2 * C * 6 * C  # timestep and fps embedders, t_block
    heads = (
        2 * video_tokens * C * pt * ph * pw * c.out_channels
        + 2 * audio_tokens * C * audio_patch * c.audio_out_channels
    )
    linear = 2 * c.depth * per_block + embed + text + conditions + heads
    self_attention = c.depth * 4 * n * C * (layout.per_frame + layout.frames)  # spatial over S, temporal over T
    cross_attention = 2 * c.depth * 4 * n * L * C
    total = linear + self_attention + cross_attention
    return {"linear": linear, "self_attention": self_attention, "cross_attention": cross_attention, "total": total}


def activation_bytes(config: UniFormConfig, layout: TokenLayout, mixed_precision: str, checkpointing: bool) -> dict:
    """Bytes of one sample's activations: ``saved``, what autograd holds at the end of the forward for the backward,
    and ``peak``, that plus the backward's working set (BACKWARD_STREAM float32 gradients of the residual stream, the
    saved tensors freed as it goes make up for the rest; with ``checkpointing`` also the recomputed block's).

    A block saves STREAM_SAVED float32 and COMPUTE_SAVED + 2 mlp_ratio compute-dtype tensors of (tokens, hidden)
    (autocast keeps LayerNorm and the residual stream in float32 and casts the inputs of each Linear), the caption's
    keys and values and float32 softmax statistics per head. With checkpointing a block keeps only its input.
    """
    c, n, C = config, layout.tokens, config.hidden_size
    compute = 4 if mixed_precision == "no" else 2
    hidden = int(C * c.mlp_ratio)
    block = n * C * (4 * STREAM_SAVED + compute * COMPUTE_SAVED) + n * hidden * 2 * compute
    block += layout.text * 2 * C * compute + 2 * n * c.num_heads * 4
    outside = n * C * (2 * 4 + compute) + layout.text * (c.caption_channels * 4 + 3 * C * compute)
    working = BACKWARD_STREAM * n * C * 4
    if checkpointing:
        saved = 2 * c.depth * n * C * 4 + outside
        return {"saved": saved, "peak": saved + block + working}
    saved = 2 * c.depth * block + outside
    return {"saved": saved, "peak": saved + working}


@functools.cache
def parameter_count(config: UniFormConfig) -> tuple[int, int]:
    """(all parameters, trained parameters) of the DiT, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = UniFormDiT(config)
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def state_bytes(config: UniFormConfig, sharding: str, gpus: int, mixed_precision: str) -> dict[str, float]:
    """Bytes per GPU of weights, gradients, AdamW states and EMA (and, when weights are sharded, the gathered
    blocks in flight). DDP and FSDP keep float32 weights and cast for compute; DeepSpeed keeps compute-dtype weights
    and a float32 master copy beside its AdamW states. The EMA is float32 and follows the parameters each process
    holds: split under FSDP (and assumed so under ZeRO-3), whole under DDP and ZeRO-2."""
    total, trained = parameter_count(config)
    compute = 4 if mixed_precision == "no" else 2
    block = _block_parameters(config)
    split = 1 if sharding == "ddp" else gpus
    if sharding in ("ddp", "fsdp"):
        weights = 4 * total / split
        master = 0.0
        grads = 4 * trained / split
    else:
        weights = compute * total / (gpus if sharding == "zero3" else 1)
        master = (4 * trained / gpus) if compute < 4 else 0.0
        grads = compute * trained / gpus
    ema_split = 1 if sharding in ("ddp", "zero2") else gpus  # the trainer's EMA follows each process's parameters
    states = {"weights": weights + master, "gradients": grads, "adamw": 8 * trained / split}
    states["ema"] = 4 * trained / ema_split
    if sharding in ("fsdp", "zero3"):
        states["gathered"] = 2 * 2 * block * compute  # current + prefetched block, weights and their gradients
    return states


@functools.cache
def _block_parameters(config: UniFormConfig) -> int:
    """Parameters of one STDiT3 block (the unit FSDP and ZeRO-3 gather at a time)."""
    with torch.device("meta"):
        block = UniFormDiT(dataclasses.replace(config, depth=1)).spatial_blocks[0]
    return sum(p.numel() for p in block.parameters())


@dataclass(frozen=True)
class TrainEstimate:
    """The numbers ``uniform-av train --estimate`` prints; :meth:`to_text` says how each was reached."""

    preset: str
    parameters: int
    seconds: int
    size: int
    layout: TokenLayout
    flop: dict[str, int]
    batch: int
    micro_batch: int
    grad_accumulation: int
    checkpointing: bool
    mixed_precision: str
    steps: int
    gpus: int
    gpu: str
    sharding: str
    mfu: float
    states: dict[str, float]
    activations: dict[bool, int]  # per sample, without (False) and with (True) activation checkpointing

    @property
    def step_flop(self) -> float:
        return self.flop["total"] * (4 if self.checkpointing else 3) * self.batch

    @property
    def memory_per_gpu(self) -> float:
        return sum(self.states.values()) + self.micro_batch * self.activations[self.checkpointing]

    @property
    def step_seconds(self) -> float:
        return self.step_flop / (self.gpus * GPUS[self.gpu].bf16_tflops * 1e12 * self.mfu)

    @property
    def days(self) -> float:
        return self.steps * self.step_seconds / 86400

    def to_text(self) -> str:
        lay, f, kind = self.layout, self.flop, GPUS[self.gpu]
        states = ", ".join(f"{k} {v / GiB:.2f}" for k, v in self.states.items())
        act = self.activations
        totals = {ac: sum(self.states.values()) + self.micro_batch * act[ac] for ac in (False, True)}
        fits = self.memory_per_gpu <= kind.memory_gib * GiB
        mode = "with" if self.checkpointing else "without"
        duration = f"{self.days:.1f} days" if self.days >= 1 else f"{24 * self.days:.1f} hours"
        return "\n".join(
            [
                f"UniForm DiT {self.preset} ({self.parameters / 1e6:,.1f} M parameters), {self.seconds} s at "
                f"{self.size}x{self.size}, global batch {self.batch}, mixed precision {self.mixed_precision}",
                f"tokens per sample: {lay.tokens:,} = {lay.frames} latent frames x ({lay.video} video + {lay.audio} "
                f"audio + 1 task); cross-attention over {lay.text} caption tokens",
                f"FLOP per forward (one sample): {f['total']:.3e} (linear layers {100 * f['linear'] / f['total']:.1f} "
                f"%, self-attention {100 * f['self_attention'] / f['total']:.1f} %, cross-attention "
                f"{100 * f['cross_attention'] / f['total']:.1f} %)",
                f"FLOP per training step: {self.step_flop:.3e} = {self.batch} samples x "
                f"{4 if self.checkpointing else 3} forwards (forward + backward"
                f"{' + recompute: activation checkpointing' if self.checkpointing else ''})",
                f"memory per GPU, {self.sharding} over {self.gpus} GPU(s) ({SHARDINGS[self.sharding]}), GiB: {states}",
                f"activations per sample: {act[False] / GiB:.2f} GiB without activation checkpointing, "
                f"{act[True] / GiB:.2f} GiB with it",
                f"per GPU: {self.micro_batch} sample(s) a micro-batch ({self.grad_accumulation} accumulation "
                f"step(s)): {totals[False] / GiB:.1f} GiB without activation checkpointing, {totals[True] / GiB:.1f} "
                f"GiB with it, of the {kind.name}'s {kind.memory_gib:g} GiB; the recipe runs {mode} it: "
                f"{'fits' if fits else 'does NOT fit'}",
                f"time: {self.steps:,} steps on {self.gpus} x {kind.name} ({kind.bf16_tflops:g} TFLOP/s dense bf16) "
                f"at an assumed {100 * self.mfu:.0f} % MFU: {self.step_seconds:.3g} s a step, {duration}",
            ]
        )


def estimate(
    recipe: TrainConfig, gpus: int = 8, gpu: str = "h100", sharding: str = "fsdp", mfu: float = DEFAULT_MFU
) -> TrainEstimate:
    """Estimate the DiT stage of ``recipe`` on ``gpus`` GPUs of kind ``gpu`` (a key of GPUS) with ``sharding``."""
    gpus = checks.integer(gpus, "--gpus", 1)
    gpu = checks.choice(gpu, GPUS, "--gpu")
    sharding = checks.choice(sharding, SHARDINGS, "--sharding")
    mfu = checks.number(mfu, "--mfu", 0, 1, above=True)
    d = recipe.dit
    config = PRESETS[checks.choice(d.preset, PRESETS, "dit.preset")]
    accumulation, checkpointing = d.grad_accumulation, d.activation_checkpointing
    if d.batch_size % (gpus * accumulation):
        raise InputError(
            f"dit.batch_size {d.batch_size} must split evenly over --gpus {gpus} x {accumulation} accumulation steps"
        )
    seconds, size = recipe.data.seconds, recipe.data.size
    layout = token_layout(config, seconds, size, size)
    precision = d.mixed_precision
    return TrainEstimate(
        preset=d.preset,
        parameters=parameter_count(config)[0],
        seconds=seconds,
        size=size,
        layout=layout,
        flop=forward_flop(config, layout),
        batch=d.batch_size,
        micro_batch=d.batch_size // (gpus * accumulation),
        grad_accumulation=accumulation,
        checkpointing=checkpointing,
        mixed_precision=precision,
        steps=d.steps,
        gpus=gpus,
        gpu=gpu,
        sharding=sharding,
        mfu=mfu,
        states=state_bytes(config, sharding, gpus, precision),
        activations={ac: activation_bytes(config, layout, precision, ac)["peak"] for ac in (False, True)},
    )
