"""Decode memory against clip length: what `pipeline.decode_video` and `decode_audio` need beyond their output."""

from __future__ import annotations

import torch

from ..pipeline import decode_audio, decode_video, make_task_latent
from ..tasks import FRAMES_PER_CHUNK
from .meters import PeakMemory, TensorPeak, device_name, measure


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
    from ..codecs.video_vae import VideoVAE

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


def bench_audio_decode(preset: str = "tiny", durations: tuple[int, ...] = (4, 8, 16), device: str = "cpu") -> dict:
    """Peak memory of ``pipeline.decode_audio`` (audio VAE, then the vocoder in pieces) per clip length, beyond the
    (1, N) float32 waveform, and of each of the two parts alone (the VAE beyond its mel, the vocoder beyond the
    waveform). ``ratios``: each value for every clip over the shortest clip's. Random weights of ``preset``."""
    from ..codecs.audio import AudioCodec, AudioVAE, Vocoder

    dev = torch.device(device)
    torch.manual_seed(0)
    codec = AudioCodec(AudioVAE.from_preset(preset), Vocoder.from_preset(preset)).to(dev).eval()
    weights = [*codec.parameters(), *codec.buffers()]
    rows = []
    for seconds in durations:
        latent = make_task_latent("t2av", duration=seconds, height=16, width=16)
        latent = latent.with_latents(latent.video, torch.randn_like(latent.audio))
        z = latent.audio.to(dev)
        m = measure(f"audio decode {seconds} s", lambda latent=latent: decode_audio(codec, latent), dev, 1)
        with torch.no_grad():
            wave, whole = _peak(lambda lat=latent: decode_audio(codec, lat)[0], [*weights, latent.audio], dev)
            mel, vae = _peak(lambda z=z: codec.vae.decode(z / codec.scaling_factor), [*weights, z], dev)
            _, vocoder = _peak(lambda mel=mel: codec.vocoder(mel), [*weights, mel], dev)
        output_mb, mel_mb = wave.numel() * 4 / 2**20, mel.numel() * mel.element_size() / 2**20
        rows.append(
            {
                "seconds": seconds,
                "time_s": m.median_s,
                "output_mb": output_mb,
                "beyond_output_mb": whole - output_mb,
                "vae_beyond_mel_mb": vae - mel_mb,
                "vocoder_beyond_output_mb": vocoder - output_mb,
            }
        )
    keys = ("beyond_output_mb", "vae_beyond_mel_mb", "vocoder_beyond_output_mb")
    ratios = {k: [r[k] / rows[0][k] if rows[0][k] > 0 else None for r in rows] for k in keys}
    return {"preset": preset, "device": device_name(dev), "rows": rows, "ratios": ratios}


def _peak(fn, existing, device: torch.device) -> tuple[torch.Tensor, float]:
    """``fn()``'s result and its peak MB: the CUDA allocator's peak, or the live tensor storages on the CPU."""
    if device.type == "cuda":
        with PeakMemory(device) as mem:
            out = fn()
        return out, mem.peak_mb
    with TensorPeak(existing) as tensors:
        out = fn()
    return out, tensors.peak_mb
