"""FSDP training on two CPU processes (gloo), sharded checkpoints and their export, gradient accumulation and
activation checkpointing (issue 20, points 3 and 5).

accelerate turns FSDP on for GPUs only: on a CPU it sets up plain data parallel. The two processes here take the
FSDP settings from ``configs/accelerate_fsdp.yaml`` through accelerate's own launch code and lift that one device
check (:func:`fsdp_accelerator`); from there on accelerate's FSDP2 path (``fully_shard`` per STDiT3Block) runs as
on GPUs, in float32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from accelerate import debug_launcher
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from fault_injection import MICRO, rewrite_marker
from safetensors.torch import load_file, save_file
from smallest_recipe import smallest_recipe
from test_train import _cache, _draws

from uniform_core.bundle import load_bundle
from uniform_core.diffusion.schedule import NoiseSchedule
from uniform_core.errors import CheckpointError, InputError
from uniform_core.model.uniform_dit import PRESETS, UniFormDiT
from uniform_core.train import recipe
from uniform_core.train.checkpoint_export import export_dit
from uniform_core.train.config import DiTTrainConfig, config_from_dict
from uniform_core.train.distributed import full
from uniform_core.train.latent_shards import LatentShards
from uniform_core.train.log import read_log
from uniform_core.train.recipe import make_accelerator, train_bundle
from uniform_core.train.sharded_checkpoint import assemble
from uniform_core.train.trainer import CaptionDropDiT, DiTTrainer, check_resumable, diffusion_loss

REPO = Path(__file__).resolve().parents[1]
CFG = DiTTrainConfig(
    preset="micro", steps=4, batch_size=4, lr=1e-3, warmup_steps=2, checkpoint_every=2, keep_checkpoints=2,
    log_every=1,
)  # fmt: skip
CLIPS = 12  # 3 global batches an epoch: the resume at step 2 is mid-epoch, and the run then crosses an epoch
LOSS_RTOL = 1e-5  # FSDP's reduce-scatter sums gradients in another order than one process's backward
WEIGHT_ATOL = 1e-4  # a tenth of one Adam step (lr 1e-3): Adam turns a rounding-sized gradient into a whole step


def fsdp_env(config_file: Path) -> dict[str, str]:
    """The FSDP variables ``accelerate launch --config_file config_file`` gives its processes (fp32 on a CPU)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    argv = ["--config_file", str(config_file), "--num_processes", "2", "--mixed_precision", "no", "train.py"]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    return {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP"))}


def fsdp_accelerator():
    acc = make_accelerator(cpu=True)
    acc.state.distributed_type = DistributedType.FSDP  # the device check accelerate makes; see the module docstring
    acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables
    return acc


RECIPE = smallest_recipe(
    data={"latents": "shards", "shard_clips": 2, "extract_batch": 2},
    dit={"steps": 3, "checkpoint_every": 3, "log_every": 1},
)


def _fsdp_runs(out: str, env: dict[str, str]) -> None:
    """In each of the two processes: an uninterrupted run, a run stopped at step 2 (mid-epoch) and resumed from its
    sharded checkpoint, a run with two micro-batches per step and activation checkpointing, and the recipe after its
    codecs (``train_bundle`` on a plain run's codecs: extract on both processes, latent shards, the DiT, the
    bundle); rank 0 saves the gathered weights."""
    AcceleratorState._reset_state(reset_partial_state=True)
    os.environ.update(env)
    torch.set_num_threads(1)
    PRESETS["micro"] = MICRO
    out, cache = Path(out), _cache(CLIPS)
    recipe.make_accelerator = lambda *args, **kwargs: fsdp_accelerator()
    train_bundle(config_from_dict(RECIPE), resume=out / "recipe_fsdp")
    whole = DiTTrainer(CFG, cache, out / "whole", fsdp_accelerator())
    whole.train()
    gathered = {name: full(t) for name, t in whole.dit.state_dict().items()}
    ema = whole.ema_dit().state_dict()
    DiTTrainer(CFG, cache, out / "split", fsdp_accelerator()).train(steps=2)
    resumed = DiTTrainer(CFG, cache, out / "split", fsdp_accelerator())
    resumed.load_checkpoint(out / "split" / "checkpoints" / "step_000002")
    resumed.train()
    resumed_ema = resumed.ema_dit().state_dict()
    cfg = CFG.__class__(**{**vars(CFG), "grad_accumulation": 2, "activation_checkpointing": True})
    accumulate = DiTTrainer(cfg, cache, out / "accumulate", fsdp_accelerator())
    accumulate.train(steps=2)
    if whole.accelerator.is_main_process:
        kinds = {name: type(p).__name__ for name, p in whole.dit.named_parameters()}
        (out / "kinds.json").write_text(json.dumps(kinds))
        save_file(gathered, out / "gathered_model.safetensors")
        save_file(ema, out / "gathered_ema.safetensors")
        save_file(resumed_ema, out / "resumed_ema.safetensors")


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory) -> Path:
    if os.environ.get("OMP_NUM_THREADS") != "1":
        pytest.fail("run with OMP_NUM_THREADS=1: debug_launcher forks, and a fork of an OpenMP pool can hang")
    out = tmp_path_factory.mktemp("fsdp")
    train_bundle(config_from_dict(RECIPE), out_dir=out / "recipe_plain", stage="extract")  # codecs, latent shards
    (out / "recipe_fsdp" / "codecs").mkdir(parents=True)
    for name in (
        "config.json",
        *(f"codecs/{p.name}" for p in (out / "recipe_plain" / "codecs").iterdir()),
    ):
        (out / "recipe_fsdp" / name).write_bytes((out / "recipe_plain" / name).read_bytes())
    debug_launcher(_fsdp_runs, args=(str(out), fsdp_env(REPO / "configs" / "accelerate_fsdp.yaml")), num_processes=2)
    return out


@pytest.fixture(autouse=True)
def micro_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "micro", MICRO)


def _losses(run: Path) -> list[float]:
    return [e["loss"] for e in read_log(run / "train_log.jsonl") if e["stage"] == "dit"]


def test_fsdp_shards_every_parameter_and_matches_one_process_on_the_same_global_batch(fsdp_runs, tmp_path):
    assert set(json.loads((fsdp_runs / "kinds.json").read_text()).values()) == {"DTensor"}
    single = DiTTrainer(CFG, _cache(CLIPS), tmp_path / "single", make_accelerator(cpu=True))
    single.train()
    fsdp, plain = _losses(fsdp_runs / "whole"), _losses(tmp_path / "single")
    assert len(fsdp) == len(plain) == 4 and len(set(plain)) == 4
    differences = [abs(a / b - 1) for a, b in zip(fsdp, plain, strict=True)]
    print("FSDP vs one process, relative loss differences:", differences)
    assert fsdp == pytest.approx(plain, rel=LOSS_RTOL)
    gathered = load_file(fsdp_runs / "gathered_model.safetensors")
    for name, value in single.dit.state_dict().items():
        torch.testing.assert_close(gathered[name], value, rtol=0, atol=WEIGHT_ATOL)


def test_fsdp_resume_from_a_sharded_checkpoint_repeats_the_uninterrupted_losses(fsdp_runs):
    assert _losses(fsdp_runs / "split") == _losses(fsdp_runs / "whole")
    whole, resumed = (load_file(fsdp_runs / f"{n}_ema.safetensors") for n in ("gathered", "resumed"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    folder = fsdp_runs / "whole" / "checkpoints" / "step_000004"
    marker = json.loads((folder / "trainer_state.json").read_text())
    assert marker["sharded"] and marker["processes"] == 2
    for what in ("model", "ema", "optimizer"):
        assert {f"{what}_shard_0_of_2.safetensors", f"{what}_shard_1_of_2.safetensors"} <= set(marker["files"])
    assert not {"model.safetensors", "ema.safetensors", "optimizer.safetensors"} & set(marker["files"])


def test_extract_shards_dit_and_bundle_on_two_fsdp_processes(fsdp_runs, tmp_path):
    """On the plain run's codecs, the two processes extract the latent shards (each its share), train the DiT
    under FSDP from them and write a bundle: the shards hold the plain run's latents (in another row order: each
    process writes its own shards), the DiT losses are those of one process on the same shards, and the bundle
    holds the gathered EMA weights, which are those of its last sharded step folder."""
    plain, fsdp = fsdp_runs / "recipe_plain", fsdp_runs / "recipe_fsdp"
    shards, reference = (LatentShards(run / "latents").batch(torch.arange(4)) for run in (fsdp, plain))
    matches = [[all(torch.equal(shards[k][i], reference[k][j]) for k in shards) for j in range(4)] for i in range(4)]
    assert sorted(row.index(True) for row in matches) == [0, 1, 2, 3]  # every plain clip, exactly, once
    config = config_from_dict(RECIPE)
    single = DiTTrainer(config.dit, LatentShards(fsdp / "latents"), tmp_path / "single", make_accelerator(cpu=True))
    single.train()
    assert _losses(fsdp) == pytest.approx(_losses(tmp_path / "single"), rel=LOSS_RTOL) and len(_losses(fsdp)) == 3
    assert json.loads((fsdp / "checkpoints" / "step_000003" / "trainer_state.json").read_text())["sharded"]
    bundle = load_bundle(fsdp / "bundle").dit.state_dict()
    exported = UniFormDiT.load(export_dit(fsdp / "checkpoints" / "step_000003", tmp_path / "dit.safetensors"))
    assert all(torch.equal(v, bundle[k]) for k, v in exported.state_dict().items())
    for name, value in single.ema_dit().state_dict().items():
        torch.testing.assert_close(bundle[name], value, rtol=0, atol=WEIGHT_ATOL)


def test_gradient_accumulation_and_activation_checkpointing_under_fsdp_give_the_losses_of_whole_batches(fsdp_runs):
    assert _losses(fsdp_runs / "accumulate") == pytest.approx(_losses(fsdp_runs / "whole")[:2], rel=LOSS_RTOL)


def test_a_sharded_checkpoint_exports_to_the_one_file_checkpoint_the_loaders_read(fsdp_runs, tmp_path):
    folder = fsdp_runs / "whole" / "checkpoints" / "step_000004"
    for weights, reference in (("ema", "gathered_ema"), ("model", "gathered_model")):
        out = export_dit(folder, tmp_path / f"{weights}.safetensors", weights=weights)
        dit = UniFormDiT.load(out)
        expected = load_file(fsdp_runs / f"{reference}.safetensors")
        assert dit.config == MICRO and dit.state_dict().keys() == expected.keys()
        assert all(torch.equal(v, expected[k]) for k, v in dit.state_dict().items())
    with pytest.raises(InputError, match="weights must be one of"):
        export_dit(folder, tmp_path / "x.safetensors", weights="best")


def test_the_cli_exports_a_step_folder(fsdp_runs, tmp_path, capsys):
    from uniform_core.cli import main

    folder = fsdp_runs / "whole" / "checkpoints" / "step_000004"
    assert main(["train", "--export", str(folder), "--out", str(tmp_path / "dit.safetensors")]) == 0
    expected = load_file(fsdp_runs / "gathered_ema.safetensors")
    assert all(
        torch.equal(v, expected[k]) for k, v in UniFormDiT.load(tmp_path / "dit.safetensors").state_dict().items()
    )
    assert main(["train", "--export", str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err


def _copy(folder: Path, to: Path) -> Path:
    to.mkdir(parents=True)
    for p in folder.iterdir():
        (to / p.name).write_bytes(p.read_bytes())
    return to


def test_a_truncated_or_foreign_shard_is_refused_naming_the_file(fsdp_runs, tmp_path):
    source = fsdp_runs / "whole" / "checkpoints" / "step_000004"
    truncated = _copy(source, tmp_path / "step_000004")
    data = (truncated / "ema_shard_1_of_2.safetensors").read_bytes()
    (truncated / "ema_shard_1_of_2.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"ema_shard_1_of_2\.safetensors has \d+ bytes"):
        check_resumable(truncated, seed=0)
    rewrite_marker(truncated)  # what someone who edits the folder can do: the file itself is then refused
    with pytest.raises(CheckpointError, match=r"ema_shard_1_of_2\.safetensors is not a readable"):
        export_dit(truncated, tmp_path / "dit.safetensors")

    foreign = _copy(source, tmp_path / "foreign" / "step_000004")
    shard = foreign / "model_shard_1_of_2.safetensors"
    from safetensors import safe_open

    with safe_open(str(shard), framework="pt") as f:
        meta = {**f.metadata(), "processes": "3"}
    save_file(load_file(shard), shard, metadata=meta)  # a shard of a 3-process run under this name
    rewrite_marker(foreign)
    with pytest.raises(CheckpointError, match=r"model_shard_1_of_2\.safetensors was written by process 1 of 3"):
        export_dit(foreign, tmp_path / "dit.safetensors")
    with pytest.raises(CheckpointError, match=r"model_shard_0_of_3\.safetensors' does not exist"):
        assemble(source, "model", 3)
    plain = DiTTrainer(CFG, _cache(CLIPS), tmp_path / "plain", make_accelerator(cpu=True))
    with pytest.raises(CheckpointError, match="written sharded by FSDP, this run is not sharded"):
        plain.load_checkpoint(source)


def test_a_plain_step_folder_exports_its_ema_weights(tmp_path):
    trainer = DiTTrainer(CFG.__class__(**{**vars(CFG), "steps": 2}), _cache(CLIPS), tmp_path / "run",
                         make_accelerator(cpu=True))  # fmt: skip
    trainer.train()
    dit = UniFormDiT.load(export_dit(tmp_path / "run" / "checkpoints" / "step_000002", tmp_path / "dit.safetensors"))
    assert all(torch.equal(v, trainer.ema_dit().state_dict()[k]) for k, v in dit.state_dict().items())


def test_gradient_accumulation_on_one_process_gives_the_losses_of_whole_batches(tmp_path):
    runs = {}
    for micro in (1, 2):
        cfg = CFG.__class__(**{**vars(CFG), "steps": 2, "grad_accumulation": micro})
        DiTTrainer(cfg, _cache(CLIPS), tmp_path / str(micro), make_accelerator(cpu=True)).train()
        runs[micro] = _losses(tmp_path / str(micro))
    assert runs[2] == pytest.approx(runs[1], rel=1e-5) and runs[2] != runs[1][::-1]
    with pytest.raises(InputError, match=r"must divide evenly over 1 processes x 3 micro-batches"):
        DiTTrainer(CFG.__class__(**{**vars(CFG), "grad_accumulation": 3}), _cache(CLIPS), tmp_path / "3",
                   make_accelerator(cpu=True))  # fmt: skip


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    dit = UniFormDiT(MICRO)
    cache = _cache(2)
    grads = {}
    for checkpointing in (False, True):
        dit.gradient_checkpointing = checkpointing
        dit.zero_grad(set_to_none=True)
        loss = diffusion_loss(CaptionDropDiT(dit), NoiseSchedule(), cache.batch(torch.arange(2)), _draws(0), 5.0)
        loss["loss"].backward()
        grads[checkpointing] = {n: p.grad.clone() for n, p in dit.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys() and len(grads[True]) > 20
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, rtol=1e-6, atol=1e-7, msg=name)


def test_the_recipe_fields_for_scale_are_checked():
    cfg = config_from_dict({"dit": {"grad_accumulation": 4, "activation_checkpointing": True}})
    assert (cfg.dit.grad_accumulation, cfg.dit.activation_checkpointing) == (4, True)
    assert config_from_dict({}).dit.grad_accumulation == 1  # old recipes stay valid
    with pytest.raises(InputError, match="dit.grad_accumulation must be a positive integer; got 0"):
        config_from_dict({"dit": {"grad_accumulation": 0}})
    with pytest.raises(InputError, match="dit.activation_checkpointing must be of type bool"):
        config_from_dict({"dit": {"activation_checkpointing": "yes"}})


def test_the_shipped_engine_config_loads_with_accelerate_s_config_classes():
    from accelerate.commands.config.config_args import load_config_from_file

    from uniform_core.model.stdit3 import STDiT3Block

    fsdp = load_config_from_file(str(REPO / "configs" / "accelerate_fsdp.yaml"))
    assert fsdp.distributed_type == DistributedType.FSDP and fsdp.fsdp_config["fsdp_version"] == 2
    assert fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == STDiT3Block.__name__
    assert fsdp_env(REPO / "configs" / "accelerate_fsdp.yaml")["FSDP_RESHARD_AFTER_FORWARD"] == "true"


def test_a_recipe_that_would_train_codecs_under_fsdp_is_refused_before_anything_is_written(tmp_path):
    from uniform_core.train.config import TrainConfig
    from uniform_core.train.recipe import check_run_files

    check_run_files(TrainConfig(), tmp_path, 1, sharded=False)
    with pytest.raises(InputError, match="video_vae, audio_vae, vocoder would be trained under FSDP/DeepSpeed"):
        check_run_files(TrainConfig(), tmp_path, 1, sharded=True)
    (tmp_path / "codecs").mkdir()
    for name in ("video_vae", "audio_vae"):
        torch.manual_seed(0)
        UniFormDiT(MICRO).save(tmp_path / "codecs" / f"{name}.safetensors")  # any readable file stands in
    with pytest.raises(InputError, match=r"^vocoder would be trained"):
        check_run_files(TrainConfig(), tmp_path, 1, sharded=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codecs"]


def test_deepspeed_is_refused_at_start_not_at_the_first_checkpoint(tmp_path, monkeypatch):
    acc = make_accelerator(cpu=True)
    monkeypatch.setattr(acc.state, "distributed_type", DistributedType.DEEPSPEED)
    with pytest.raises(InputError, match="under DeepSpeed is not supported: its ZeRO states are saved as pickles"):
        DiTTrainer(CFG, _cache(CLIPS), tmp_path / "run", acc)
    assert not (tmp_path / "run").exists()
