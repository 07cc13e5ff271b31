"""`uniform-av`: the command line over the library (generate, train, eval, bench).

Every bad flag, from argparse's own checks to the library's, ends as one line on stderr and exit status 2, never a
traceback. SIGINT and SIGTERM stop a run where it is (within a second, whatever stage runs) with exit status
128 + the signal's number; files appear whole or not at all (uniform_core.atomic), so nothing half-written is left.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys

from .errors import Cancelled, InputError, UniFormError
from .eval.command import add_eval_parser
from .precision import PRECISIONS
from .tasks import LONG_MAX_SECONDS, TASK_DESCRIPTIONS, TASKS

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (None: this process's own, as the console script does) and return its exit
    status. Stopped by a signal, the process's own run exits at once: tearing down torch and the loaded models can
    take longer than the second a stop may take, and nothing is left to write."""
    code = _main(argv)
    if argv is None and code > 128:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    command = "uniform-av"
    with _stop_on_signals() as stopped:
        try:
            args = build_parser().parse_args(argv)
            command = f"uniform-av {args.command}"
            level = logging.INFO if args.verbose else logging.WARNING
            logging.basicConfig(level=level, format="%(levelname)s %(message)s")
            return args.run(args) or 0
        except UniFormError as e:
            if not stopped:
                print(f"{command}: error: {e}", file=sys.stderr)
                return 2
        except Exception:
            if not stopped:  # a bug: its traceback is what the report needs
                raise
            # else: the handler's Cancelled was wrapped by library code on its way out (torch's load_state_dict does)
    print(f"{command}: stopped: {signal.Signals(stopped[0]).name} received; nothing more is written", file=sys.stderr)
    return 128 + stopped[0]


@contextlib.contextmanager
def _stop_on_signals():
    """While the block runs, SIGINT and SIGTERM raise Cancelled where Python next runs (between two torch ops, so
    within a second at any stage); yields the list that receives the signal's number. Outside the main thread
    signals cannot be caught and are left alone."""
    stopped: list[int] = []

    def stop(signum, frame):
        if stopped:  # already stopping: a second signal must not interrupt the way out
            return
        stopped.append(signum)
        raise Cancelled(f"{signal.Signals(signum).name} received; nothing more is written")

    try:
        previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield stopped
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are InputErrors, reported like every other bad input."""

    def error(self, message):
        raise InputError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="uniform-av",
        description="UniForm: generate video with matching sound from text (t2av), sound for a video (v2a), "
        "or video for a sound (a2v), with one model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done to the inputs")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_train(sub)
    add_eval_parser(sub)
    _add_bench(sub)
    return parser


def _add_generate(sub) -> None:
    from .diffusion.samplers import SAMPLERS

    p = sub.add_parser(
        "generate",
        help="run one task and write an MP4",
        description="\n".join(f"{t}: {d}" for t, d in TASK_DESCRIPTIONS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--prompt", default=None, help="text; required for t2av, optional for a2v/v2a")
    p.add_argument("--negative-prompt", default="", help="what to steer away from (replaces the null caption)")
    p.add_argument("--video", default=None, help="input video file (v2a)")
    p.add_argument("--audio", default=None, help="input audio or video file whose sound is used (a2v)")
    p.add_argument("--out", required=True, help="output .mp4 (a batch writes NAME_1.mp4, NAME_2.mp4, ...)")
    p.add_argument("--bundle", default=None, help="bundle folder (default: the embedded uniform-tiny)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the bundle's, per task)")
    p.add_argument("--cfg-audio", type=float, default=None, help="the sound's own guidance scale (default: --cfg)")
    p.add_argument(
        "--cfg-condition",
        type=float,
        default=None,
        help="a2v/v2a: guidance on the condition, 1 = off (default, or -1: measured per task)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default=None, choices=SAMPLERS, help="default: the bundle's")
    p.add_argument(
        "--duration",
        type=int,
        default=None,
        help="whole seconds (default: the input's, or the model's); longer than the model's clip (uniform-tiny: 2 s) "
        "is made in overlapping windows that continue each other",
    )
    p.add_argument(
        "--overlap", type=int, default=1, help="seconds each window shares with the one before (long clips)"
    )
    p.add_argument(
        "--height",
        type=int,
        default=None,
        help="pixels, a multiple of 16 (default: the bundle's; v2a: its pixel count)",
    )
    p.add_argument(
        "--width",
        type=int,
        default=None,
        help="pixels, a multiple of 16 (default: the bundle's; v2a: its pixel count)",
    )
    p.add_argument("--batch", type=int, default=1, help="variations in one call; item i uses seed + i")
    p.add_argument("--device", default="cpu")
    p.add_argument("--offload", action="store_true", help="keep only the running component on the device")
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="DiT precision; auto: bf16 on GPUs that run it natively, fp16 on older GPUs, fp32 on the CPU",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT (dynamic shapes; for GPUs)")
    p.set_defaults(run=_run_generate)


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train codecs + DiT from a recipe and write a bundle folder",
        description="Train the video VAE, audio VAE, vocoder and the UniForm DiT as the recipe says, on one CPU/GPU "
        "or, under `accelerate launch`, on many. Writes <run>/bundle, usable as --bundle.",
    )
    p.add_argument("--config", default=None, help="recipe JSON, e.g. configs/uniform-tiny.json")
    p.add_argument("--out", default=None, help="run folder (default: the recipe's out_dir); must be new or empty")
    p.add_argument("--resume", default=None, help="continue a run: its run folder or one of its checkpoints")
    p.add_argument(
        "--export",
        metavar="STEP_FOLDER",
        default=None,
        help="write a checkpoint step folder (sharded by FSDP or not) as one DiT file at --out, then stop",
    )
    p.add_argument("--weights", default="ema", choices=("ema", "model"), help="--export: EMA or trained weights")
    p.add_argument(
        "--estimate", metavar="CONFIG", help="train nothing: print the recipe's DiT tokens, FLOP, memory and days"
    )
    p.add_argument("--gpus", type=int, default=8, help="with --estimate: GPUs in all (every node)")
    p.add_argument("--gpu", default="h100", help="with --estimate: GPU kind (a100, h100, h200, b200, ...)")
    p.add_argument("--sharding", default="fsdp", help="with --estimate: ddp, fsdp, zero2 or zero3")
    p.add_argument("--mfu", type=float, default=0.4, help="with --estimate: model FLOP utilisation (bench --train)")
    p.add_argument(
        "--stage",
        default="all",
        help="all (default); codecs: stop after the codec stages; extract: stop after the latent shards",
    )
    p.set_defaults(run=_run_train)


def _run_train(args) -> int:
    from .train.config import load_config
    from .train.recipe import train_bundle

    if args.export is not None:
        from . import checks
        from .train.checkpoint_export import export_dit

        if args.out is None:
            raise InputError("train --export needs --out FILE.safetensors, the DiT file to write")
        out = checks.output_file(args.out, "--out", ".safetensors")
        print(f"wrote {export_dit(checks.path(args.export, '--export'), out, args.weights)}")
        return 0
    if args.estimate is not None:
        from .train.estimate import estimate

        print(estimate(load_config(args.estimate), args.gpus, args.gpu, args.sharding, args.mfu).to_text())
        return 0
    if args.config is None:
        raise InputError(
            "train needs --config RECIPE.json (or --estimate RECIPE.json, or --export STEP_FOLDER --out FILE)"
        )
    out = train_bundle(load_config(args.config), out_dir=args.out, resume=args.resume, stage=args.stage)
    print(f"wrote {out}")
    return 0


def _check_generate_args(args) -> list:
    """Every flag of ``generate`` checked before the bundle loads; the output file names, one per batch item."""
    from . import checks

    batch = checks.batch_size(args.batch, "--batch")
    checks.seed(args.seed, "--seed", count=batch)
    checks.steps(args.steps, "--steps")
    for flag, value in (("--cfg", args.cfg), ("--cfg-audio", args.cfg_audio)):
        if value is not None:
            checks.cfg(value, flag)
    checks.cfg_condition(args.cfg_condition, args.task, "--cfg-condition")
    if args.duration is not None:
        checks.duration(args.duration, "--duration", high=LONG_MAX_SECONDS)  # beyond the model's clip: in windows
    for flag, value in (("--height", args.height), ("--width", args.width)):
        if value is not None:
            checks.side(value, flag)
    for flag, value in (("--prompt", args.prompt), ("--negative-prompt", args.negative_prompt)):
        if value is not None:
            checks.prompt(value, flag)
    checks.condition(args.task, args.video, args.audio, "--video", "--audio")
    for flag, value in (("--video", args.video), ("--audio", args.audio), ("--bundle", args.bundle)):
        if value is not None:
            checks.path(value, flag)
    checks.device(args.device, "--device")
    inputs = {"--video": args.video, "--audio": args.audio}
    out = checks.output_file(args.out, "--out", inputs=inputs)
    names = [out] if batch == 1 else [out.with_name(f"{out.stem}_{i + 1}{out.suffix}") for i in range(batch)]
    return [checks.output_file(name, "--out", inputs=inputs) for name in names]


def _run_generate(args) -> int:
    import functools

    from tqdm import tqdm

    from .long import generate_long
    from .pipeline import UniFormPipeline

    outputs = _check_generate_args(args)
    pipe = UniFormPipeline.from_bundle(
        args.bundle, device=args.device, precision=args.precision, offload=args.offload, compile=args.compile
    )
    sampler = args.sampler or pipe.bundle.sampler
    with tqdm(total=args.steps, desc=f"{args.task} {sampler}", unit="step") as bar:

        def progress(step: int, total: int) -> None:
            bar.total = total
            bar.update(step - bar.n)

        # Windows (and a sound guided on its own) go through uniform_core.long; within one window it is the same.
        windowed = args.cfg_audio is not None or (args.duration or 0) > pipe.bundle.duration
        generate = pipe.generate
        if windowed:
            generate = functools.partial(generate_long, pipe, overlap=args.overlap, cfg_audio=args.cfg_audio)
        result = generate(
            args.task,
            prompt=args.prompt,
            video=args.video,
            audio=args.audio,
            duration=args.duration,
            seed=args.seed,
            steps=args.steps,
            cfg=args.cfg,
            sampler=args.sampler,
            negative_prompt=args.negative_prompt,
            batch_size=args.batch,
            height=args.height,
            width=args.width,
            progress=progress,
            cfg_condition=args.cfg_condition,
        )
    for note in result.notes:
        print(f"input: {note}", file=sys.stderr)
    for i, (path, seed) in enumerate(zip(outputs, result.seeds, strict=True)):
        result.save(path, index=i)
        print(f"wrote {path} (seed {seed})")
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time and peak memory of every stage and task (random weights, nothing downloaded)",
        description="Median time after a warm-up and peak memory (RSS growth on the CPU, allocator peak on CUDA) "
        "of text/video/audio encode, one DiT step with CFG, each sampler (and its overhead outside the DiT), "
        "video and audio decode, and each task end to end. See BENCHMARKS.md.",
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--preset", default="tiny", choices=("tiny", "xl"), help="tiny: 64x64; xl: the paper's sizes")
    p.add_argument("--steps", type=int, default=30, help="sampling steps per sampler / task")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row")
    p.add_argument("--seconds", type=int, default=None, help="clip length (default: tiny 2 s, xl 4 s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT")
    p.add_argument(
        "--decode-memory", action="store_true", help="also video decode memory at 4/8 s and audio at 4/8/16 s"
    )
    p.add_argument("--startup", action="store_true", help="also import time against torch's, and bundle load")
    p.add_argument("--growth", action="store_true", help="also the DiT step time against clip length 1-16 s")
    p.add_argument("--compare", action="store_true", help="also our DiTs against a plain SDPA transformer")
    p.add_argument("--train", action="store_true", help="only a DiT training step: time, FLOP/s and MFU")
    p.add_argument("--batch", type=int, default=4, help="with --train: samples per step")
    p.add_argument("--activation-checkpointing", action="store_true", help="with --train: recompute blocks")
    p.add_argument("--json", default=None, help="write the full report (all runs) to this JSON file")
    p.set_defaults(run=_run_bench)


def _run_bench(args) -> int:
    from .bench import run_bench, to_markdown, write_json

    if args.train:
        from .bench.train_step import bench_train

        train = bench_train(
            args.preset, args.device, args.seconds, args.batch, args.repeats, args.activation_checkpointing
        )
        print(to_markdown(train))
        if args.json:
            write_json(train, args.json)
        return 0
    report = run_bench(
        args.preset,
        args.device,
        args.steps,
        args.repeats,
        args.seconds,
        args.compile,
        args.decode_memory,
        startup=args.startup,
        growth=args.growth,
        compare=args.compare,
    )
    print(to_markdown(report))
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
