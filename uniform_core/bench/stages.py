"""`uniform-av bench`: time and peak memory of every stage, and of each task end to end.

Times are medians over ``repeats`` runs after one warm-up run. Peak memory is the growth above the stage's starting
point: the largest resident-set size on the CPU (sampled every millisecond from /proc), ``max_memory_allocated`` on
CUDA. Models have random weights (``xl`` = the paper's sizes), so nothing is downloaded and the numbers measure
speed only. Sampler rows run the real DiT and time what happens inside its calls, so ``overhead`` is everything
the sampling loop adds around the model (scheduler steps, guidance, packing). That difference of two large times
also holds whatever preempts the process between DiT calls on a busy machine, so the rows also time the loop alone,
with the DiT's output replayed after each run (``replayed_outside_s``): the overhead measured directly.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict

import torch

from .. import checks
from ..bundle import Bundle, random_tiny_bundle
from ..diffusion.guidance import make_model_fn
from ..diffusion.samplers import SAMPLERS
from ..errors import InputError
from ..media import AudioClip, VideoClip
from ..pipeline import (
    UniFormPipeline,
    decode_audio,
    decode_video,
    encode_audio,
    encode_text,
    encode_video,
    make_task_latent,
    sample,
)
from ..tasks import FRAMES_PER_CHUNK, SAMPLE_RATE, TASKS, VIDEO_FPS
from .compare import compare_with_plain
from .decode_memory import bench_audio_decode, bench_video_decode
from .growth import bench_dit_growth
from .meters import Measurement, device_name, measure, sync
from .startup import bench_startup

PRESETS = ("tiny", "xl")
PROMPT = "a red ball bounces twice on a blue floor"
CFG = 5.0


def random_bundle(preset: str, device: str | torch.device = "cpu") -> Bundle:
    """Random-weight bundle: ``tiny`` (the embedded default's sizes, 64x64, 2 s) or ``xl`` (DiT XL/2, Open-Sora VAE
    v1.2, AudioLDM-S VAE + HiFi-GAN, FLAN-T5-large with the byte tokenizer; 256x256, 4 s), built on ``device``."""
    if preset == "tiny":
        return random_tiny_bundle(0)
    if preset != "xl":
        raise InputError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    from .codecs.audio import AudioCodec, AudioVAE, Vocoder
    from .codecs.text import TextEncoder
    from .codecs.video_vae import VideoVAE
    from .model.uniform_dit import UniFormDiT

    torch.manual_seed(0)
    with torch.device(device):  # initialise the big three in place: 1.9B parameters are slow to fill on the CPU
        dit = UniFormDiT.from_preset("xl")
        video_vae = VideoVAE.from_preset("opensora-v1.2")
        text_encoder = TextEncoder.from_preset("flan-t5-large-random")
    audio_codec = AudioCodec(AudioVAE.from_preset("audioldm-s-full"), Vocoder.from_preset("audioldm-s-full"))
    bundle = Bundle(dit, video_vae, audio_codec, text_encoder, "xl (random weights)", 256, 256, 4)
    for module in bundle.modules().values():
        module.eval().requires_grad_(False)
    return bundle


def run_bench(
    preset: str = "tiny",
    device: str = "cpu",
    steps: int = 30,
    repeats: int = 3,
    seconds: int | None = None,
    compile_dit: bool = False,
    decode_memory: bool = False,
    startup: bool = False,
    growth: bool = False,
    compare: bool = False,
) -> dict:
    """Benchmark every stage, every sampler and every task for a random-weight ``preset`` bundle on ``device``.

    The DiT runs in bf16 on CUDA (its norms, timestep embedding and attention softmax compute in fp32), fp32 on
    the CPU; the codecs run in fp32. ``seconds`` defaults to the preset's clip length. ``decode_memory`` adds
    :func:`bench_video_decode` for 4 s and 8 s clips with the preset's video VAE and :func:`bench_audio_decode`
    for 4, 8 and 16 s; ``startup`` the import and bundle-load times (:mod:`.startup`); ``growth`` the DiT step
    against clip length (:mod:`.growth`); ``compare`` our DiTs against a plain SDPA transformer (:mod:`.compare`).
    Returns a JSON-ready dict.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu")
    for name, value in (("steps", steps), ("repeats", repeats)):
        checks.integer(value, name, 1)
    if seconds is not None:
        checks.duration(seconds)
    bundle = random_bundle(preset, dev if dev.type == "cuda" else "cpu")
    seconds = bundle.duration if seconds is None else seconds
    pipe = UniFormPipeline(bundle, device=dev, precision="auto", compile=compile_dit)
    h, w = bundle.height, bundle.width
    frames = torch.rand(seconds * FRAMES_PER_CHUNK, h, w, 3)
    wave = 0.1 * torch.randn(1, seconds * SAMPLE_RATE)
    rows: list[Measurement] = []

    def add(name: str, fn: Callable[[], object], n: int = repeats) -> Measurement:
        rows.append(measure(name, fn, dev, n))
        return rows[-1]

    add("text encode", lambda: encode_text(bundle.text_encoder, PROMPT))
    add(f"video encode ({seconds} s)", lambda: encode_video(bundle.video_vae, frames, VIDEO_FPS))
    add(f"audio encode ({seconds} s)", lambda: encode_audio(bundle.audio_codec, wave, SAMPLE_RATE))

    text = encode_text(bundle.text_encoder, PROMPT)
    latent = make_task_latent("t2av", duration=seconds, height=h, width=w)
    batch = latent.with_latents(latent.video.to(dev), latent.audio.to(dev))
    model_fn = make_model_fn(bundle.dit, batch, text.y.to(dev), text.mask.to(dev), None, None, CFG)
    x = torch.randn(1, batch.video[0].numel() + batch.audio[0].numel(), device=dev)
    t = torch.full((1,), 500, dtype=torch.long, device=dev)
    add("DiT step with CFG (cond + uncond in one batch of 2)", lambda: model_fn(x, t))

    for sampler in SAMPLERS:
        rows.append(_sampler_row(bundle, latent, text, sampler, steps, dev, repeats))

    z = make_task_latent("t2av", duration=seconds, height=h, width=w)
    z = z.with_latents(torch.randn_like(z.video), torch.randn_like(z.audio))
    add(f"video decode ({seconds} s)", lambda: decode_video(bundle.video_vae, z))
    add(f"audio decode + vocoder ({seconds} s)", lambda: decode_audio(bundle.audio_codec, z))

    sources = {"video": VideoClip(frames, float(VIDEO_FPS)), "audio": AudioClip(wave, SAMPLE_RATE)}
    for task in TASKS:  # same repeats and warm-up as the stage rows, so the two can be added up and compared
        row = add(f"end to end {task} ({steps} steps, CFG {CFG:g})", _task(pipe, task, sources, seconds, steps))
        row.extra["stages_s"] = _stage_sum(rows, task, bundle.sampler)
    if dev.type == "cuda":  # only the running component on the GPU: the peak a smaller card must hold
        offloaded = UniFormPipeline(bundle, device=dev, precision="auto", offload=True)
        for task in TASKS:
            name = f"end to end {task} with offload ({steps} steps, CFG {CFG:g})"
            add(name, _task(offloaded, task, sources, seconds, steps))
    report = {
        "preset": preset,
        "device": device_name(dev),
        "dit_dtype": str(bundle.dit.dtype).removeprefix("torch."),
        "seconds": seconds,
        "size": [h, w],
        "steps": steps,
        "cfg": CFG,
        "repeats": repeats,
        "compile": compile_dit,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": [asdict(r) for r in rows],
    }
    if decode_memory:  # with its own VAE; its peak is counted above what is already allocated
        vae, size = ("tiny", 64) if preset == "tiny" else ("opensora-v1.2", 256 if dev.type == "cuda" else 32)
        report["video_decode_memory"] = bench_video_decode(vae, (4, 8), size, device)
        report["audio_decode_memory"] = bench_audio_decode("tiny" if preset == "tiny" else "audioldm-s-full")
    if startup:
        report["startup"] = bench_startup()
    if growth:
        report["dit_growth"] = bench_dit_growth(preset, device=device)
    if compare:
        report["compare"] = compare_with_plain(device=device)
    return report


def _stage_sum(rows: list[Measurement], task: str, sampler: str) -> float:
    """What ``task`` end to end should cost by the stage rows: text encode, the encode of its input, the bundle's
    sampler, and the decode of what it generates."""
    parts = ["text encode", f"sampler {sampler} "]
    parts += {"t2av": ["video decode", "audio decode"], "a2v": ["audio encode", "video decode"]}.get(
        task, ["video encode", "audio decode"]
    )
    return sum(r.median_s for r in rows if any(r.name.startswith(p) for p in parts))


def _task(pipe: UniFormPipeline, task: str, sources: dict, seconds: int, steps: int) -> Callable[[], object]:
    return lambda: pipe.generate(
        task,
        prompt=PROMPT,
        video=sources["video"] if task == "v2a" else None,
        audio=sources["audio"] if task == "a2v" else None,
        duration=seconds,
        steps=steps,
        cfg=CFG,
        height=None if task == "v2a" else pipe.bundle.height,
        width=None if task == "v2a" else pipe.bundle.width,
    )


def _sampler_row(bundle: Bundle, latent, text, sampler: str, steps: int, device, repeats: int) -> Measurement:
    """Whole ``pipeline.sample`` call with the real DiT; the DiT's own calls are timed from inside (hooks), so
    overhead = sampling time - time in the DiT. After each run the loop runs again with the DiT's output replayed
    (timed apart and taken out of the row's time), interleaved so that both see the same load."""
    inside: list[float] = []
    per_run: list[float] = []
    replayed: list[float] = []
    clock: dict = {"replay": False}
    batches: set[int] = set()

    def before(module, args, kwargs):
        if not clock["replay"]:
            batches.add((args[0] if args else kwargs["video"]).shape[0])
            sync(device)
            clock["start"] = time.perf_counter()

    def after(module, args, kwargs, output):
        if not clock["replay"]:
            sync(device)
            inside.append(time.perf_counter() - clock["start"])
            clock["output"] = output

    def run():
        inside.clear()
        sample(bundle.dit, latent, text, seed=0, steps=steps, cfg=CFG, sampler=sampler)
        per_run.append(sum(inside))
        replayed.append(_replayed_loop(bundle, latent, text, sampler, steps, device, clock))

    hooks = [
        bundle.dit.register_forward_pre_hook(before, with_kwargs=True),
        bundle.dit.register_forward_hook(after, with_kwargs=True),
    ]
    try:
        m = measure(f"sampler {sampler} ({steps} steps, CFG {CFG:g})", run, device, repeats)
    finally:
        for hook in hooks:
            hook.remove()
    timed, loops = per_run[1:], replayed[1:]  # the first entries are the warm-up
    m.runs_s = [total - loop for total, loop in zip(m.runs_s, loops, strict=True)]
    m.median_s = statistics.median(m.runs_s)
    overhead = [total - model for total, model in zip(m.runs_s, timed, strict=True)]
    m.extra.update(
        dit_calls=len(inside),  # per run: one per step when cond and uncond share one batch
        dit_batch=sorted(batches),
        model_s=statistics.median(timed),
        overhead_s=statistics.median(overhead),
        overhead_pct=100 * statistics.median(o / total for o, total in zip(overhead, m.runs_s, strict=True)),
        replayed_outside_s=statistics.median(loops),
        replayed_outside_pct=100 * statistics.median(lo / (lo + md) for lo, md in zip(loops, timed, strict=True)),
    )
    return m


def _replayed_loop(bundle: Bundle, latent, text, sampler: str, steps: int, device, clock: dict) -> float:
    """Seconds of one ``pipeline.sample`` with every DiT call answered by ``clock["output"]`` (the last real
    call's result): the time of the loop around the model alone."""
    bundle.dit.forward = lambda *args, **kwargs: clock["output"]
    clock["replay"] = True
    try:
        sync(device)
        start = time.perf_counter()
        sample(bundle.dit, latent, text, seed=0, steps=steps, cfg=CFG, sampler=sampler)
        sync(device)
        return time.perf_counter() - start
    finally:
        del bundle.dit.forward
        clock["replay"] = False
