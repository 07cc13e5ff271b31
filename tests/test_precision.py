"""The one precision policy: what ``auto`` and explicit precisions give each part, and that the pipeline and the
nodes both apply it."""

from __future__ import annotations

import pytest
import torch

from uniform_core.bundle import random_tiny_bundle
from uniform_core.errors import InputError
from uniform_core.pipeline import UniFormPipeline
from uniform_core.precision import PARTS, dit_dtype, part_dtype, part_name

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


def test_auto_is_fp32_on_the_cpu_for_every_part():
    assert {part_dtype(p, "auto", "cpu") for p in PARTS} == {FP32}


def test_auto_on_a_gpu_follows_its_bf16_support():
    assert dit_dtype("auto", "cuda", bf16_ok=True) == BF16
    assert dit_dtype("auto", "cuda", bf16_ok=False) == FP16
    bf16 = {p: part_dtype(p, "auto", "cuda", bf16_ok=True) for p in PARTS}
    assert bf16 == {"dit": BF16, "text_encoder": BF16, "video_vae": BF16, "audio_codec": FP32}
    fp16 = {p: part_dtype(p, "auto", "cuda", bf16_ok=False) for p in PARTS}
    assert fp16 == {"dit": FP16, "text_encoder": FP32, "video_vae": FP32, "audio_codec": FP32}


def test_an_explicit_precision_sets_the_dit_and_bad_names_are_refused():
    assert part_dtype("dit", "bf16", "cpu") == BF16
    assert part_dtype("audio_codec", "bf16", "cpu") == FP32
    with pytest.raises(InputError, match="precision must be one of"):
        dit_dtype("float8", "cpu")
    with pytest.raises(InputError, match="part must be one of"):
        part_dtype("unet", "auto", "cpu")


def test_the_pipeline_casts_each_part_by_the_policy():
    bundle = random_tiny_bundle()
    UniFormPipeline(bundle, precision="bf16")
    dtypes = {name: next(m.parameters()).dtype for name, m in bundle.modules().items()}
    assert dtypes == {name: part_dtype(name, "bf16", "cpu") for name in PARTS}
    assert {name: part_name(m) for name, m in bundle.modules().items()} == {n: n for n in bundle.modules()}
