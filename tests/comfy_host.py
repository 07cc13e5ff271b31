"""A real ComfyUI server for the tests: its process, the HTTP calls the tests make, and the prompt helpers.

Needs a ComfyUI checkout: ``UNIFORM_COMFYUI_DIR=/path/to/ComfyUI`` and, if its packages live elsewhere,
``UNIFORM_COMFYUI_PYTHON=/path/to/venv/bin/python`` (with the library's dependencies installed there; the server
imports this checkout's ``uniform_core`` in any case).
The server runs on 127.0.0.1 with ``--cpu`` and fresh input/output/temp/user folders; the pack is linked into a
temporary custom_nodes folder given through ``--extra-model-paths-config``, so the checkout is not touched.
Test modules that need it mark themselves ``pytestmark = requires_comfyui`` and take the ``server`` fixture
(``conftest.py``: one server for the whole session).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from uniform_core.bundle import default_bundle_available, random_tiny_bundle, save_bundle

COMFY_DIR = os.environ.get("UNIFORM_COMFYUI_DIR")
COMFY_PYTHON = os.environ.get("UNIFORM_COMFYUI_PYTHON", sys.executable)
requires_comfyui = pytest.mark.skipif(
    not COMFY_DIR,
    reason="no ComfyUI to test against: set UNIFORM_COMFYUI_DIR to a ComfyUI checkout "
    "(and UNIFORM_COMFYUI_PYTHON to the Python that runs it)",
)

PACK_DIR = Path(__file__).resolve().parents[1]
PROBE_DIR = Path(__file__).resolve().parent / "comfy_probe"
API_DIR = PACK_DIR / "workflows" / "api"
API_FILES = sorted(API_DIR.glob("*.json"))
LINK_NAME = "ComfyUI-UniForm"
EMBEDDED_BUNDLE = "uniform-tiny (embedded)"
START_TIMEOUT = 420  # s; a cold start takes 10-25 s, over 180 s on a busy 2-core machine
RUN_TIMEOUT = 600  # s per prompt
MEDIA_SECONDS = 2  # length of the uploaded test video
MEDIA_EXTENSIONS = (".mp4", ".webm", ".flac", ".mp3", ".opus", ".wav")
MEDIA_FPS = 24.0  # not the model's 17 fps, so conforming is exercised
EXTEND_SECONDS = 2  # what the long workflow's Extend adds in these runs


def load_test_module(name: str):
    spec = importlib.util.spec_from_file_location(f"uniform_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ComfyUI server process and the few HTTP calls the tests make."""

    def __init__(self, root: Path, extra_args: tuple[str, ...] = (), probe: bool = False, cpu: bool = True):
        """``extra_args``: more server flags; ``probe``: also load the test-only nodes of ``comfy_probe/`` and list
        ``root/models/vae_approx`` (what ComfyUI's model management holds; a core model the test writes);
        ``cpu=False``: let the server use its GPU."""
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "server.log"
        dirs = {name: root / name for name in ("input", "output", "temp", "user", "custom_nodes")}
        for d in dirs.values():
            d.mkdir()
        (dirs["custom_nodes"] / LINK_NAME).symlink_to(PACK_DIR, target_is_directory=True)
        paths = {"custom_nodes": str(dirs["custom_nodes"])}
        if probe:
            (dirs["custom_nodes"] / PROBE_DIR.name).symlink_to(PROBE_DIR, target_is_directory=True)
            paths["vae_approx"] = str(root / "models" / "vae_approx")
        self.bundle = EMBEDDED_BUNDLE
        if not default_bundle_available():  # until the embedded default is trained, run the graphs on random weights
            save_bundle(random_tiny_bundle(0), root / "models" / "random-tiny")
            paths["uniform"] = str(root / "models")
            self.bundle = "random-tiny"
        config = root / "extra_model_paths.yaml"
        config.write_text(json.dumps({"uniform_test": paths}))
        self.output_dir = dirs["output"]
        args = [
            COMFY_PYTHON,
            "main.py",
            *(["--cpu"] if cpu else []),
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        args += ["--disable-auto-launch", "--database-url", "sqlite:///:memory:"]
        args += ["--extra-model-paths-config", str(config), *extra_args]
        for name in ("input", "output", "temp", "user"):
            args += [f"--{name}-directory", str(dirs[name])]
        # The server imports this checkout's library, whatever uniform_core its Python has installed: a folder
        # holding only uniform_core goes first on its path (the whole pack folder would shadow ComfyUI's `nodes`).
        library = root / "library"
        library.mkdir()
        (library / "uniform_core").symlink_to(PACK_DIR / "uniform_core", target_is_directory=True)
        path = os.pathsep.join(p for p in (str(library), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
        env["NUMBA_CACHE_DIR"] = str(root / "numba")  # librosa's JIT cache: two servers writing one cache can crash
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(args, cwd=COMFY_DIR, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"ComfyUI exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}"
            try:
                if requests.get(f"{self.url}/system_stats", timeout=5).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(1)
        raise AssertionError(f"ComfyUI did not answer within {START_TIMEOUT} s:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()

    def get(self, path: str, **kwargs):
        r = requests.get(f"{self.url}{path}", timeout=30, **kwargs)
        r.raise_for_status()
        return r

    def upload(self, path: Path) -> str:
        with open(path, "rb") as f:
            r = requests.post(
                f"{self.url}/upload/image",
                files={"image": (path.name, f, "video/mp4")},
                data={"type": "input", "overwrite": "true"},
                timeout=30,
            )
        r.raise_for_status()
        return r.json()["name"]

    def queue(self, prompt: dict, workflow: dict | None = None, **extra) -> str:
        """Queue an API-format ``prompt``; ``workflow`` (UI format) is embedded in the outputs, as the UI does;
        ``extra``: more fields of the request (``client_id``, ``extra_data``)."""
        body = {"prompt": prompt, **extra}
        if workflow is not None:
            body["extra_data"] = {**body.get("extra_data", {}), "extra_pnginfo": {"workflow": workflow}}
        r = requests.post(f"{self.url}/prompt", json=body, timeout=30)
        assert r.status_code == 200, f"prompt rejected ({r.status_code}): {r.text[:2000]}"
        body = r.json()
        assert not body.get("node_errors"), f"prompt partly invalid: {body['node_errors']}"
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = RUN_TIMEOUT) -> dict:
        """The history entry of ``prompt_id`` once it has finished (success, error or interrupted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"ComfyUI died:\n{self.log_text()[-4000:]}"
            entry = self.get(f"/history/{prompt_id}").json().get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"]["status_str"] in ("success", "error"):
                    return entry
            time.sleep(0.5)
        requests.post(f"{self.url}/interrupt", timeout=10)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")

    def running(self, prompt_id: str) -> bool:
        return any(item[1] == prompt_id for item in self.get("/queue").json()["queue_running"])


def messages(entry: dict) -> dict:
    return {event: data for event, data in entry["status"]["messages"]}


def assert_success(entry: dict) -> None:
    if entry["status"]["status_str"] != "success":
        error = messages(entry).get("execution_error", {})
        raise AssertionError(
            f"run failed in {error.get('node_type')}: {error.get('exception_message')}\n"
            + "".join(error.get("traceback", []))
        )


def saved_video(server: Server, entry: dict) -> Path:
    """The first video file a finished prompt saved, in the server's output folder."""
    for output in entry["outputs"].values():
        for item in (i for value in output.values() if isinstance(value, list) for i in value):
            if (
                isinstance(item, dict)
                and item.get("type") == "output"
                and item["filename"].endswith((".mp4", ".webm"))
            ):
                return server.output_dir / item["subfolder"] / item["filename"]
    raise AssertionError(f"the prompt saved no video: {entry['outputs']}")


def load_prompt(server: Server, path: Path, uploaded_video: str) -> dict:
    prompt = json.loads(path.read_text())
    for node in prompt.values():
        if node["class_type"] == "UniFormLoadBundle" and node["inputs"]["bundle"] == EMBEDDED_BUNDLE:
            node["inputs"]["bundle"] = server.bundle
        if node["class_type"] == "LoadVideo":
            node["inputs"]["file"] = uploaded_video
        if node["class_type"] == "LoadAudio":
            node["inputs"]["audio"] = uploaded_video
        if node["class_type"] == "UniFormExtend":  # 2 windows, not 28: the 30 s graph takes over 10 min on 2 cores
            node["inputs"]["seconds"] = min(node["inputs"]["seconds"], EXTEND_SECONDS)
    return prompt


def expected_seconds(prompt: dict) -> int:
    """Length of the clip the graph makes: the t2av duration (plus what Extend adds), else the length of its
    condition."""
    by_type = {node["class_type"]: node["inputs"] for node in prompt.values()}
    if by_type["UniFormTaskLatent"]["task"] == "t2av":
        return by_type["UniFormTaskLatent"]["duration"] + by_type.get("UniFormExtend", {}).get("seconds", 0)
    for encoder in ("UniFormVideoEncode", "UniFormAudioEncode"):
        if by_type.get(encoder, {}).get("duration"):
            return by_type[encoder]["duration"]
    if "UniFormExampleClip" in by_type:
        return by_type["UniFormExampleClip"]["duration"]
    return MEDIA_SECONDS


def node_of(prompt: dict, class_type: str) -> tuple[str, dict]:
    return next((i, n) for i, n in prompt.items() if n["class_type"] == class_type)
