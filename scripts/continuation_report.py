"""Trained continuation against training-free: long T2AV clips sampled with each ``given`` mode on the same
captions and seeds, scored at their window seams and as a whole. Writes <out>/continuation.json (the README's
"Long clips" comparison comes from it).

    python scripts/continuation_report.py --out runs/long-clips --clips 6 --seconds 12 --steps 10

On a DiT trained with the ``continue`` task, ``"clean"`` samples every window after the first with that token
(the trained way); ``"clean-video"`` and ``"noised"`` run the same weights training-free with the T2AV token.
Measures per mode: the video frame difference at window seams and inside chunks, the audio sample jump and
spectral flux at window seams ranked within the same measure away from them (long_clips_report's), the clip's own
AV sync (event F1 of its audio onsets against its video's impacts, +-100 ms) and the captioned colour's share of
frames (its hold across windows). Clips come from the tuning seeds unless --first-seed says otherwise: this
comparison chooses what ships.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from long_clips_report import TOLERANCE_S, audio_seam_scores, frame_differences

from uniform_core import atomic
from uniform_core.eval.appearance import colour_track, frame_colours, object_map
from uniform_core.eval.events import audio_onsets, event_f1, visual_impacts
from uniform_core.long import decode_long, plan_windows, sample_long
from uniform_core.long.windows import GIVEN_MODES
from uniform_core.pipeline import UniFormPipeline, encode_text, make_task_latent
from uniform_core.tasks import LONG_MAX_SECONDS, SAMPLE_RATE, VIDEO_FPS
from uniform_core.train.synthetic import HELDOUT_FIRST_SEED, SyntheticSpec, make_clip


def score_clip(frames: torch.Tensor, wave: torch.Tensor, seams: list[int], colour: str) -> dict:
    """One long T2AV clip's seam and whole-clip measures (``seams`` in seconds)."""
    d = frame_differences(frames)
    at_seams = [d[s * VIDEO_FPS - 1] for s in seams]
    boundaries = set(range(VIDEO_FPS - 1, len(d), VIDEO_FPS))
    audio = audio_seam_scores(wave, [s * SAMPLE_RATE for s in seams])
    m = object_map(frames)
    sync = event_f1(audio_onsets(wave, SAMPLE_RATE), visual_impacts(m, VIDEO_FPS), TOLERANCE_S)
    return {
        "video_diff_at_seams": float(np.mean(at_seams)),
        "video_diff_inside_chunks": float(np.mean([d[k] for k in range(len(d)) if k not in boundaries])),
        "audio_jump_rank": float(np.mean(audio["jump_rank"])),
        "audio_flux_rank": float(np.mean(audio["flux_rank"])),
        "av_sync_f1": sync.f1,
        "colour_frames": colour_track(frame_colours(m), [colour]).share,
    }


def measure(pipe: UniFormPipeline, seeds: list[int], modes: list[str], seconds: int, steps: int) -> dict:
    b = pipe.bundle
    window, overlap = b.duration, 1
    seams = [part.start + part.given for part in plan_windows(seconds, window, overlap)[1:]]
    spec = SyntheticSpec(seconds=window, size=b.height)
    per_mode: dict[str, list[dict]] = {mode: [] for mode in modes}
    for i, seed in enumerate(seeds):
        clip = make_clip(seed, spec)
        text = encode_text(b.text_encoder, clip.caption)
        (obj,) = clip.attributes["objects"]
        for mode in modes:
            latent = make_task_latent("t2av", seconds, b.height, b.width, max_seconds=LONG_MAX_SECONDS)
            args = (b.dit, latent, text, 100 + i, steps, b.cfg_for("t2av"), b.sampler, 1, window, overlap)
            out = sample_long(*args, given=mode)
            frames, wave = decode_long(pipe, out.latent, window, overlap)
            per_mode[mode].append(score_clip(frames[0], wave[0, 0], seams, obj["colour"]))
            print(seed, mode, per_mode[mode][-1], flush=True)
    result = {"seeds": seeds, "seconds": seconds, "steps": steps, "sampler": b.sampler, "modes": {}}
    first = modes[0]
    for mode, rows in per_mode.items():
        summary = {}
        for key in rows[0]:
            values = np.array([r[key] for r in rows])
            diff = values - np.array([r[key] for r in per_mode[first]])
            summary[key] = {
                "mean": float(values.mean()),
                f"paired_diff_vs_{first}": float(diff.mean()),
                "paired_diff_se": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0,
                "values": values.tolist(),
            }
        result["modes"][mode] = summary
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--modes", nargs="+", default=["clean", "clean-video", "noised"], choices=list(GIVEN_MODES))
    parser.add_argument("--first-seed", type=int, default=HELDOUT_FIRST_SEED)
    parser.add_argument("--bundle", default=None, help="bundle folder (default: the embedded uniform-tiny)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    pipe = UniFormPipeline.from_bundle(args.bundle)
    seeds = list(range(args.first_seed, args.first_seed + args.clips))
    report = measure(pipe, seeds, args.modes, args.seconds, args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "continuation.json", json.dumps(report, indent=1))
    print(json.dumps({m: {k: v["mean"] for k, v in s.items()} for m, s in report["modes"].items()}, indent=1))


if __name__ == "__main__":
    main()
