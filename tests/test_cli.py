"""`uniform-av` as a user runs it: the installed console script, and generate writing real MP4 files."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from uniform_core import media
from uniform_core.bundle import random_tiny_bundle, save_bundle
from uniform_core.cli import main


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return save_bundle(random_tiny_bundle(seed=0), tmp_path_factory.mktemp("bundle") / "random-tiny")


def test_console_script_help():
    beside_python = Path(sys.executable).parent / "uniform-av"
    exe = str(beside_python) if beside_python.exists() else shutil.which("uniform-av")
    assert exe, "the uniform-av console script is not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "generate" in out
    out = subprocess.run([exe, "generate", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--task", "--prompt", "--video", "--audio", "--out", "--bundle", "--sampler", "--duration"):
        assert flag in out


@pytest.mark.parametrize("task", ["t2av", "a2v", "v2a"])
def test_generate_writes_playable_mp4(task, bundle_dir, tmp_path):
    source = tmp_path / "source.mp4"
    wave = 0.2 * torch.randn(1, 2 * 22050, generator=torch.Generator().manual_seed(0))
    media.write_mp4(source, torch.rand(2 * 17, 48, 48, 3), 17, media.AudioClip(wave, 22050))
    out = tmp_path / f"{task}.mp4"
    args = ["generate", "--task", task, "--out", str(out), "--bundle", str(bundle_dir), "--steps", "2"]
    args += {
        "t2av": ["--prompt", "a red ball bounces", "--duration", "2"],
        "a2v": ["--audio", str(source)],
        "v2a": ["--video", str(source)],
    }[task]
    assert main(args) == 0
    info = media.probe(out)
    assert info.has_video and info.has_audio
    assert abs(info.duration - 2.0) < 0.1


def test_generate_reports_bad_input_without_traceback(bundle_dir, tmp_path, capsys):
    code = main(["generate", "--task", "a2v", "--out", str(tmp_path / "x.mp4"), "--bundle", str(bundle_dir)])
    assert code == 2
    assert "needs the --audio input" in capsys.readouterr().err


def test_missing_bundle_is_a_clear_error(tmp_path, capsys):
    code = main(
        [
            "generate",
            "--task",
            "t2av",
            "--prompt",
            "p",
            "--out",
            str(tmp_path / "x.mp4"),
            "--bundle",
            str(tmp_path / "nowhere"),
        ]
    )
    assert code == 2
    assert "not a folder" in capsys.readouterr().err


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "uniform_core.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "uniform-av" in out.stdout


def test_sigterm_stops_a_uniform_av_process_within_a_second_and_writes_nothing(bundle_dir, tmp_path):
    out = tmp_path / "x.mp4"
    cmd = [sys.executable, "-m", "uniform_core.cli", "generate", "--task", "t2av", "--prompt", "a ball"]
    cmd += ["--out", str(out), "--bundle", str(bundle_dir), "--steps", "1000", "--duration", "1"]
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env)
    err = b""
    # sampling is under way: a step count above 0 (tqdm redraws at most every 0.1 s, so which counts show depends
    # on the machine's speed)
    while not any(int(n) > 0 for n in re.findall(rb"(\d+)/1000", err)):
        chunk = proc.stderr.read1(4096)
        assert chunk, f"the run ended before sampling: {err.decode(errors='replace')}"
        err += chunk
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    elapsed = time.monotonic() - sent
    err += proc.stderr.read()
    assert code == 128 + signal.SIGTERM, err.decode(errors="replace")
    assert elapsed < 1.5, f"took {elapsed:.2f} s to stop"
    last = err.decode().strip().splitlines()[-1]
    assert last == "uniform-av generate: stopped: SIGTERM received; nothing more is written"
    assert list(tmp_path.iterdir()) == [], "no output file, whole or partial"


def test_sigint_stops_an_in_process_run_with_a_clear_message(bundle_dir, tmp_path, capsys):
    sent = []

    def interrupt():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(3.0, interrupt)
    timer.start()
    args = ["generate", "--task", "t2av", "--prompt", "a ball", "--out", str(tmp_path / "x.mp4")]
    code = main(args + ["--bundle", str(bundle_dir), "--steps", "1000", "--duration", "1"])
    elapsed = time.monotonic() - sent[0]
    timer.join()
    assert code == 128 + signal.SIGINT and elapsed < 1.0
    assert "uniform-av generate: stopped: SIGINT received; nothing more is written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the CLI puts the old handler back"
