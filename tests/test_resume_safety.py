"""Training resume never unpickles, checkpoints and bundles appear whole or not at all, a refused ``--resume``
writes nothing, and a trainer SIGKILLed inside its checkpoint writes resumes with the losses of an uninterrupted
run (issue 14, points 1-3)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import signal
from pathlib import Path

import pytest
import torch
from fault_injection import MICRO, kill_and_resume, rewrite_marker
from test_train import _cache

from uniform_core import checkpoint as checkpoint_module
from uniform_core.bundle import load_bundle, random_tiny_bundle, save_bundle
from uniform_core.codecs.text import TextEncoder
from uniform_core.errors import CheckpointError, InputError
from uniform_core.model.uniform_dit import PRESETS
from uniform_core.train.config import DiTTrainConfig, TrainConfig
from uniform_core.train.latent_cache import LatentCache
from uniform_core.train.log import LossLog, read_log
from uniform_core.train.recipe import make_accelerator, resolve_run, train_bundle
from uniform_core.train.trainer import DiTTrainer

CFG = DiTTrainConfig(
    preset="micro", steps=3, batch_size=2, warmup_steps=1, checkpoint_every=1, keep_checkpoints=3, log_every=1
)


@pytest.fixture(autouse=True)
def micro_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "micro", MICRO)


@pytest.fixture
def run(tmp_path) -> Path:
    """A run folder (config.json, log) with complete checkpoints at steps 1, 2 and 3."""
    folder = tmp_path / "run"
    DiTTrainer(CFG, _cache(4), folder, make_accelerator(cpu=True)).train()
    (folder / "config.json").write_text(json.dumps(TrainConfig(dit=CFG).to_dict()))
    return folder


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (hidden ones too) with its size, content hash and modification time."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            found[str(path.relative_to(folder))] = (path.stat().st_size, _sha(path), path.stat().st_mtime_ns)
        else:
            found[str(path.relative_to(folder))] = "folder"
    return found


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Payload:
    """Unpickling this creates ``sentinel``: proof that code ran."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def _fresh_trainer(folder: Path, seed: int = 0) -> DiTTrainer:
    return DiTTrainer(CFG, _cache(4), folder, make_accelerator(cpu=True), seed=seed)


# ---- 1. nothing is unpickled ----------------------------------------------------------------------------------


def _accelerate_folder(step: Path, sentinel: Path, scratch: Path) -> None:
    """What accelerate's ``save_state`` writes (as this trainer did before), with a pickle payload in
    ``custom_checkpoint_0.pkl``: the reported exploit."""
    trainer = _fresh_trainer(scratch)
    trainer.accelerator.register_for_checkpointing(trainer.ema)
    trainer.accelerator.save_state(str(step))
    (step / "trainer_state.json").write_text(json.dumps({"step": 4, "seed": 0}))
    (step / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Payload(sentinel)))


def _planted_pickle(step: Path, sentinel: Path, scratch: Path | None = None) -> None:
    (step / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Payload(sentinel)))


@pytest.mark.parametrize(
    "make, poisoned, fallback",
    [(_accelerate_folder, "step_000004", "step_000003"), (_planted_pickle, "step_000003", "step_000002")],
    ids=["accelerate-format", "planted"],
)
def test_a_step_folder_with_a_pickle_is_refused_by_name_and_the_pickle_never_runs(
    run, tmp_path, caplog, make, poisoned, fallback
):
    step, sentinel = run / "checkpoints" / poisoned, tmp_path / "code_ran"
    make(step, sentinel, tmp_path / "scratch")
    before = snapshot(run)
    trainer = _fresh_trainer(tmp_path / "other")
    with pytest.raises(CheckpointError, match=rf"{poisoned}.*refused .*custom_checkpoint_0\.pkl.*never unpickles"):
        trainer.load_checkpoint(step)
    with pytest.raises(CheckpointError, match=r"custom_checkpoint_0\.pkl"):
        resolve_run(TrainConfig(dit=CFG), None, step)
    with caplog.at_level(logging.WARNING, logger="uniform_core"):
        assert resolve_run(TrainConfig(dit=CFG), None, run) == (run, run / "checkpoints" / fallback)
    assert f"skipped {poisoned}" in caplog.text and "custom_checkpoint_0.pkl" in caplog.text
    assert not sentinel.exists() and trainer.step == 0
    assert snapshot(run) == before


def test_the_cli_refuses_a_pickled_checkpoint_and_writes_nothing(run, tmp_path, capsys):
    from uniform_core.cli import main

    step = run / "checkpoints" / "step_000003"
    sentinel = tmp_path / "code_ran"
    _planted_pickle(step, sentinel)
    (tmp_path / "recipe.json").write_text(json.dumps({"dit": {"preset": "micro", "batch_size": 2}}))
    before = snapshot(run)
    assert main(["train", "--config", str(tmp_path / "recipe.json"), "--resume", str(step)]) == 2
    assert "refused custom_checkpoint_0.pkl" in capsys.readouterr().err
    assert not sentinel.exists() and snapshot(run) == before


def test_a_pickle_named_safetensors_is_refused_not_unpickled(run, tmp_path):
    step = run / "checkpoints" / "step_000003"
    sentinel = tmp_path / "code_ran"
    torch.save({"shadow_params": Payload(sentinel)}, step / "ema.safetensors")
    rewrite_marker(step)
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=r"step_000003/ema\.safetensors"):
        _fresh_trainer(tmp_path / "other").load_checkpoint(step)
    assert not sentinel.exists() and snapshot(run) == before


# ---- 2. a step folder is complete or refused ---------------------------------------------------------------------


def _truncate(step: Path) -> str:
    data = (step / "optimizer.safetensors").read_bytes()
    (step / "optimizer.safetensors").write_bytes(data[: len(data) // 2])
    return r"optimizer\.safetensors has \d+ bytes"


def _flip_a_byte(step: Path) -> str:
    data = bytearray((step / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (step / "model.safetensors").write_bytes(bytes(data))
    return r"model\.safetensors differs from its SHA-256"


def _drop_a_file(step: Path) -> str:
    (step / "scheduler.safetensors").unlink()
    return r"incomplete: scheduler\.safetensors is missing"


def _drop_the_marker(step: Path) -> str:
    (step / "trainer_state.json").unlink()
    return r"incomplete: it has no trainer_state\.json"


def _garble_the_marker(step: Path) -> str:
    (step / "trainer_state.json").write_text('{"step": 3, "fi')
    return r"trainer_state\.json is not valid JSON"


def _list_a_path_outside(step: Path) -> str:
    marker = json.loads((step / "trainer_state.json").read_text())
    marker["files"]["../../config.json"] = {"bytes": 1, "sha256": "0"}
    (step / "trainer_state.json").write_text(json.dumps(marker))
    return r"lists '\.\./\.\./config\.json', not a file name in the folder"


def _a_state_file_of_another_kind(step: Path) -> str:
    (step / "optimizer.safetensors").write_bytes((step / "model.safetensors").read_bytes())
    rewrite_marker(step)
    return r"optimizer\.safetensors is not a UniForm training-state file"


DAMAGE = [_truncate, _flip_a_byte, _drop_a_file, _drop_the_marker, _garble_the_marker, _list_a_path_outside,
          _a_state_file_of_another_kind]  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_a_broken_explicit_step_folder_is_a_checkpoint_error_naming_it(run, tmp_path, damage):
    step = run / "checkpoints" / "step_000003"
    expected = damage(step)
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=rf"step_000003.*{expected}"):
        resolve_run(TrainConfig(dit=CFG), None, step)
    trainer = _fresh_trainer(tmp_path / "other")
    with pytest.raises(CheckpointError, match=rf"step_000003.*{expected}"):
        trainer.load_checkpoint(step)
    assert trainer.step == 0 and snapshot(run) == before


def test_resume_run_takes_the_newest_complete_step_and_logs_what_it_skipped(run, caplog):
    checkpoints = run / "checkpoints"
    _truncate(checkpoints / "step_000003")
    newer = checkpoints / "step_000004"
    newer.mkdir()
    (newer / "model.safetensors").write_bytes((checkpoints / "step_000002" / "model.safetensors").read_bytes())
    with caplog.at_level(logging.INFO, logger="uniform_core"):
        assert resolve_run(TrainConfig(dit=CFG), None, run) == (run, checkpoints / "step_000002")
    assert "skipped step_000004" in caplog.text and "no trainer_state.json" in caplog.text
    assert "skipped step_000003" in caplog.text and "optimizer.safetensors has" in caplog.text
    assert "newest complete DiT checkpoint" in caplog.text and "step_000002" in caplog.text


def test_a_resumed_step_folder_restores_every_state_bit_for_bit(run, tmp_path):
    """Model, EMA, optimizer, LR schedule and RNG states come back from safetensors + JSON exactly: the resumed
    trainer's step 3 ends where that of a trainer that never stopped does."""
    whole = _fresh_trainer(tmp_path / "whole")
    whole.train(steps=3)
    whole_rng = torch.get_rng_state()
    resumed = _fresh_trainer(tmp_path / "resumed")
    torch.manual_seed(123)  # the restored RNG state must win over what the process did meanwhile
    resumed.load_checkpoint(run / "checkpoints" / "step_000002")
    resumed.train(steps=3)
    assert resumed.step == 3 and torch.equal(torch.get_rng_state(), whole_rng)
    for a, b in zip(whole.ema_dit().state_dict().values(), resumed.ema_dit().state_dict().values(), strict=True):
        assert torch.equal(a, b)
    moments = [t.optimizer.state_dict()["state"] for t in (whole, resumed)]
    assert moments[0].keys() == moments[1].keys() and len(moments[0]) > 10
    assert all(torch.equal(moments[0][k]["exp_avg_sq"], moments[1][k]["exp_avg_sq"]) for k in moments[0])
    assert resumed.scheduler.get_last_lr() == whole.scheduler.get_last_lr()


# ---- 3. a refused resume writes nothing -------------------------------------------------------------------------


def test_a_resume_with_another_seed_is_refused_before_anything_is_written(run):
    before = snapshot(run)
    with pytest.raises(InputError, match=r"step_000003.*trained with seed 0, the config has 1"):
        train_bundle(TrainConfig(seed=1, dit=CFG), resume=run)
    assert snapshot(run) == before


def test_an_unreadable_file_the_run_would_reuse_is_refused_before_anything_is_written(run):
    (run / "codecs").mkdir()
    (run / "codecs" / "vocoder.safetensors").write_bytes(b"\x00" * 10)
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=r"codecs/vocoder\.safetensors is not a readable safetensors file"):
        train_bundle(TrainConfig(dit=CFG), resume=run)
    assert snapshot(run) == before


# ---- atomic codec files, latent caches, bundles, logs ------------------------------------------------------------


def _half_then_crash(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"half a file")
    raise OSError("killed while writing")


def test_a_failed_codec_file_or_latent_cache_write_leaves_the_old_file(tmp_path, monkeypatch):
    codec = tmp_path / "text_encoder.safetensors"
    TextEncoder.from_preset("tiny").save(codec)
    cache = tmp_path / "latents.safetensors"
    _cache(2).save(cache)
    before = snapshot(tmp_path)
    monkeypatch.setattr(checkpoint_module, "save_file", _half_then_crash)
    with pytest.raises(OSError, match="killed"):
        TextEncoder.from_preset("tiny").save(codec)
    with pytest.raises(OSError, match="killed"):
        _cache(3).save(cache)
    assert snapshot(tmp_path) == before and len(LatentCache.load(cache)) == 2


def test_a_bundle_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    folder = tmp_path / "bundle"
    save_bundle(random_tiny_bundle(seed=0), folder)
    (folder / "MODEL_CARD.md").write_text("card")
    before = snapshot(tmp_path)

    def crash(*args):
        raise OSError("killed while writing the text encoder")

    with monkeypatch.context() as m:
        m.setattr(TextEncoder, "save", crash)
        with pytest.raises(OSError, match="killed"):
            save_bundle(random_tiny_bundle(seed=1), folder)
    assert snapshot(tmp_path) == before  # the old bundle, and no partial folder left
    save_bundle(random_tiny_bundle(seed=1), folder, extra={"training.json": "{}\n"})
    new = load_bundle(folder)
    assert torch.equal(next(new.dit.parameters()), next(random_tiny_bundle(seed=1).dit.parameters()))
    assert (folder / "MODEL_CARD.md").read_text() == "card" and (folder / "training.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_save_bundle_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    (tmp_path / "models" / "other").mkdir(parents=True)
    (tmp_path / "models" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match=r"models' exists and is not a bundle folder \(it holds folders other\)"):
        save_bundle(random_tiny_bundle(seed=0), tmp_path / "models")
    assert snapshot(tmp_path) == before


def test_a_log_line_cut_by_a_kill_is_dropped_on_resume(tmp_path):
    log = LossLog(tmp_path / "train_log.jsonl", make_accelerator(cpu=True))
    for step in (1, 2, 3):
        log.write(stage="dit", step=step, loss=float(step))
    with (tmp_path / "train_log.jsonl").open("a") as f:
        f.write('{"stage": "dit", "st')
    log.truncate("dit", 2)
    assert [e["step"] for e in read_log(tmp_path / "train_log.jsonl")] == [1, 2]


# ---- fault injection ---------------------------------------------------------------------------------------------


def test_sigkill_inside_checkpoint_writes_then_resume_repeats_the_uninterrupted_losses(tmp_path):
    """20 attempts of one run, each SIGKILLed at a random file-system call of its checkpoint writes (a torn write,
    before or after a rename, in the middle of pruning), each resumed the way ``--resume RUN`` does; then it is left
    to finish. Every resume starts at the newest step folder that was renamed into place, skips nothing, and the
    loss log and the final step folders' tensors are bit-equal to those of an uninterrupted run."""
    report = kill_and_resume(tmp_path, trials=20, seed=0)
    reference = report["reference"]
    assert reference["status"] == 0 and reference["events"][0] == "resumed 0"
    assert [e["step"] for e in reference["log"]] == list(range(1, 7))
    kinds = set()
    for attempt in report["attempts"][:-1]:
        assert os.WIFSIGNALED(attempt["status"]) and os.WTERMSIG(attempt["status"]) == signal.SIGKILL, attempt
        newest = attempt["newest_published_before"]
        assert attempt["resume_from"] == (None if newest is None else f"step_{newest:06d}"), attempt
        assert attempt["events"][0] == f"resumed {newest or 0}" and attempt["skipped"] == []
        rows = attempt["log"]
        assert rows == reference["log"][: len(rows)], attempt  # every step logged so far has the reference losses
        kinds |= {e.split()[1] for e in attempt["events"] if e.startswith("kill")}
    assert kinds == {"torn", "before", "after"}
    assert len({a["resume_from"] for a in report["attempts"]}) >= 3  # resumed from several different steps
    last = report["attempts"][-1]
    assert last["status"] == 0 and last["log"] == reference["log"]
    assert report["contents"] == reference["contents"]  # model, EMA, optimizer, schedule, RNG: the same bits
