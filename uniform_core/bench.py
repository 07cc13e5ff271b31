"""`uniform-av bench`: time and peak memory of every stage, and of each task end to end.

Times are medians over ``repeats`` runs after one warm-up run. Peak memory is the growth above the stage's starting
point: the largest resident-set size on the CPU (sampled every millisecond from /proc), ``max_memory_allocated`` on
CUDA. Models have random weights (``xl`` = the paper's sizes), so nothing is downloaded and the numbers measure
speed only. Sampler rows run the real DiT and time what happens inside its calls, so ``overhead`` is everything
the sampling loop adds around the model (scheduler steps, guidance, packing).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .bundle import Bundle, random_tiny_bundle
from .diffusion.guidance import make_model_fn
from .diffusion.samplers import SAMPLERS
from .errors import InputError
from .media import AudioClip, VideoClip
from .pipeline import (
    UniFormPipeline,
    decode_audio,
    decode_video,
    encode_audio,
    encode_text,
    encode_video,
    make_task_latent,
    sample,
)
from .tasks import FRAMES_PER_CHUNK, SAMPLE_RATE, TASKS, VIDEO_FPS, check_duration

PRESETS = ("tiny", "xl")
PROMPT = "a red ball bounces twice on a blue floor"
CFG = 5.0


@dataclass
class Measurement:
    """One row: median and all timed runs in seconds, peak memory growth in MB, row-specific numbers."""

    name: str
    median_s: float
    runs_s: list[float]
    peak_mb: float
    extra: dict = field(default_factory=dict)


class PeakMemory:
    """Peak memory growth (MB) of the block it wraps: the CUDA allocator's peak, or the sampled RSS on the CPU.

    ``total_mb`` is the absolute peak (CUDA: everything allocated, resident weights included; CPU: the RSS).
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.peak_mb = self.total_mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = _rss_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc) -> bool:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_mb, self.total_mb = (peak - self._base) / 2**20, peak / 2**20
        return False


class TensorPeak(TorchDispatchMode):
    """Peak bytes of the tensor storages created inside the block and still referenced: the CPU stand-in for
    ``torch.cuda.max_memory_allocated``, exact where the RSS hides reuse of memory freed earlier in the process.
    Storages of ``existing`` tensors (weights, inputs) are not counted."""

    def __init__(self, existing: Iterable[torch.Tensor] = ()):
        super().__init__()
        self._skip = {t.untyped_storage().data_ptr() for t in existing}
        self._owners: dict[int, set[int]] = {}
        self._sizes: dict[int, int] = {}
        self.live = self.peak = 0

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                key = t.untyped_storage().data_ptr()
                if key not in self._skip:
                    self._hold(t, key)
        return out

    def _hold(self, t: torch.Tensor, key: int) -> None:
        owners = self._owners.setdefault(key, set())
        if not owners:
            self._sizes[key] = t.untyped_storage().nbytes()
            self.live += self._sizes[key]
            self.peak = max(self.peak, self.live)
        if id(t) not in owners:
            owners.add(id(t))
            weakref.finalize(t, self._release, key, id(t))

    def _release(self, key: int, ident: int) -> None:
        self._owners[key].discard(ident)
        if not self._owners[key]:
            self.live -= self._sizes.pop(key)
            del self._owners[key]


def measure(name: str, fn: Callable[[], object], device: torch.device, repeats: int) -> Measurement:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up, and the largest peak of those runs."""
    fn()
    runs, peak, total = [], 0.0, 0.0
    for _ in range(repeats):
        _sync(device)
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            fn()
            _sync(device)
            runs.append(time.perf_counter() - start)
        peak, total = max(peak, mem.peak_mb), max(total, mem.total_mb)
    extra = {"total_peak_mb": total} if device.type == "cuda" else {}
    return Measurement(name, statistics.median(runs), runs, peak, extra)


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
) -> dict:
    """Benchmark every stage, every sampler and every task for a random-weight ``preset`` bundle on ``device``.

    The DiT runs in bf16 on CUDA (its norms, timestep embedding and attention softmax compute in fp32), fp32 on
    the CPU; the codecs run in fp32. ``seconds`` defaults to the preset's clip length. ``decode_memory`` adds
    :func:`bench_video_decode` for 4 s and 8 s clips with the preset's video VAE. Returns a JSON-ready dict.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu")
    for name, value in (("steps", steps), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be an integer >= 1; got {value!r}")
    if seconds is not None:
        check_duration(seconds)
    bundle = random_bundle(preset, dev if dev.type == "cuda" else "cpu")
    seconds = bundle.duration if seconds is None else seconds
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    pipe = UniFormPipeline(bundle, device=dev, dtype=dtype)
    if compile_dit:
        bundle.dit.forward = torch.compile(bundle.dit.forward)
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
    e2e_repeats = max(1, repeats // 2)
    for task in TASKS:
        add(f"end to end {task} ({steps} steps, CFG {CFG:g})", _task(pipe, task, sources, seconds, steps), e2e_repeats)
    if dev.type == "cuda":  # only the running component on the GPU: the peak a smaller card must hold
        offloaded = UniFormPipeline(bundle, device=dev, dtype=dtype, offload=True)
        for task in TASKS:
            name = f"end to end {task} with offload ({steps} steps, CFG {CFG:g})"
            add(name, _task(offloaded, task, sources, seconds, steps), e2e_repeats)
    report = {
        "preset": preset,
        "device": device_name(dev),
        "dit_dtype": str(dtype).removeprefix("torch."),
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
    return report


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
    overhead = sampling time - time in the DiT."""
    inside: list[float] = []
    per_run: list[float] = []
    clock = {}
    batches: set[int] = set()

    def before(module, args, kwargs):
        batches.add((args[0] if args else kwargs["video"]).shape[0])
        _sync(device)
        clock["start"] = time.perf_counter()

    def after(module, args, kwargs, output):
        _sync(device)
        inside.append(time.perf_counter() - clock["start"])

    def run():
        inside.clear()
        sample(bundle.dit, latent, text, seed=0, steps=steps, cfg=CFG, sampler=sampler)
        per_run.append(sum(inside))

    hooks = [
        bundle.dit.register_forward_pre_hook(before, with_kwargs=True),
        bundle.dit.register_forward_hook(after, with_kwargs=True),
    ]
    try:
        m = measure(f"sampler {sampler} ({steps} steps, CFG {CFG:g})", run, device, repeats)
    finally:
        for hook in hooks:
            hook.remove()
    timed = per_run[1:]  # the first entry is the warm-up
    overhead = [total - model for total, model in zip(m.runs_s, timed, strict=True)]
    m.extra.update(
        dit_calls=len(inside),  # per run: one per step when cond and uncond share one batch
        dit_batch=sorted(batches),
        model_s=statistics.median(timed),
        overhead_s=statistics.median(overhead),
        overhead_pct=100 * statistics.median(o / total for o, total in zip(overhead, m.runs_s, strict=True)),
    )
    return m


def bench_video_decode(
    vae_preset: str = "tiny",
    durations: tuple[int, ...] = (4, 8),
    size: int = 64,
    device: str = "cpu",
) -> dict:
    """Peak memory of ``pipeline.decode_video`` per clip length, and that peak minus the decoded output frames.

    ``peak_mb``: the CUDA allocator's peak, or on the CPU the peak of live tensor storages (:class:`TensorPeak`);
    ``rss_peak_mb`` is the resident-set growth. ``beyond_output_mb`` is what decoding needs besides the
    (1, T, size, size, 3) float32 result; it should not grow with the clip length, and ``ratio`` is its value for
    the longest clip over the shortest.
    """
    from .codecs.video_vae import VideoVAE

    dev = torch.device(device)
    torch.manual_seed(0)
    vae = VideoVAE.from_preset(vae_preset).to(dev).eval().requires_grad_(False)
    rows = []
    for seconds in durations:
        latent = make_task_latent("t2av", duration=seconds, height=size, width=size)
        latent = latent.with_latents(torch.randn_like(latent.video), latent.audio)
        m = measure(f"video decode {seconds} s", lambda latent=latent: decode_video(vae, latent), dev, 1)
        row = {"seconds": seconds, "time_s": m.median_s, "rss_peak_mb": m.peak_mb}
        if dev.type == "cuda":
            row["peak_mb"] = m.peak_mb
        else:
            with TensorPeak([latent.video, *vae.parameters(), *vae.buffers()]) as tensors:
                decode_video(vae, latent)
            row["peak_mb"] = tensors.peak_mb
        row["output_mb"] = seconds * FRAMES_PER_CHUNK * size * size * 3 * 4 / 2**20
        row["beyond_output_mb"] = row["peak_mb"] - row["output_mb"]
        rows.append(row)
    ratio = rows[-1]["beyond_output_mb"] / rows[0]["beyond_output_mb"] if rows[0]["beyond_output_mb"] > 0 else None
    return {"vae": vae_preset, "size": [size, size], "device": device_name(dev), "rows": rows, "ratio": ratio}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def to_markdown(report: dict) -> str:
    """The report as a Markdown table (sampler rows add the time inside the DiT and the overhead around it)."""
    lines = [
        f"preset `{report['preset']}` on {report['device']}: DiT {report['dit_dtype']}, {report['seconds']} s at "
        f"{report['size'][0]}x{report['size'][1]}, torch {report['torch']}, {report['threads']} threads"
        + (", torch.compile" if report.get("compile") else ""),
        "",
        "| stage | median s | peak MB | notes |",
        "|---|---:|---:|---|",
    ]
    for r in report["results"]:
        e = r["extra"]
        notes = []
        if "overhead_pct" in e:
            notes.append(
                f"{e['dit_calls']} DiT calls of batch {'/'.join(map(str, e['dit_batch']))}: "
                f"in DiT {e['model_s']:.4f} s, outside {e['overhead_s']:.4f} s = {e['overhead_pct']:.2f} %"
            )
        if "total_peak_mb" in e:
            notes.append(f"total allocated {e['total_peak_mb'] / 1024:.2f} GB")
        lines.append(f"| {r['name']} | {r['median_s']:.4f} | {r['peak_mb']:.1f} | {'; '.join(notes)} |")
    decode = report.get("video_decode_memory")
    if decode:
        lines += [
            "",
            f"video decode memory, VAE `{decode['vae']}` at {decode['size'][0]}x{decode['size'][1]} on "
            f"{decode['device']}: beyond the output, {decode['rows'][-1]['seconds']} s needs "
            f"{decode['ratio'] or float('nan'):.3f}x what {decode['rows'][0]['seconds']} s needs",
            "",
            "| clip | decode s | peak MB | output MB | beyond output MB | RSS growth MB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in decode["rows"]:
            lines.append(
                f"| {r['seconds']} s | {r['time_s']:.2f} | {r['peak_mb']:.1f} | {r['output_mb']:.1f} | "
                f"{r['beyond_output_mb']:.1f} | {r['rss_peak_mb']:.1f} |"
            )
    return "\n".join(lines)


def write_json(report: dict, path: str | os.PathLike) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
