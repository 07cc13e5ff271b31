"""`uniform-av bench`: time and peak memory of every stage and task, start-up, decode memory against clip length,
DiT cost against clip length, and our DiTs against a plain SDPA transformer of the same size (BENCHMARKS.md)."""

from .decode_memory import bench_audio_decode, bench_video_decode
from .meters import Measurement, PeakMemory, TensorPeak, measure
from .report import to_markdown, write_json
from .stages import random_bundle, run_bench

__all__ = [
    "Measurement",
    "PeakMemory",
    "TensorPeak",
    "bench_audio_decode",
    "bench_video_decode",
    "measure",
    "random_bundle",
    "run_bench",
    "to_markdown",
    "write_json",
]
