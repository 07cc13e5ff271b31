"""Shared fixtures. The node pack is loaded the way ComfyUI loads it (from its folder, under a unique module name),
because the folder's name is no identifier and the pack's ``nodes`` package would clash with ComfyUI's ``nodes``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helper modules (comfy_host, fault_injection) by plain import

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


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real ComfyUI server for every test module that needs it (``comfy_host``); skipped without a checkout."""
    from comfy_host import COMFY_DIR, Server

    if not COMFY_DIR:
        pytest.skip("no ComfyUI to test against: set UNIFORM_COMFYUI_DIR")
    srv = Server(tmp_path_factory.mktemp("comfyui"))
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def uploaded_video(server, tmp_path_factory) -> str:
    """An MP4 with sound (a synthetic clip at 24 fps) uploaded to the server's input folder."""
    from comfy_host import MEDIA_FPS, MEDIA_SECONDS

    from uniform_core import media
    from uniform_core.train.synthetic import SyntheticSpec, make_clip

    spec = SyntheticSpec(seconds=MEDIA_SECONDS)
    clip = make_clip(3, spec)
    frames = media.resample_fps(clip.frames, spec.fps, MEDIA_FPS)
    path = tmp_path_factory.mktemp("media") / "uniform_test_clip.mp4"
    media.write_mp4(path, frames, MEDIA_FPS, media.AudioClip(clip.waveform.view(1, -1), spec.sample_rate))
    return server.upload(path)


@pytest.fixture
def one_thread():
    """torch on one thread for the test (codec tests whose kernels pick their paths by thread count)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
