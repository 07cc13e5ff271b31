"""Kill the trainer with SIGKILL inside its checkpoint writes, resume it, and report what happened.

Used by ``test_resume_safety.py``. Each attempt is a forked child (no second interpreter to start; the child runs
torch on one thread, so the parent's OpenMP pool is never needed) that trains a micro DiT on random latents and
checkpoints every step; it counts the file-system calls that make a checkpoint (``os.fsync`` of a file,
``os.replace``, ``os.rename``, ``os.unlink``) and SIGKILLs itself at the chosen one: before or after a rename or
unlink, or at an fsync after cutting the file being synced to half its length (a write that never finished). The
child reports, through a pipe that survives the kill, the step it resumed from and every step folder it renamed
into place. This module decides nothing: the test compares the report with an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import signal
import stat
from pathlib import Path

import torch
from safetensors.torch import load_file
from test_train import _cache

from uniform_core.checkpoint import read_metadata
from uniform_core.model.uniform_dit import UniFormConfig
from uniform_core.train.config import DiTTrainConfig, TrainConfig
from uniform_core.train.log import read_log
from uniform_core.train.recipe import make_accelerator, resolve_run
from uniform_core.train.trainer import DiTTrainer

MICRO = UniFormConfig(
    hidden_size=32, depth=1, num_heads=2, caption_channels=64, model_max_length=64, audio_patch_size=(1, 8)
)
CONFIG = DiTTrainConfig(
    preset="micro", steps=6, batch_size=2, lr=1e-3, warmup_steps=3, checkpoint_every=1, keep_checkpoints=2,
    log_every=1,
)  # fmt: skip
CALLS_PER_CHECKPOINT = 19  # 5 state files + the marker (fsync + rename each), the folder's rename, 6 pruned files
STEP_FOLDER = re.compile(r"step_(\d+)$")


def install_kill_hook(kill_at: int | None, report, seed: int) -> None:
    """Count checkpoint file-system calls; SIGKILL this process at call number ``kill_at`` (before or after a
    rename as ``seed`` draws; the global ``random`` is left alone: its state is part of a checkpoint)."""
    calls, coin = {"n": 0}, random.Random(seed)
    originals = {name: getattr(os, name) for name in ("fsync", "replace", "rename", "unlink")}

    def die(what: str) -> None:
        report(f"kill {what}")
        os.kill(os.getpid(), signal.SIGKILL)

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            calls["n"] += 1
            if calls["n"] == kill_at:
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                die(f"torn fsync #{calls['n']}")
        return originals["fsync"](fd)

    def moving(name):
        def call(src, dst=None, **kwargs):
            calls["n"] += 1
            hit = calls["n"] == kill_at
            after = coin.random() < 0.5
            if hit and not after:
                die(f"before {name} #{calls['n']} {os.fspath(src)}")
            result = originals[name](src, **kwargs) if dst is None else originals[name](src, dst, **kwargs)
            if dst is not None and STEP_FOLDER.search(os.fspath(dst)):
                report(f"published {int(STEP_FOLDER.search(os.fspath(dst)).group(1))}")
            if dst is not None and STEP_FOLDER.search(os.fspath(src)):
                report(f"unpublished {int(STEP_FOLDER.search(os.fspath(src)).group(1))}")
            if hit:
                die(f"after {name} #{calls['n']} {os.fspath(src)}")
            return result

        return call

    os.fsync = fsync
    for name in ("replace", "rename", "unlink"):
        setattr(os, name, moving(name))


def run_child(run: Path, checkpoint: Path | None, kill_at: int | None, seed: int) -> tuple[int, list[str]]:
    """Fork a trainer that resumes from ``checkpoint`` and trains to the end unless killed; (wait status, events)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        torch.set_num_threads(1)
        random.seed(0)  # a forked child's global random is reseeded from the OS; give every run the same start

        def report(line: str) -> None:
            os.write(write_end, (line + "\n").encode())

        code = 1
        try:
            install_kill_hook(kill_at, report, seed)
            trainer = DiTTrainer(CONFIG, _cache(4), run, make_accelerator(cpu=True), seed=0)
            if checkpoint is not None:
                trainer.load_checkpoint(checkpoint)
            report(f"resumed {trainer.step}")
            trainer.train()
            code = 0
        except BaseException as e:  # reported to the test, which fails on it
            report(f"error {e!r}")
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return status, b"".join(chunks).decode().splitlines()


def log_rows(run: Path) -> list[dict]:
    path = run / "train_log.jsonl"
    return [{k: v for k, v in e.items() if k != "time_s"} for e in read_log(path)] if path.is_file() else []


def contents(run: Path) -> dict[str, dict]:
    """A digest of each step folder's tensors and metadata, by folder and file (not of the files' bytes: safetensors
    writes its metadata keys in an order that differs between processes)."""
    found = {}
    for folder in sorted((run / "checkpoints").glob("step_*")):
        digests = {}
        for path in sorted(folder.glob("*.safetensors")):
            h = hashlib.sha256(json.dumps(read_metadata(path), sort_keys=True).encode())
            for key, tensor in sorted(load_file(str(path)).items()):
                h.update(f"{key} {tensor.dtype} {tuple(tensor.shape)}".encode())
                h.update(tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
            digests[path.name] = h.hexdigest()
        found[folder.name] = digests
    return found


class Skipped(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        if "skipped" in record.getMessage():
            self.lines.append(record.getMessage())


def kill_and_resume(out: Path, trials: int, seed: int) -> dict:
    """An uninterrupted run, then ``trials`` attempts of one run each killed at a random checkpoint call and resumed
    with ``--resume RUN``'s choice (``resolve_run``), then a last attempt left to finish. Needs ``PRESETS["micro"]``
    (:data:`MICRO`)."""
    rng = random.Random(seed)
    reference = out / "reference"
    status, events = run_child(reference, None, None, seed)
    report = {"reference": {"status": status, "events": events, "log": log_rows(reference)}}
    report["reference"]["contents"] = contents(reference)
    run = out / "run"
    run.mkdir(parents=True)
    config = TrainConfig(dit=CONFIG)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    skipped, library = Skipped(), logging.getLogger("uniform_core")
    level = library.level
    library.addHandler(skipped)
    library.setLevel(logging.INFO)
    published: set[int] = set()
    attempts = []
    for trial in range(trials + 1):
        skipped.lines.clear()
        _, checkpoint = resolve_run(config, None, run)
        kill_at = None if trial == trials else rng.randint(1, CALLS_PER_CHECKPOINT + 5)
        status, events = run_child(run, checkpoint, kill_at, seed + trial)
        attempts.append(
            {
                "kill_at": kill_at,
                "status": status,
                "events": events,
                "resume_from": None if checkpoint is None else checkpoint.name,
                "newest_published_before": max(published) if published else None,
                "skipped": list(skipped.lines),
                "log": log_rows(run),
            }
        )
        for line in events:
            verb, _, value = line.partition(" ")
            if verb == "published":
                published.add(int(value))
            elif verb == "unpublished":
                published.discard(int(value))
    library.removeHandler(skipped)
    library.setLevel(level)
    report["attempts"] = attempts
    report["contents"] = contents(run)
    return report


def rewrite_marker(step: Path) -> None:
    """Re-hash the files a step folder's marker lists (what someone who edits a folder can do)."""
    marker = json.loads((step / "trainer_state.json").read_text())
    for name in marker["files"]:
        data = (step / name).read_bytes()
        marker["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (step / "trainer_state.json").write_text(json.dumps(marker))
