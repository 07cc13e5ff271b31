"""Through a real ComfyUI server: our models live in ComfyUI's model management, and the Sampler sends live previews.

This module starts its own server (``--preview-method auto``, the test-only probe node of ``comfy_probe/``), on the
CPU like every test server. What the CPU can show: ComfyUI lists our parts among its loaded models with their sizes,
next to a core model (TAESD from random weights the test writes); ``/free`` unloads ours with its own; the next
prompt has ComfyUI load the same parts again (not our loader reading the files again) and gives the same output; a
loader set to offload has ours, and only ours, unloaded after each use. What it cannot: ComfyUI frees memory
before loading a model only on a GPU (``load_models_gpu`` skips that for the CPU), so eviction by another model's
load and the move between GPU and system memory need a CUDA machine.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from comfy_host import COMFY_DIR, COMFY_PYTHON, Server, assert_success, messages, requires_comfyui
from PIL import Image

from uniform_core.bundle import load_bundle, random_tiny_bundle

pytestmark = requires_comfyui

OUR_PARTS = {"UniFormDiT", "VideoVAE", "AudioCodec", "TextEncoder"}
PREVIEW_IMAGE = 1  # binary websocket event types (protocol.BinaryEventTypes)
PREVIEW_IMAGE_WITH_METADATA = 4
STEPS = 3


# Random TAESD weights from ComfyUI's own TAESD classes: what its VAE Loader offers as "taesd" (a core model that
# ComfyUI loads through the same model management, needing no download).
_WRITE_TAESD = """
import os, torch
import comfy.options
comfy.options.enable_args_parsing()
from safetensors.torch import save_file
from comfy.taesd.taesd import Decoder, Encoder
torch.manual_seed(0)
for name, part in (("encoder", Encoder(4)), ("decoder", Decoder(4))):
    save_file(part.state_dict(), os.path.join(os.environ["TAESD_DIR"], f"taesd_{name}.safetensors"))
"""


def _write_taesd(root: Path) -> None:
    folder = root / "models" / "vae_approx"
    folder.mkdir(parents=True)
    env = {**os.environ, "TAESD_DIR": str(folder)}
    subprocess.run([COMFY_PYTHON, "-c", _WRITE_TAESD, "--cpu"], cwd=COMFY_DIR, env=env, check=True, timeout=300)


@pytest.fixture(scope="module")
def probe_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfyui-managed")
    _write_taesd(root)
    srv = Server(root, extra_args=("--preview-method", "auto"), probe=True)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory):
    """A server on the GPU that keeps all but a sliver of it for other programs (``--reserve-vram``), so that each
    model load must first unload the models already there: memory pressure without filling the card."""
    seen = subprocess.run([COMFY_PYTHON, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True)
    if seen.stdout.strip() != b"True":
        pytest.skip("needs a CUDA device for the server (eviction by another model's load happens only on a GPU)")
    root = tmp_path_factory.mktemp("comfyui-gpu")
    _write_taesd(root)
    srv = Server(root, extra_args=("--reserve-vram", "1000"), probe=True, cpu=False)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _generate(server: Server, seed: int, offload: str = "auto") -> dict:
    """t2av on the bundle, 1 s at 64x64 in a few steps, then Video Decode and Audio Decode."""
    return {
        "1": {
            "class_type": "UniFormLoadBundle",
            "inputs": {"bundle": server.bundle, "precision": "fp32", "offload": offload},
        },
        "2": {
            "class_type": "UniFormTextEncode",
            "inputs": {"text_encoder": ["1", 3], "prompt": "a red ball bounces", "negative_prompt": ""},
        },
        "3": {"class_type": "UniFormTaskLatent", "inputs": {"task": "t2av", "duration": 1, "width": 64, "height": 64}},
        "4": {
            "class_type": "UniFormSampler",
            "inputs": {
                "dit": ["1", 0],
                "latent": ["3", 0],
                "text": ["2", 0],
                "seed": seed,
                "steps": STEPS,
                "cfg": 3.0,
                "sampler": "ddim",
                "batch_size": 1,
                "preview_interval": 1,
            },
        },
        "5": {"class_type": "UniFormVideoDecode", "inputs": {"video_vae": ["1", 1], "latent": ["4", 0]}},
        "6": {"class_type": "UniFormAudioDecode", "inputs": {"audio_vae": ["1", 2], "latent": ["4", 0]}},
    }


def _probed(server: Server, seed: int, offload: str = "auto", taesd_width: int = 64) -> dict:
    """The generation graph, plus a branch decoding with a core VAE (TAESD), both ending in the probe (which runs
    every time)."""
    return _generate(server, seed, offload) | {
        "7": {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}},
        "8": {"class_type": "EmptyLatentImage", "inputs": {"width": taesd_width, "height": 64, "batch_size": 1}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["7", 0]}},
        "10": {
            "class_type": "UniFormTestProbe",
            "inputs": {"frames": ["5", 0], "audio": ["6", 0], "also": ["9", 0], "nonce": time.monotonic_ns() % 2**31},
        },
    }


def _run(server: Server, prompt: dict, **extra) -> dict:
    entry = server.wait(server.queue(prompt, **extra))
    assert_success(entry)
    return entry


def _probe(
    server: Server, seed: int, offload: str = "auto", taesd_width: int = 64
) -> tuple[str, list[dict], set[str]]:
    """Run the probed graph: (digest of its frames and sound, ComfyUI's loaded models at its end, the nodes that
    ran rather than came from the cache)."""
    prompt = _probed(server, seed, offload, taesd_width)
    entry = _run(server, prompt)
    cached = set(messages(entry).get("execution_cached", {}).get("nodes", []))
    out = entry["outputs"]["10"]
    return out["digest"][0], out["models"], set(prompt) - cached


def _ours(models: list[dict]) -> dict[str, dict]:
    return {m["class"]: m for m in models if m["class"] in OUR_PARTS}


def _free(server: Server, **flags) -> None:
    """POST /free; the server acts on it between two prompts, at once when idle (so within the second waited)."""
    requests.post(f"{server.url}/free", json=flags, timeout=30).raise_for_status()
    time.sleep(1)


def _part_sizes(server: Server) -> dict[str, int]:
    bundle = load_bundle() if server.bundle == "uniform-tiny (embedded)" else random_tiny_bundle(0)
    return {type(m).__name__: sum(t.nbytes for t in m.state_dict().values()) for m in bundle.modules().values()}


def test_comfyui_loads_unloads_and_reloads_our_models(probe_server):
    first, models, _ = _probe(probe_server, seed=0)
    loaded = _ours(models)
    assert set(loaded) == OUR_PARTS, f"ComfyUI's loaded models lack some of ours: {models}"
    assert {name: m["size"] for name, m in loaded.items()} == _part_sizes(probe_server)
    assert all(m["loaded_size"] == m["size"] and m["device"] == "cpu" for m in loaded.values())
    assert "TAESD" in {m["class"] for m in models}  # next to a core model, in the same list

    _free(probe_server, unload_models=True)
    _, remaining, ran = _probe(probe_server, seed=0)  # all but the probe from the cache: nothing loads
    assert ran == {"10"} and remaining == [], f"still loaded after /free: {remaining}"

    # The next prompt (another seed, so the sampler and decoders run again) has ComfyUI load the same parts again:
    # the loader's output comes from the cache, so these are the very patchers it listed before.
    _, models, ran = _probe(probe_server, seed=1)
    assert {"4", "5", "6"} <= ran and "1" not in ran
    reloaded = _ours(models)
    assert set(reloaded) == {"UniFormDiT", "VideoVAE", "AudioCodec"}  # the text encoding came from the cache
    assert all(reloaded[name]["patcher"] == loaded[name]["patcher"] for name in reloaded)

    # Everything dropped (models and cached outputs): the graph loads from the files again, with the same result.
    _free(probe_server, unload_models=True, free_memory=True)
    again, models, ran = _probe(probe_server, seed=0)
    assert "1" in ran and set(_ours(models)) == OUR_PARTS and again == first


def test_offload_unloads_ours_right_after_use(probe_server):
    digest, models, ran = _probe(probe_server, seed=0, offload="offload")
    assert "1" in ran and not _ours(models), f"offload left ours loaded: {models}"
    assert "TAESD" in {m["class"] for m in models}  # and only ours
    assert digest == _probe(probe_server, seed=0)[0]  # the same clip as with auto


def test_loading_another_model_evicts_ours_on_a_gpu(gpu_server):
    """With almost no memory to spare every load unloads the models already loaded, ours and ComfyUI's alike; so
    after each run only the last model loaded is left, and which branch ran last decides whose it is."""

    def classes(models: list[dict]) -> set[str]:
        assert all(m["device"].startswith("cuda") for m in models), models
        return {m["class"] for m in models}

    _probe(gpu_server, seed=0)  # both branches, in ComfyUI's order
    _, models, ran = _probe(gpu_server, seed=1)  # only ours runs again
    ours = _ours(models)
    assert {"4", "5", "6"} <= ran and "9" not in ran and ours and "TAESD" not in classes(models), models

    _, models, ran = _probe(gpu_server, seed=1, taesd_width=72)  # only the core VAE's branch runs again
    assert ran == {"8", "9", "10"} and classes(models) == {"TAESD"}, models

    _, models, ran = _probe(gpu_server, seed=2, taesd_width=72)  # ours again: the same parts, loaded back
    assert "TAESD" not in classes(models) and set(_ours(models)) == set(ours), models
    assert all(m["patcher"] == ours[name]["patcher"] for name, m in _ours(models).items())


def _previews(server: Server, prompt: dict, extra_data: dict | None = None) -> list[Image.Image]:
    """Run ``prompt`` as a websocket client and return the preview images the server sent meanwhile."""
    import websocket

    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}", timeout=30)
    images = []
    try:
        prompt_id = server.queue(prompt, client_id=client_id, extra_data=extra_data or {})
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            message = ws.recv()
            if isinstance(message, bytes):
                (event,) = struct.unpack(">I", message[:4])
                if event == PREVIEW_IMAGE:
                    images.append(Image.open(io.BytesIO(message[8:])))
                elif event == PREVIEW_IMAGE_WITH_METADATA:
                    (length,) = struct.unpack(">I", message[4:8])
                    images.append(Image.open(io.BytesIO(message[8 + length :])))
                continue
            data = json.loads(message)
            if data["type"] == "executing" and data["data"].get("node") is None:
                if data["data"].get("prompt_id") == prompt_id:
                    break
            if data["type"] == "execution_error":
                raise AssertionError(f"run failed: {data['data'].get('exception_message')}")
    finally:
        ws.close()
    return images


def test_sampler_sends_live_previews_over_the_websocket(probe_server):
    images = _previews(probe_server, _probed(probe_server, seed=2))
    assert len(images) == STEPS, f"expected one preview per step, got {len(images)}"
    # 4 of the 5 latent frames side by side (8x8 cells drawn 8 px each) over a 21 px sound strip, 256x87 px,
    # scaled by the server to fit its --preview-size (512)
    assert all(
        im.format == "JPEG" and im.width == 512 and abs(im.width / im.height - 256 / 87) < 0.02 for im in images
    )


def test_no_previews_with_preview_method_none(server):
    prompt = _generate(server, seed=2) | {"7": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}}
    images = _previews(server, prompt)  # the session's server, started without --preview-method
    assert images == []
