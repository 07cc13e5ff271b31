"""Shared fixtures. The node pack is loaded the way ComfyUI loads it (from its folder, under a unique module name),
because the folder's name is no identifier and the pack's ``nodes`` package would clash with ComfyUI's ``nodes``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PACK_DIR = Path(__file__).resolve().parents[1]
PACK_MODULE = "uniform_pack_under_test"


def load_pack():
    """The pack's root module (``__init__.py``), imported once per session."""
    if PACK_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK_MODULE, PACK_DIR / "__init__.py", submodule_search_locations=[str(PACK_DIR)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_MODULE] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK_MODULE]


@pytest.fixture(scope="session")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def bundle():
    """A randomly initialised tiny bundle (seed 0), one per test module; a module may define its own."""
    from uniform_core.bundle import random_tiny_bundle

    return random_tiny_bundle(seed=0)


@pytest.fixture(scope="module")
def pipe(bundle):
    """The pipeline over this module's ``bundle``."""
    from uniform_core.pipeline import UniFormPipeline

    return UniFormPipeline(bundle)
