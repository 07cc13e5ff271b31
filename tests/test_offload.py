"""Offload moves each part to the device at most once per generate call, nothing on a second call when the parts
fit the budget, and never copies weights back: the same result as a pipeline without offload. (On this CPU the
device is the CPU too, so the moves are counted, not timed; pinned memory needs CUDA.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uniform_core.bundle import random_tiny_bundle
from uniform_core.errors import InputError
from uniform_core.offload import Offloader
from uniform_core.pipeline import UniFormPipeline


def _generate(pipe: UniFormPipeline):
    return pipe.generate("t2av", prompt="a drum", duration=1, steps=2, seed=3)


def _moves(pipe: UniFormPipeline) -> dict[str, int]:
    return {part: pipe.offloader.moves[id(m)] for part, m in pipe.bundle.modules().items()}


def test_each_part_moves_once_a_call_and_the_result_is_unchanged():
    plain = _generate(UniFormPipeline(random_tiny_bundle(seed=0), precision="fp32"))
    pipe = UniFormPipeline(random_tiny_bundle(seed=0), precision="fp32", offload=True)
    first = _generate(pipe)
    assert _moves(pipe) == dict.fromkeys(pipe.bundle.modules(), 1)
    _generate(pipe)  # one part at a time: each comes back once more
    assert _moves(pipe) == dict.fromkeys(pipe.bundle.modules(), 2)
    assert torch.equal(first.frames, plain.frames) and torch.equal(first.waveform, plain.waveform)


def test_a_second_call_moves_nothing_when_the_parts_fit_the_budget():
    pipe = UniFormPipeline(random_tiny_bundle(seed=0), precision="fp32", offload=True, offload_budget_mb=1e4)
    _generate(pipe)
    _generate(pipe)
    assert _moves(pipe) == dict.fromkeys(pipe.bundle.modules(), 1)


def test_the_least_recently_used_part_leaves_and_its_weights_are_the_host_copy():
    parts = [nn.Linear(64, 64) for _ in range(3)]
    size = Offloader.size_bytes(parts[0])
    offloader = Offloader(parts, torch.device("cpu"), budget_bytes=2 * size)
    host = [p.weight.data_ptr() for p in parts]
    for p in (parts[0], parts[1], parts[0], parts[2]):  # parts[1] is the least recently used when parts[2] comes
        with offloader.use(p):
            p(torch.randn(1, 64))
    assert [offloader.moves[id(p)] for p in parts] == [1, 1, 1]
    assert offloader._resident == [parts[0], parts[2]]
    assert parts[1].weight.data_ptr() == host[1]  # evicted: back on its own host storage, nothing copied


def test_a_negative_budget_is_refused():
    with pytest.raises(InputError, match="offload_budget_mb"):
        UniFormPipeline(random_tiny_bundle(seed=0), offload=True, offload_budget_mb=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu_check.sh runs it)")
def test_on_cuda_the_host_copies_are_pinned_and_nothing_comes_back():
    parts = [nn.Linear(256, 256) for _ in range(2)]
    expected = [p(torch.ones(1, 256)) for p in parts]
    offloader = Offloader(parts, torch.device("cuda"))
    assert all(t.is_pinned() for p in parts for t in p.parameters())
    host = [p.weight.data_ptr() for p in parts]
    for p, want in zip(parts, expected, strict=True):
        with offloader.use(p):
            assert p.weight.is_cuda
            torch.testing.assert_close(p(torch.ones(1, 256, device="cuda")).cpu(), want, rtol=1e-4, atol=1e-5)
    assert parts[0].weight.data_ptr() == host[0] and parts[1].weight.is_cuda  # one part at a time
    pipe = UniFormPipeline(random_tiny_bundle(seed=0), device="cuda", precision="fp32", offload=True)
    _generate(pipe)
    assert _moves(pipe) == dict.fromkeys(pipe.bundle.modules(), 1)
