"""The data set specs on tiny generated clips: a folder, an AudioSet-style CSV, a VGGSound CSV and tar shards read
the same clips; the stream's cross-shard shuffle is deterministic per (seed, epoch), resumes at the exact clip and
splits over processes; bad clips are skipped with a count per reason and CSV paths out of the root are refused."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from uniform_core.errors import InputError
from uniform_core.media import AudioClip, write_mp4
from uniform_core.train.config import DataConfig, config_from_dict
from uniform_core.train.shard_stream import ClipStream, first_clips, usable_clips
from uniform_core.train.sources import SHARD_ROWS, open_source
from uniform_core.train.synthetic import SyntheticSpec, make_clip, write_dataset

SPEC = SyntheticSpec(size=32, min_object_px=6, max_object_px=10)
SEEDS = [0, 1, 2, 3, 4]


def _data(**kw) -> DataConfig:
    return DataConfig(seconds=2, size=32, **kw)


def write_tar_shards(tar_dir: Path, clip_dir: Path, groups: list[list[int]]) -> None:
    """WebDataset-style shards: per clip ``KEY.mp4`` then ``KEY.json`` (a caption) or, for odd seeds, ``KEY.txt``."""
    tar_dir.mkdir()
    for n, group in enumerate(groups):
        with tarfile.open(tar_dir / f"shard-{n:03d}.tar", "w") as tar:
            for seed in group:
                key = f"{seed:06d}"
                tar.add(clip_dir / f"{key}.mp4", arcname=f"{key}.mp4")
                caption = json.loads((clip_dir / f"{key}.json").read_text())["caption"]
                if seed % 2:
                    (tar_dir / "caption.txt").write_text(caption + "\n")
                    tar.add(tar_dir / "caption.txt", arcname=f"{key}.txt")
                else:
                    (tar_dir / "caption.json").write_text(json.dumps({"caption": caption}))
                    tar.add(tar_dir / "caption.json", arcname=f"{key}.json")
    for name in ("caption.txt", "caption.json"):
        (tar_dir / name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, DataConfig]:
    """The same five clips as a folder, an AudioSet-style CSV (header in a comment, file + start + caption), a
    headerless VGGSound CSV (``{ytid}_{start:06d}.mp4`` files) and two tar shards."""
    root = tmp_path_factory.mktemp("datasets")
    clips = root / "folder"
    write_dataset(clips, SEEDS, SPEC)
    captions = [make_clip(seed, SPEC).caption for seed in SEEDS]
    rows = [f'folder/{seed:06d}.mp4, 0, "{c}"' for seed, c in zip(SEEDS, captions, strict=True)]
    (root / "audioset.csv").write_text("# written by a test\n# file, start_seconds, caption\n" + "\n".join(rows))
    vgg = root / "vggsound"
    vgg.mkdir()
    for seed in SEEDS:
        shutil.copy(clips / f"{seed:06d}.mp4", vgg / f"yt-{seed}_000030.mp4")
    rows = [f"yt-{seed},30,{c},{'test' if seed == 4 else 'train'}" for seed, c in zip(SEEDS, captions, strict=True)]
    (root / "vggsound.csv").write_text("\n".join(rows) + "\n")
    write_tar_shards(root / "tars", clips, [SEEDS[:3], SEEDS[3:]])
    return {
        "folder": _data(folder=str(clips)),
        "csv": _data(csv=str(root / "audioset.csv")),
        "vggsound": _data(csv=str(root / "vggsound.csv"), root=str(vgg)),
        "tar": _data(tar=str(root / "tars")),
    }


def _read_all(data: DataConfig) -> list:
    clips = usable_clips(ClipStream(open_source(data), 0))
    return [(clip.caption, clip.frames, clip.waveform) for _, clip, _ in clips]


def test_every_spec_reads_the_same_clips(datasets):
    expected = _read_all(datasets["folder"])
    assert len(expected) == len(SEEDS) and expected[0][1].shape == (34, 32, 32, 3) and expected[0][2].shape == (32000,)
    by_caption = {caption: (frames, wave) for caption, frames, wave in expected}
    for kind in ("csv", "vggsound", "tar"):
        got = _read_all(datasets[kind])
        assert sorted(c for c, _, _ in got) == sorted(by_caption), kind
        for caption, frames, wave in got:
            assert torch.equal(frames, by_caption[caption][0]) and torch.equal(wave, by_caption[caption][1]), kind
    train_only = _read_all(DataConfig(**{**datasets["vggsound"].__dict__, "split": "train"}))
    assert len(train_only) == 4 and make_clip(4, SPEC).caption not in [c for c, _, _ in train_only]


def test_tar_members_are_read_in_place_in_listing_order(datasets):
    source = open_source(datasets["tar"])
    assert source.counts == [3, 2]
    refs = [r for s in range(2) for r in source.refs(s)]
    assert [r["key"] for r in refs] == [f"{s:06d}" for s in SEEDS]
    assert {"mp4", "json"} <= set(refs[0]) and {"mp4", "txt"} <= set(refs[1])
    assert [c.caption for c in first_clips(source, 2)] == [make_clip(s, SPEC).caption for s in SEEDS[:2]]


def _keys(stream) -> list[str]:
    return [ref["key"] for ref in stream]


def test_the_shuffle_mixes_shards_is_deterministic_and_differs_by_epoch():
    source = open_source(DataConfig(num_clips=10 * SHARD_ROWS))
    first = _keys(ClipStream(source, seed=3, epoch=0, shuffle_buffer=64))
    assert _keys(ClipStream(source, seed=3, epoch=0, shuffle_buffer=64)) == first
    assert sorted(first) == sorted(_keys(ClipStream(source, seed=3, shuffle=False)))  # every clip once
    assert _keys(ClipStream(source, seed=3, epoch=1, shuffle_buffer=64)) != first
    assert _keys(ClipStream(source, seed=4, epoch=0, shuffle_buffer=64)) != first
    shards = [int(key) // SHARD_ROWS for key in first]
    assert len(set(shards[:200])) >= 3  # the first 200 clips come from several shards, not one after the other


@pytest.mark.parametrize("k", [0, 1, 63, 64, 150, 999])
def test_a_stream_resumed_at_position_k_yields_exactly_the_rest(k):
    source = open_source(DataConfig(num_clips=10 * SHARD_ROWS))
    whole = _keys(ClipStream(source, seed=1, epoch=2, shuffle_buffer=64))
    stream = ClipStream(source, seed=1, epoch=2, shuffle_buffer=64)
    it = iter(stream)
    head = [next(it)["key"] for _ in range(k)]
    position = json.loads(json.dumps(stream.position()))  # survives a trip through JSON
    rest = _keys(ClipStream(source, seed=1, epoch=2, shuffle_buffer=64, position=position))
    assert head + rest == whole
    with pytest.raises(InputError, match="not a position of epoch 3"):
        ClipStream(source, seed=1, epoch=3, position=position)


def test_two_processes_take_disjoint_shares_that_cover_the_data():
    source = open_source(DataConfig(num_clips=5 * SHARD_ROWS - 7))
    shares = [ClipStream(source, seed=0, rank=r, world=2, shuffle_buffer=50) for r in range(2)]
    keys = [_keys(s) for s in shares]
    assert not set(keys[0]) & set(keys[1])
    assert sorted(keys[0] + keys[1]) == sorted(_keys(ClipStream(source, seed=0, shuffle=False)))
    assert [len(k) for k in keys] == [len(s) for s in shares] == [247, 246]


def test_bad_clips_are_skipped_with_a_count_per_reason_and_paths_out_of_the_root_refused(tmp_path, caplog):
    root = tmp_path / "root"
    write_dataset(root, [0, 1], SPEC)
    data = (root / "000001.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])
    clip = make_clip(2, SPEC)
    write_mp4(root / "silent.mp4", clip.frames, SPEC.fps, AudioClip(torch.zeros(1, clip.waveform.numel()), 16000))
    shutil.copy(root / "000000.mp4", tmp_path / "outside.mp4")
    (root / "link.mp4").symlink_to(tmp_path / "outside.mp4")
    names = ["000000.mp4", "cut.mp4", "silent.mp4", "nowhere.mp4", "../outside.mp4", "link.mp4", "000001.mp4"]
    (tmp_path / "clips.csv").write_text("file,caption\n" + "".join(f"{n},a caption\n" for n in names))
    source = open_source(_data(csv=str(tmp_path / "clips.csv"), root=str(root)))
    skipped: Counter = Counter()
    with caplog.at_level(logging.INFO, logger="uniform_core.train.shard_stream"):
        kept = [ref["key"] for ref, _, _ in usable_clips(ClipStream(source, 0, shuffle=False), skipped, workers=3)]
    assert kept == ["000000", "000001"]
    assert skipped == {"truncated": 1, "silent": 1, "missing": 1, "outside_root": 2}
    assert "outside.mp4' is outside data.root" in caplog.text and "skipped clip link (outside_root)" in caplog.text


def test_recipes_name_one_source_and_bad_csvs_say_what_is_wrong(tmp_path):
    assert config_from_dict({"data": {"csv": "a.csv", "shard_clips": 4}}).data.uses_shards
    assert not config_from_dict({}).data.uses_shards  # old recipes keep the in-memory cache
    with pytest.raises(InputError, match="one of folder, csv or tar"):
        config_from_dict({"data": {"csv": "a.csv", "tar": "b"}})
    with pytest.raises(InputError, match="set data.latents to 'shards'"):
        config_from_dict({"data": {"tar": "b", "latents": "cache"}})
    (tmp_path / "bad.csv").write_text("path,start\nx.mp4,0\n")
    with pytest.raises(InputError, match="needs a caption column"):
        open_source(_data(csv=str(tmp_path / "bad.csv")))
    (tmp_path / "bad.csv").write_text("file,start,caption\nx.mp4,soon,hello\n")
    with pytest.raises(InputError, match="line 2: start 'soon' is not seconds"):
        open_source(_data(csv=str(tmp_path / "bad.csv")))


def test_a_csv_row_s_start_picks_the_window_the_whole_clip_shows_there(datasets, tmp_path):
    folder = Path(datasets["folder"].folder)
    (tmp_path / "late.csv").write_text(f"file,start,caption\n{folder / '000002.mp4'},1,late\n")
    late = _read_all(DataConfig(seconds=1, size=32, csv=str(tmp_path / "late.csv"), root=str(folder)))
    whole = {caption: (frames, wave) for caption, frames, wave in _read_all(datasets["folder"])}
    frames, wave = whole[make_clip(2, SPEC).caption]
    assert len(late) == 1 and late[0][0] == "late"
    assert torch.equal(late[0][1], frames[17:]) and torch.equal(late[0][2], wave[16000:])
