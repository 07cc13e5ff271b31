"""`uniform-av eval`: its flags and the run over the evaluation modules (the rest of the command line is
``uniform_core.cli``)."""

from __future__ import annotations


def add_eval_parser(sub) -> None:
    """Add ``eval`` to the ``uniform-av`` subcommands ``sub``."""
    from ..diffusion.samplers import SAMPLERS
    from .seeds import REPORT_SEEDS, TUNING_SEEDS

    p = sub.add_parser(
        "eval",
        help="measure the model: the synthetic benchmark, the paper's ablations, the codecs, or AV-align of files",
        description="--synthetic: V2A, A2V and T2AV on synthetic clips (events, colour, shape, floor, sound class, "
        "level), each beside chance (the better of the shuffled pairing and an uninformed output) and the real "
        "clips. --paper-tables: the paper's Tables V (text or not) and VI (joint vs unimodal) at small scale. "
        "--codecs: the codecs' own round trips on real clips (no DiT), the ceilings of any DiT. --contact-sheet "
        "DIR: PNGs of one example per task. --av-align VIDEO_DIR: AV-align of your MP4 files as Seeing & Hearing "
        f"computes it. Clips come from the report seeds ({REPORT_SEEDS.start}..) unless --first-seed says "
        f"otherwise; the tuning seeds ({TUNING_SEEDS.start}..{TUNING_SEEDS.stop - 1}) need --allow-tuning-seeds. "
        "Prints markdown.",
    )
    p.add_argument("--synthetic", action="store_true", help="the synthetic benchmark (issue-16 metrics)")
    p.add_argument("--paper-tables", action="store_true", help="Tables V and VI at small scale")
    p.add_argument("--codecs", action="store_true", help="codec round trips on real clips: the ceilings")
    p.add_argument(
        "--contact-sheet",
        metavar="OUT_DIR",
        default=None,
        help="write contact_sheet.png and spectrograms.png of the first clip, one example per task",
    )
    p.add_argument("--av-align", metavar="VIDEO_DIR", default=None, help="folder of .mp4 files to score")
    p.add_argument("--wav-dir", default=None, help="with --av-align: <stem>.wav per video (default: its own audio)")
    p.add_argument("--size", default=None, help="with --av-align: resize frames, 'min=N' or 'W:H' (as the original)")
    p.add_argument("--bundle", default=None, help="bundle folder (default: the embedded uniform-tiny)")
    p.add_argument("--first-seed", type=int, default=None, help=f"first clip's seed (default {REPORT_SEEDS.start})")
    p.add_argument("--clips", type=int, default=50, help="clips per task (seeds first-seed, first-seed + 1, ...)")
    p.add_argument("--allow-tuning-seeds", action="store_true", help="allow clips from the tuning range")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the bundle's, per task)")
    p.add_argument("--sampler", default=None, choices=SAMPLERS, help="default: the bundle's")
    p.add_argument("--seed", type=int, default=0, help="sampling: clip i samples with seed + 2 i")
    p.add_argument("--max-objects", type=int, default=1, choices=(1, 2), help="objects per synthetic clip")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the results (with per-clip values) as JSON here")
    p.add_argument("--markdown", default=None, help="also write the markdown tables here")
    p.set_defaults(run=run_eval)


def run_eval(args) -> int:
    """Run ``uniform-av eval`` with its parsed ``args``; prints markdown, returns the exit status."""
    import json

    from tqdm import tqdm

    from ..atomic import write_text
    from ..errors import InputError
    from . import benchmark
    from .seeds import choose_seeds

    model_eval = args.synthetic or args.paper_tables
    chosen = [bool(model_eval), args.codecs, args.contact_sheet is not None, args.av_align is not None]
    if sum(chosen) != 1:
        raise InputError(
            "give one of: --synthetic and/or --paper-tables, --codecs, --contact-sheet OUT_DIR, --av-align VIDEO_DIR"
        )
    if args.av_align is not None:
        data, text = benchmark.av_align_folder_report(args.av_align, args.wav_dir, args.size)
    elif args.codecs:
        from ..bundle import load_bundle
        from .ceilings import codec_ceilings

        seeds = choose_seeds(args.first_seed, args.clips, args.allow_tuning_seeds)
        bundle = load_bundle(args.bundle, device=args.device)
        with tqdm(total=args.clips, desc="codecs", unit="clip") as bar:
            report = codec_ceilings(bundle, seeds, bar.update)
        data, text = report.to_json(), report.to_markdown()
    else:
        from ..pipeline import UniFormPipeline

        settings = benchmark.EvalSettings(
            args.clips,
            args.steps,
            args.cfg,
            args.sampler,
            args.seed,
            args.max_objects,
            args.first_seed,
            args.allow_tuning_seeds,
        )
        pipe = UniFormPipeline.from_bundle(args.bundle, device=args.device)
        if args.contact_sheet is not None:
            from .contact_sheet import write_contact_sheets

            seed = choose_seeds(args.first_seed, settings.clips, args.allow_tuning_seeds).first
            for path in write_contact_sheets(pipe, args.contact_sheet, seed, settings):
                print(f"wrote {path}")
            return 0
        runs = args.clips * (5 if args.paper_tables else 3)  # paper: 2 T2AV samples in one batch; V2A/A2V twice
        with tqdm(total=runs, desc="eval", unit="run") as bar:
            report = benchmark.run_benchmark(pipe, settings, args.synthetic, args.paper_tables, lambda _: bar.update())
        data, text = report.to_json(), report.to_markdown()
    print(text)
    if args.json:
        write_text(args.json, json.dumps(data, indent=1) + "\n")
    if args.markdown:
        write_text(args.markdown, text)
    return 0
