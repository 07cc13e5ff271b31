"""The extract stage on tiny codecs and tiny generated clips: a run killed midway and rerun writes the shards of an
uninterrupted run, two gloo processes write one complete index, LatentShards gives the batches the in-memory cache
gives, a folder made with other encoders is refused, and a recipe trains its DiT from the shards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from accelerate import debug_launcher
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from smallest_recipe import smallest_recipe, write_recipe

from uniform_core.codecs.audio import AudioCodec, AudioVAE, Vocoder
from uniform_core.codecs.text import TextEncoder
from uniform_core.codecs.video_vae import VideoVAE
from uniform_core.errors import InputError
from uniform_core.media import AudioClip, write_mp4
from uniform_core.train.config import DataConfig
from uniform_core.train.extract import extract_latents
from uniform_core.train.latent_cache import build_latent_cache
from uniform_core.train.latent_shards import INDEX_FILE, LatentShards, shard_info
from uniform_core.train.recipe import make_accelerator
from uniform_core.train.synthetic import SyntheticSpec, make_clip, write_dataset

SPEC = SyntheticSpec(size=32, min_object_px=6, max_object_px=10)
MAX_TOKENS = 64


def _encoders():
    torch.manual_seed(0)
    video_vae, text = VideoVAE.from_preset("tiny").eval(), TextEncoder.from_preset("tiny").eval()
    return video_vae, AudioCodec(AudioVAE.from_preset("tiny"), Vocoder.from_preset("tiny")).eval(), text


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    """Seven captioned clips and one silent one."""
    folder = tmp_path_factory.mktemp("clips")
    write_dataset(folder, range(7), SPEC)
    clip = make_clip(9, SPEC)
    write_mp4(folder / "silent.mp4", clip.frames, SPEC.fps, AudioClip(torch.zeros(1, clip.waveform.numel()), 16000))
    (folder / "silent.txt").write_text("nothing to hear")
    return folder


def _folder_data(folder: Path) -> DataConfig:
    return DataConfig(folder=str(folder), seconds=2, size=32, latents="shards", shard_clips=3, extract_batch=2,
                      shuffle_buffer=4, decode_workers=0)  # fmt: skip


def _extract(data: DataConfig, out: Path) -> dict:
    return extract_latents(data, out, *_encoders(), make_accelerator(cpu=True), seed=5, max_text_tokens=MAX_TOKENS)


def _contents(folder: Path) -> dict:
    return {f.name: (load_file(f), shard_info(f)) for f in sorted(folder.glob("*.safetensors"))}


def test_extraction_killed_midway_then_rerun_writes_the_shards_of_an_uninterrupted_run(tmp_path, clip_folder):
    data = _folder_data(clip_folder)
    whole = _extract(data, tmp_path / "whole")
    assert (whole["clips"], [s["clips"] for s in whole["shards"]]) == (7, [3, 3, 1])
    assert whole["skipped"] == {"silent": 1}

    calls, encode = [0], VideoVAE.encode

    def dies_at_the_fourth_call(module, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:  # the second encoder call of the second shard
            raise RuntimeError("killed")
        return encode(module, *args, **kwargs)

    threaded = DataConfig(**{**data.__dict__, "decode_workers": 3})  # decoding ahead changes nothing
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VideoVAE, "encode", dies_at_the_fourth_call)
        with pytest.raises(RuntimeError, match="killed"):
            _extract(threaded, tmp_path / "cut")
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["0000-000000.safetensors"]  # nothing partial
    again = _extract(threaded, tmp_path / "cut")
    assert again == whole
    got, expected = _contents(tmp_path / "cut"), _contents(tmp_path / "whole")
    assert got.keys() == expected.keys()
    for name, (tensors, info) in expected.items():
        assert info == got[name][1], name
        assert all(torch.equal(t, got[name][0][k]) for k, t in tensors.items()), name
    keys = LatentShards(tmp_path / "whole").keys()
    assert sorted(keys) == [f"{i:06d}" for i in range(7)] and keys != sorted(keys)  # every clip once, shuffled


def test_latent_shards_give_the_batches_the_cache_gives(tmp_path):
    data = DataConfig(num_clips=5, seconds=2, latents="shards", shard_clips=2, extract_batch=2, shuffle_buffer=1)
    _extract(data, tmp_path / "latents")
    shards = LatentShards(tmp_path / "latents")
    assert len(shards) == 5 and shards.keys() == [f"{i:06d}" for i in range(5)]  # one source shard, unshuffled
    cache = build_latent_cache(data, *_encoders(), max_text_tokens=MAX_TOKENS, chunk=2)
    assert shards.caption_channels == cache.caption_channels == 64
    index = torch.tensor([4, 0, 2, 3])
    got, expected = shards.batch(index), cache.batch(index)
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name].dtype == expected[name].dtype and torch.equal(got[name], expected[name]), name
    with pytest.raises(IndexError):
        shards.batch(torch.tensor([5]))


def test_a_latent_folder_of_other_encoders_is_refused_not_overwritten(tmp_path):
    data = DataConfig(num_clips=2, seconds=2, latents="shards", shard_clips=2)
    _extract(data, tmp_path / "latents")
    before = (tmp_path / "latents" / INDEX_FILE).read_text()
    video_vae, codec, text = _encoders()
    with torch.no_grad():
        next(video_vae.parameters()).add_(0.1)
    with pytest.raises(InputError, match="other encoders or data settings"):
        extract_latents(data, tmp_path / "latents", video_vae, codec, text, make_accelerator(cpu=True), 5, MAX_TOKENS)
    assert (tmp_path / "latents" / INDEX_FILE).read_text() == before


def _two_process_extract(out: str, folder: str) -> None:
    AcceleratorState._reset_state(reset_partial_state=True)  # forget the parent's one-process state
    accelerator = make_accelerator(cpu=True)
    extract_latents(_folder_data(Path(folder)), Path(out), *_encoders(), accelerator, 5, MAX_TOKENS)


@pytest.mark.skipif(
    os.environ.get("OMP_NUM_THREADS") != "1",
    reason="debug_launcher forks, and a child of a process with a multi-threaded OpenMP pool can hang: "
    "run with OMP_NUM_THREADS=1 (the README's test command and CI do)",
)
def test_two_processes_extract_their_shares_into_one_complete_index(tmp_path, clip_folder):
    debug_launcher(_two_process_extract, args=(str(tmp_path / "latents"), str(clip_folder)), num_processes=2)
    index = json.loads((tmp_path / "latents" / INDEX_FILE).read_text())
    assert (index["processes"], index["clips"], index["skipped"]) == (2, 7, {"silent": 1})
    assert {s["file"][:4] for s in index["shards"]} == {"0000", "0001"}  # both processes wrote shards
    shards = LatentShards(tmp_path / "latents")
    assert sorted(shards.keys()) == [f"{i:06d}" for i in range(7)]
    assert shards.batch(torch.arange(7))["video"].shape == (7, 4, 10, 4, 4)
    assert _extract(_folder_data(clip_folder), tmp_path / "latents") == index  # one process reuses it as it is
    with pytest.raises(InputError, match="extracted by 2 process"):  # an unfinished one needs its 2 processes
        (tmp_path / "latents" / INDEX_FILE).unlink()
        _extract(_folder_data(clip_folder), tmp_path / "latents")


def test_the_train_command_extracts_then_trains_the_dit_from_the_shards(tmp_path, capsys):
    from uniform_core.bundle import load_bundle
    from uniform_core.cli import main
    from uniform_core.train.log import read_log

    recipe = smallest_recipe(data={"latents": "shards", "shard_clips": 3})
    run, config = tmp_path / "run", write_recipe(tmp_path, recipe)
    assert main(["train", "--config", config, "--out", str(run), "--stage", "extract"]) == 0
    assert f"wrote {run / 'latents'}" in capsys.readouterr().out
    assert not (run / "checkpoints").exists() and LatentShards(run / "latents").index["clips"] == 4
    assert main(["train", "--config", config, "--resume", str(run)]) == 0
    assert [r["step"] for r in read_log(run / "train_log.jsonl", "dit")][-1] == 2
    assert load_bundle(run / "bundle").duration == 2 and not (run / "latents.safetensors").exists()
