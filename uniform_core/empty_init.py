"""Build a module whose weights a file is about to replace, without paying for its random initialisation.

``torch.device("meta")`` alone still runs every ``reset_parameters`` through the meta device's Python dispatch,
which was most of uniform-tiny's bundle load (BENCHMARKS.md, start-up). Inside :func:`empty_init` the
``torch.nn.init`` functions return their tensor untouched, as transformers' ``no_init_weights`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import torch

_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
)


def _keep(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


@contextlib.contextmanager
def empty_init() -> Iterator[None]:
    """Modules built inside live on the meta device with no init computed; load them with ``assign=True``."""
    with contextlib.ExitStack() as stack:
        for name in _INIT_FUNCTIONS:
            stack.enter_context(mock.patch.object(torch.nn.init, name, _keep))
        stack.enter_context(torch.device("meta"))
        yield
