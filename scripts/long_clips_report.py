"""Measure long generation on held-out synthetic clips: seams, video chunk joins, event F1 at 30 s, exact counts,
peak memory, and whether guiding on the conditioning modality helps A2V/V2A sync. Writes <out>/long_clips.json
(the README's "Long clips" numbers come from it).

    python scripts/long_clips_report.py --out runs/long-clips --parts seams joins f1 memory modality --clips 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from uniform_core import atomic, media, pipeline
from uniform_core.bench import TensorPeak
from uniform_core.codecs.video_chunks import JOINS, VIDEO_JOIN
from uniform_core.diffusion.guidance import make_model_fn
from uniform_core.diffusion.samplers import sample as run_sampler
from uniform_core.eval.events import audio_onsets, event_f1, visual_impacts
from uniform_core.eval.seeds import choose_seeds
from uniform_core.long import decode_long, generate_long, plan_windows, sample_long
from uniform_core.long.codec_segments import decode_audio_long, segments
from uniform_core.long.generate import AUDIO_CONTEXT_STEPS
from uniform_core.pipeline import (
    UniFormPipeline,
    decode_video,
    encode_audio,
    encode_text,
    encode_video,
    make_task_latent,
)
from uniform_core.tasks import LONG_MAX_SECONDS, SAMPLE_RATE, VIDEO_FPS
from uniform_core.train.synthetic import SyntheticSpec, heldout_seeds, make_clip

TOLERANCE_S = 0.1  # the benchmark's +-100 ms


# ---- seam measures ------------------------------------------------------------------------------------------


def _rank(values, reference) -> list[float]:
    """Percentile rank (0..1) of each value within ``reference``: ~0.5 on average where seams look like elsewhere."""
    reference = np.sort(np.asarray(reference))
    return [float(np.searchsorted(reference, v) / len(reference)) for v in values]


def _local_max(curve: np.ndarray, centres, radius: int) -> np.ndarray:
    return np.array([curve[max(0, c - radius) : c + radius + 1].max() for c in centres])


def _away(length: int, seams, margin: int, stride: int) -> np.ndarray:
    grid = np.arange(margin, length - margin, stride)
    if len(seams):
        grid = grid[np.min(np.abs(grid[:, None] - np.asarray(seams)[None, :]), axis=1) > margin]
    return grid


def audio_seam_scores(waveform: torch.Tensor, seam_samples: list[int]) -> dict:
    """Sample-level jump |x[n] - x[n-1]| (max over n within 1 sample of the seam) and spectral flux (max over the
    STFT frames, 512 / hop 160, whose window holds the seam) at each seam, ranked within the same measure taken at
    every position at least 0.1 s from a seam."""
    x = waveform.reshape(-1).double().numpy()
    jump = np.abs(np.diff(x, prepend=x[0]))
    far = _away(len(x), seam_samples, SAMPLE_RATE // 10, 7)
    seam_jump, far_jump = _local_max(jump, seam_samples, 1), _local_max(jump, far, 1)
    spec = torch.stft(
        torch.from_numpy(x), 512, 160, window=torch.hann_window(512, dtype=torch.float64), return_complex=True
    ).abs()
    flux = torch.relu(spec[:, 1:] - spec[:, :-1]).sum(0).numpy()  # frame t+1 vs t, centred at (t + 1) * 160
    flux = np.concatenate([[0.0], flux])
    seam_frames = [s // 160 for s in seam_samples]
    far_frames = _away(len(flux), seam_frames, 10, 1)
    seam_flux, far_flux = _local_max(flux, seam_frames, 2), _local_max(flux, far_frames, 2)
    return {
        "jump_rank": _rank(seam_jump, far_jump),
        "jump_p99_elsewhere": float(np.quantile(far_jump, 0.99)),
        "jump_at_seams": seam_jump.tolist(),
        "flux_rank": _rank(seam_flux, far_flux),
        "flux_p99_elsewhere": float(np.quantile(far_flux, 0.99)),
        "flux_at_seams": seam_flux.tolist(),
    }


def frame_differences(frames: torch.Tensor) -> np.ndarray:
    """diff[i - 1]: mean absolute difference between frames i-1 and i, pixels in [0, 1]."""
    return (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3)).double().numpy()


def _summary(ranks: list[float]) -> dict:
    ranks = np.asarray(ranks)
    return {
        "mean_rank": float(ranks.mean()),
        "share_above_p95": float((ranks > 0.95).mean()),
        "share_above_p99": float((ranks > 0.99).mean()),
        "seams": len(ranks),
    }


def video_seam_diffs(diffs: dict, frames: torch.Tensor, pieces: list, window_seams, native_seams) -> None:
    """Add to ``diffs`` the frame differences of a long clip's ``frames`` at its window seams and inside chunks,
    and those of independent native ``pieces`` (joined) at their joins and their own chunk boundaries."""
    d = frame_differences(frames)
    boundaries = set(range(VIDEO_FPS - 1, len(d), VIDEO_FPS))
    diffs.setdefault("long: window seams", []).extend(d[s * VIDEO_FPS - 1] for s in window_seams)
    diffs.setdefault("long: inside chunks", []).extend(d[k] for k in range(len(d)) if k not in boundaries)
    d = frame_differences(torch.cat(pieces))
    joins = {s * VIDEO_FPS - 1 for s in native_seams}
    diffs.setdefault("independent native clips: joins", []).extend(d[k] for k in sorted(joins))
    diffs.setdefault("native clips: own chunk boundaries", []).extend(
        d[k] for k in range(VIDEO_FPS - 1, len(d), VIDEO_FPS) if k not in joins
    )


def video_seam_summary(diffs: dict) -> dict:
    """Means of :func:`video_seam_diffs`'s lists, and the window seams ranked within the pairs away from them."""
    video = {name: {"mean": float(np.mean(v)), "n": len(v)} for name, v in diffs.items()}
    seams, native = diffs["long: window seams"], diffs["native clips: own chunk boundaries"]
    video["window seams ranked within native chunk boundaries"] = _summary(_rank(seams, native))
    video["window seams ranked within pairs inside chunks"] = _summary(_rank(seams, diffs["long: inside chunks"]))
    elsewhere = diffs["long: inside chunks"] + native
    video["window seams ranked within all pairs away from seams"] = _summary(_rank(seams, elsewhere))
    video["native chunk boundaries ranked within pairs inside chunks"] = _summary(
        _rank(native, diffs["long: inside chunks"])
    )
    joins = diffs["independent native clips: joins"]
    video["independent joins ranked within native chunk boundaries"] = _summary(_rank(joins, native))
    return video


def measure_seams(pipe, clips, steps: int, seconds: int, window: int, overlap: int) -> dict:
    """T2AV clips of ``seconds``: the windows' latent joined three ways (latent + segment decoding with context,
    per-window decoding cross-faded, and per-second decoding without context), plus independent native clips
    concatenated (no continuation), all through the same seam measures. Every 1 s video chunk boundary is a
    decoder seam too (native clips included), so the video is decoded with each chunk join of
    ``video_chunks.JOINS`` from the same latents: window seams (which fall on chunk boundaries) are ranked within
    the native clips' chunk boundaries and within the frame pairs inside chunks."""
    b = pipe.bundle
    plan = plan_windows(seconds, window, overlap)
    window_seams = [part.start + part.given for part in plan[1:]]
    decode_seams = [start for _, _, start, _ in segments(seconds * 25, window * 25, AUDIO_CONTEXT_STEPS)[1:]]
    ranks: dict[str, dict[str, list[float]]] = {}
    diffs: dict[str, dict[str, list[float]]] = {}

    def add(name: str, scores: dict) -> None:
        for key, value in scores.items():
            if key.endswith("_rank"):
                ranks.setdefault(name, {}).setdefault(key, []).extend(value)

    for i, clip in enumerate(clips):
        text = encode_text(b.text_encoder, clip.caption)
        latent = make_task_latent("t2av", seconds, b.height, b.width, max_seconds=LONG_MAX_SECONDS)
        out = sample_long(b.dit, latent, text, 100 + i, steps, b.cfg_for("t2av"), b.sampler, 1, window, overlap)
        for seam in ("crossfade", "latent"):
            frames, wave = decode_long(pipe, out.latent, window, overlap, seam)
            add(f"{seam}/window seams", audio_seam_scores(wave, [s * SAMPLE_RATE for s in window_seams]))
        add("latent/audio decode-segment seams", audio_seam_scores(wave, [s * 640 for s in decode_seams]))  # latent
        cut = decode_audio_long(b.audio_codec, out.latent.audio, 25, 0)  # 1 s pieces, no context
        add("cut (1 s decode pieces, no context)", audio_seam_scores(cut, [s * SAMPLE_RATE for s in window_seams]))
        native_seams = [k * window for k in range(1, seconds // window)]
        pieces = []
        for k in range(seconds // window):
            piece = make_task_latent("t2av", window, b.height, b.width)
            args = (b.dit, piece, text, 200 + 50 * i + k, steps, b.cfg_for("t2av"), b.sampler)
            pieces.append(pipeline.sample(*args).latent)  # what pipe.generate samples
        joined_wave = torch.cat([pipeline.decode_audio(b.audio_codec, p)[0][0, 0] for p in pieces])
        add(
            "independent native clips (no continuation)",
            audio_seam_scores(joined_wave, [s * SAMPLE_RATE for s in native_seams]),
        )
        for join in JOINS:
            video_seam_diffs(
                diffs.setdefault(join, {}),
                decode_video(b.video_vae, out.latent, join)[0][0],
                [decode_video(b.video_vae, p, join)[0][0] for p in pieces],
                window_seams,
                native_seams,
            )
    result = {name: {key: _summary(v) for key, v in parts.items()} for name, parts in ranks.items()}
    result["video frame difference"] = {join: video_seam_summary(d) for join, d in diffs.items()}
    result["video frame difference"]["pipeline default"] = VIDEO_JOIN
    return result


def measure_chunk_joins(pipe, seeds, seconds: int) -> dict:
    """Held-out clips of ``seconds`` through the video VAE and back, decoded with each chunk join: the frame
    difference at chunk boundaries and inside chunks (beside the clips' own) and the mean absolute error, so what
    the VAE adds at a boundary is told apart from what sampling adds."""
    vae, spec = pipe.bundle.video_vae, SyntheticSpec(seconds=seconds, size=pipe.bundle.height)
    diffs: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        clip = make_clip(seed, spec)
        latent = make_task_latent("v2a", video=encode_video(vae, clip.frames, VIDEO_FPS))
        versions = {"clip itself": clip.frames} | {join: decode_video(vae, latent, join)[0][0] for join in JOINS}
        for name, frames in versions.items():
            d = frame_differences(frames)
            boundaries = set(range(VIDEO_FPS - 1, len(d), VIDEO_FPS))
            out = diffs.setdefault(name, {})
            out.setdefault("chunk boundaries", []).extend(d[k] for k in sorted(boundaries))
            out.setdefault("inside chunks", []).extend(d[k] for k in range(len(d)) if k not in boundaries)
            out.setdefault("mean abs error", []).append(float((frames - clip.frames).abs().mean()))
    result = {"seeds": [seeds[0], seeds[-1]], "seconds": seconds}
    for name, d in diffs.items():
        result[name] = {key: float(np.mean(v)) for key, v in d.items()}
        result[name]["boundaries ranked within inside chunks"] = _summary(
            _rank(d["chunk boundaries"], d["inside chunks"])
        )
    return result


# ---- event F1 at 30 s ---------------------------------------------------------------------------------------


def _f1(task: str, frames, wave, clip) -> float:
    pred = visual_impacts(frames, VIDEO_FPS) if task == "a2v" else audio_onsets(wave, SAMPLE_RATE)
    return event_f1(pred, clip.events, TOLERANCE_S).f1


def measure_f1(pipe, seeds, seconds: int, steps: int, window: int, overlap: int) -> dict:
    """Event F1 of V2A and A2V on the held-out ``seconds``-long clips of ``seeds``: generated in continuing windows
    (long) vs the same clip cut into native-length pieces generated independently and joined (native)."""
    spec = SyntheticSpec(seconds=seconds, size=pipe.bundle.height)
    out = {
        "v2a": {"long": [], "native": [], "counts_exact": True},
        "a2v": {"long": [], "native": [], "counts_exact": True},
    }
    for i, seed in enumerate(seeds):
        clip = make_clip(seed, spec)
        for task in ("v2a", "a2v"):
            kwargs = {"prompt": clip.caption, "steps": steps, "seed": 300 + i}
            video = media.VideoClip(clip.frames, float(VIDEO_FPS))
            audio = media.AudioClip(clip.waveform.view(1, -1), SAMPLE_RATE)
            cond = {"video": video} if task == "v2a" else {"audio": audio}
            res = generate_long(pipe, task, window=window, overlap=overlap, **cond, **kwargs)
            exact = res.frames.shape[1] == seconds * VIDEO_FPS and res.waveform.shape[-1] == seconds * SAMPLE_RATE
            out[task]["counts_exact"] &= bool(exact)
            out[task]["long"].append(_f1(task, res.frames[0], res.waveform[0, 0], clip))
            frames, waves = [], []
            for start in range(0, seconds, window):
                f = clip.frames[start * VIDEO_FPS : (start + window) * VIDEO_FPS]
                w = clip.waveform[start * SAMPLE_RATE : (start + window) * SAMPLE_RATE].view(1, -1)
                piece_cond = (
                    {"video": media.VideoClip(f, float(VIDEO_FPS))}
                    if task == "v2a"
                    else {"audio": media.AudioClip(w, SAMPLE_RATE)}
                )
                piece = pipe.generate(task, duration=window, **piece_cond, **kwargs)
                frames.append(piece.frames[0])
                waves.append(piece.waveform[0, 0])
            out[task]["native"].append(_f1(task, torch.cat(frames), torch.cat(waves), clip))
            print(task, i, out[task]["long"][-1], out[task]["native"][-1], flush=True)
    for task in out:
        for key in ("long", "native"):
            out[task][f"{key}_mean"] = float(np.mean(out[task][key]))
    return out


# ---- peak memory --------------------------------------------------------------------------------------------


def measure_memory(pipe, seconds: int, window: int, overlap: int) -> dict:
    """Peak bytes of live tensors created during a T2AV run of ``seconds`` and of one window, minus the output
    (frames + waveform): the CPU stand-in for the CUDA allocator's peak (bench.TensorPeak)."""
    b = pipe.bundle
    weights = [p for m in b.modules().values() for p in m.parameters()] + [
        t for m in b.modules().values() for t in m.buffers()
    ]
    out = {}
    for name, length in (("one window", window), (f"{seconds} s", seconds)):
        with TensorPeak(weights) as peak:
            res = generate_long(
                pipe, "t2av", "a red ball bounces", duration=length, steps=1, window=window, overlap=overlap
            )
        output = res.frames.untyped_storage().nbytes() + res.waveform.untyped_storage().nbytes()
        out[name] = {
            "peak_mb": peak.peak_mb,
            "output_mb": output / 2**20,
            "beyond_output_mb": peak.peak_mb - output / 2**20,
        }
        out[name]["frames"], out[name]["samples"] = res.frames.shape[1], res.waveform.shape[-1]
        del res
    long_key = f"{seconds} s"
    out["ratio_beyond_output"] = out[long_key]["beyond_output_mb"] / out["one window"]["beyond_output_mb"]
    return out


# ---- guidance on the conditioning modality ------------------------------------------------------------------


def measure_modality_guidance(pipe, seeds, steps: int, scales) -> dict:
    """Event F1 of native-length V2A and A2V on the clips of ``seeds`` at each scale of guidance on the condition
    (``make_model_fn(condition_scale=)``, 1 = off),
    beside chance: the scale-1 outputs scored against the next clip's events (shuffled pairing). Per-clip values
    are kept so scales are compared clip by clip (paired)."""
    b = pipe.bundle
    spec = SyntheticSpec(seconds=b.duration, size=b.height)
    out = {task: {str(s): [] for s in scales} for task in ("v2a", "a2v")}
    preds: dict[str, list] = {"v2a": [], "a2v": []}
    clips = [make_clip(seed, spec) for seed in seeds]
    for i, clip in enumerate(clips):
        text = encode_text(b.text_encoder, clip.caption)
        video = encode_video(b.video_vae, clip.frames, VIDEO_FPS)
        audio = encode_audio(b.audio_codec, clip.waveform.view(1, -1), SAMPLE_RATE)
        for task in ("v2a", "a2v"):
            latent = make_task_latent(
                task,
                video=video if task == "v2a" else None,
                audio=audio if task == "a2v" else None,
                height=None if task == "v2a" else b.height,
                width=None if task == "v2a" else b.width,
            )
            clean, keep = latent.pack(), latent.keep_mask()
            noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(400 + i))
            for s in scales:
                fn = make_model_fn(b.dit, latent, text.y, text.mask, None, None, 1.0, None, float(s), noise)
                x0 = run_sampler(fn, noise, clean, keep, b.sampler, steps)
                done = latent.with_latents(*latent.unpack(x0))
                frames, wave = decode_long(pipe, done, b.duration, 1)
                frames = video.frames if frames is None else frames[0]
                wave = audio.waveform if wave is None else wave[0, 0]
                out[task][str(s)].append(_f1(task, frames, wave, clip))
                if s == scales[0]:
                    preds[task].append(
                        visual_impacts(frames, VIDEO_FPS) if task == "a2v" else audio_onsets(wave, SAMPLE_RATE)
                    )
        print("modality", i, {t: {s: v[-1] for s, v in d.items()} for t, d in out.items()}, flush=True)
    result = {"seeds": [seeds[0], seeds[-1]], "clips": len(seeds)}
    for task, d in out.items():
        n = len(clips)
        chance = [event_f1(preds[task][i], clips[(i + 1) % n].events, TOLERANCE_S).f1 for i in range(n)]
        base = np.asarray(d[str(scales[0])])
        result[task] = {"chance_shuffled": float(np.mean(chance))}
        for s, v in d.items():
            diff = np.asarray(v) - base
            result[task][s] = {
                "mean": float(np.mean(v)),
                "paired_diff_vs_off": float(diff.mean()),
                "paired_diff_se": float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
                "clips_better_worse": [int((diff > 0).sum()), int((diff < 0).sum())],
                "values": v,
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--parts", nargs="+", default=["seams", "joins", "f1", "memory", "modality"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seam-seconds", type=int, default=12)
    parser.add_argument("--f1-seconds", type=int, default=30)
    parser.add_argument("--memory-seconds", type=int, default=60)
    parser.add_argument("--modality-clips", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=None, help="report seeds (default 2,000,000)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    pipe = UniFormPipeline.from_bundle()
    window, overlap = pipe.bundle.duration, 1
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "long_clips.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report["settings"] = {"steps": args.steps, "sampler": pipe.bundle.sampler, "window": window, "overlap": overlap}
    spec2 = SyntheticSpec(seconds=window, size=pipe.bundle.height)
    for part in args.parts:
        started = time.time()
        if part == "seams":
            clips = [make_clip(s, spec2) for s in heldout_seeds(args.clips)]
            report["seams"] = measure_seams(pipe, clips, args.steps, args.seam_seconds, window, overlap)
        elif part == "joins":
            seeds = heldout_seeds(args.clips)
            report["joins"] = measure_chunk_joins(pipe, seeds, args.seam_seconds)
        elif part == "f1":
            seeds = choose_seeds(args.first_seed, args.clips).seeds
            report["f1"] = measure_f1(pipe, seeds, args.f1_seconds, args.steps, window, overlap)
            report["f1"]["seeds"] = seeds
        elif part == "memory":
            report["memory"] = measure_memory(pipe, args.memory_seconds, window, overlap)
        elif part == "modality":
            seeds = choose_seeds(args.first_seed, args.modality_clips).seeds
            report["modality"] = measure_modality_guidance(pipe, seeds, args.steps, (1.0, 2.0, 3.0))
        report.setdefault("minutes", {})[part] = (time.time() - started) / 60
        atomic.write_text(path, json.dumps(report, indent=1))
        print(part, json.dumps(report[part], indent=1)[:3000], flush=True)


if __name__ == "__main__":
    main()
