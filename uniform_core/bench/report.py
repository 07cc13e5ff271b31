"""The bench report as Markdown and as JSON."""

from __future__ import annotations

import json
import os

from ..atomic import write_text


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
                f"in DiT {e['model_s']:.4f} s, outside {e['overhead_s']:.4f} s = {e['overhead_pct']:.2f} %; "
                f"loop alone (DiT replayed) {e['replayed_outside_s']:.4f} s = {e['replayed_outside_pct']:.2f} %"
            )
        if "total_peak_mb" in e:
            notes.append(f"total allocated {e['total_peak_mb'] / 1024:.2f} GB")
        if "achieved_tflops" in e:
            notes.append(_train_note(e))
        if "stages_s" in e:
            notes.append(f"stage rows add up to {e['stages_s']:.4f} s ({r['median_s'] / e['stages_s']:.3f}x)")
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
    return "\n".join(lines + _extra_sections(report))


def _train_note(e: dict) -> str:
    """A training-step row: its FLOP, what they make per second, and the memory the estimate expected."""
    speed = f"{e['achieved_tflops']:.3g} TFLOP/s"
    if "mfu_pct" in e:
        speed += f" = {e['mfu_pct']:.1f} % MFU of {e['peak_tflops']:g} TFLOP/s dense bf16"
    else:
        speed += " achieved (this device's peak is not known: no MFU)"
    return (
        f"{e['tokens']:,} tokens a sample, {e['flop']:.3e} FLOP a step: {speed}; estimated peak growth "
        f"{e['estimated_peak_mb']:.1f} MB (activations), total {e['estimated_total_mb'] / 1024:.2f} GB"
    )


def _extra_sections(report: dict) -> list[str]:
    lines = []
    audio = report.get("audio_decode_memory")
    if audio:
        r8, r16 = (audio["ratios"]["beyond_output_mb"][i] for i in (1, -1))
        lines += [
            "",
            f"audio decode memory, codec `{audio['preset']}` on {audio['device']}: beyond the output, "
            f"8 s / 4 s = {r8:.3f}, 16 s / 4 s = {r16:.3f}",
            "",
            "| clip | decode s | output MB | beyond output MB | VAE beyond its mel MB | vocoder beyond output MB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in audio["rows"]:
            lines.append(
                f"| {r['seconds']} s | {r['time_s']:.2f} | {r['output_mb']:.2f} | {r['beyond_output_mb']:.1f} | "
                f"{r['vae_beyond_mel_mb']:.1f} | {r['vocoder_beyond_output_mb']:.2f} |"
            )
    start = report.get("startup")
    if start:
        lines += [
            "",
            f"start-up: import torch {start['import_torch_s']:.2f} s, import uniform_core.pipeline "
            f"{start['import_pipeline_s']:.2f} s (ratio {start['import_ratio']:.2f}); bundle load: first "
            f"{start['first_load_s']:.2f} s wall / {start['first_load_cpu_s']:.2f} s CPU (deferred imports "
            f"included), then {start['load_s']:.2f} s wall / {start['load_cpu_s']:.2f} s CPU",
        ]
    growth = report.get("dit_growth")
    if growth:
        steps = ", ".join(f"{s} s: {v:.4f}" for s, v in growth["step_s"].items())
        lines += [
            "",
            f"DiT step against clip length ({growth['clock']}, s): {steps}; exponent {growth['exponent']:.3f} "
            f"(between the two longest {growth['last_exponent']:.3f})",
        ]
    compare = report.get("compare")
    if compare:
        m = compare["median_s"]
        lines += [
            "",
            f"against a plain SDPA transformer ({compare['depth']} block pairs, latent {compare['latent']}, "
            f"{compare['dtype']}, {compare['clock']}): STDiT3-XL/2 {m['stdit3_xl2']:.4f} s vs "
            f"{m['plain_stdit3_tokens']:.4f} s = {compare['stdit3_over_plain']:.3f}x; UniForm xl "
            f"{m['uniform_xl']:.4f} s vs {m['plain_uniform_tokens']:.4f} s = {compare['uniform_over_plain']:.3f}x",
        ]
    return lines


def write_json(report: dict, path: str | os.PathLike) -> None:
    write_text(path, json.dumps(report, indent=1) + "\n")
