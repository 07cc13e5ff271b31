"""The kinds of training data the paper uses, each as shards of small JSON-able clip references.

A source lists its clips in shards (the unit the stream shuffles, see ``shard_stream``) without reading them:
each clip is a reference (a dict with its ``"key"``) that :meth:`Source.load` decodes. Four kinds:

- synthetic: the seeded bouncing-object clips (``data.num_clips`` seeds from ``data.first_seed``);
- ``data.folder``: video files with a ``.json`` (``"caption"``) or ``.txt`` caption beside each;
- ``data.csv``: an AudioSet / VGGSound-style CSV (``csv_rows``), clips under ``data.root``;
- ``data.tar``: WebDataset-style tar shards, members ``KEY.mp4`` + ``KEY.json`` (``"caption"``, ``"text"`` or
  ``"label"``) or ``KEY.txt``, read in place from the archive: nothing is extracted to disk.

A clip that cannot be used raises :class:`ClipSkipped` with one of :data:`SKIP_REASONS`; the stream counts them.
"""

from __future__ import annotations

import glob
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path

import av

from .. import media
from ..checks import is_inside
from ..errors import InputError, UniFormError
from ..tasks import VIDEO_FPS
from .config import DataConfig
from .csv_rows import CsvIndex
from .data import VIDEO_SUFFIXES, TrainingClip, conform_clip, json_caption, sidecar_caption
from .synthetic import SyntheticSpec, make_clip

logger = logging.getLogger(__name__)

SHARD_ROWS = 100  # folder files / CSV rows / synthetic seeds per shard
SILENT_PEAK = 1e-3  # a clip whose sound never reaches -60 dBFS is silent
SHORT_TOLERANCE = 0.1  # seconds a clip may fall short of data.seconds (codec padding) before it is too short
SKIP_REASONS = ("missing", "outside_root", "unreadable", "truncated", "too_short", "no_audio", "silent", "no_caption")
CAPTION_SUFFIXES = (".json", ".txt")


class ClipSkipped(InputError):
    """A clip the data set lists but training cannot use; ``reason`` is one of :data:`SKIP_REASONS`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Source:
    """``counts[s]``: clips of shard ``s``; ``refs(s)`` yields them in order; ``load(ref)`` decodes one."""

    counts: list[int]

    def __len__(self) -> int:
        return sum(self.counts)

    def refs(self, shard: int) -> Iterator[dict]:
        raise NotImplementedError

    def load(self, ref: dict) -> TrainingClip:
        raise NotImplementedError


def open_source(data: DataConfig) -> Source:
    """The source ``data`` names, limited to its first ``data.num_clips`` clips in listing order."""
    if data.folder is not None:
        return FolderSource(data)
    if data.csv is not None:
        return CsvSource(data)
    if data.tar is not None:
        return TarSource(data)
    return SyntheticSource(data)


def _split(total: int, rows: int = SHARD_ROWS) -> list[int]:
    return [min(rows, total - start) for start in range(0, total, rows)]


class SyntheticSource(Source):
    def __init__(self, data: DataConfig):
        self.data, self.counts = data, _split(data.num_clips)
        self.spec = SyntheticSpec(seconds=data.seconds, size=data.size, max_objects=data.max_objects)

    def refs(self, shard: int) -> Iterator[dict]:
        first = self.data.first_seed + shard * SHARD_ROWS
        for seed in range(first, first + self.counts[shard]):
            yield {"key": f"{seed:06d}", "seed": seed}

    def load(self, ref: dict) -> TrainingClip:
        clip = make_clip(ref["seed"], self.spec)
        return TrainingClip(clip.frames, clip.waveform, clip.caption)


class FolderSource(Source):
    def __init__(self, data: DataConfig):
        self.data, self.folder = data, Path(data.folder)
        if not self.folder.is_dir():
            raise InputError(f"data.folder {data.folder!r} is not a folder of video files")
        names = sorted(p.name for p in self.folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not names:
            raise InputError(f"data.folder {data.folder!r} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
        self.names = names[: data.num_clips]
        self.counts = _split(len(self.names))

    def refs(self, shard: int) -> Iterator[dict]:
        for name in self.names[shard * SHARD_ROWS : shard * SHARD_ROWS + self.counts[shard]]:
            yield {"key": Path(name).stem, "file": name}

    def load(self, ref: dict) -> TrainingClip:
        path = self.folder / ref["file"]
        if not path.is_file():
            raise ClipSkipped("missing", f"{path}: the file is gone")
        try:
            caption = sidecar_caption(path)
        except (InputError, ValueError) as e:
            raise ClipSkipped("no_caption", f"{path}: {e}") from e
        return decode_clip(path, 0.0, caption, self.data)


class CsvSource(Source):
    def __init__(self, data: DataConfig):
        self.data = data
        self.index = CsvIndex(Path(data.csv), data.name_format, data.split, data.num_clips, SHARD_ROWS)
        self.root = Path(data.root) if data.root is not None else Path(data.csv).parent
        if not self.root.is_dir():
            raise InputError(f"data.root {str(self.root)!r} is not a folder (the CSV's clips are read from it)")
        self.counts = self.index.counts

    def refs(self, shard: int) -> Iterator[dict]:
        return self.index.rows(shard)

    def load(self, ref: dict) -> TrainingClip:
        path = self.root / ref["file"]
        if not is_inside(path, self.root):
            raise ClipSkipped("outside_root", f"CSV row {ref['key']!r}: {ref['file']!r} is outside data.root")
        if not path.is_file():
            raise ClipSkipped("missing", f"CSV row {ref['key']!r}: {path} does not exist")
        if not ref["caption"]:
            raise ClipSkipped("no_caption", f"CSV row {ref['key']!r} has an empty caption")
        return decode_clip(path, ref["start"], ref["caption"], self.data)


class TarSource(Source):
    def __init__(self, data: DataConfig):
        self.data = data
        pattern = str(Path(data.tar) / "*.tar") if Path(data.tar).is_dir() else data.tar
        self.shards = sorted(glob.glob(pattern))
        if not self.shards:
            raise InputError(f"data.tar {data.tar!r} names no .tar files (give a folder of them or a glob)")
        counts, left = [], data.num_clips
        for shard in range(len(self.shards)):
            counts.append(min(left, sum(1 for _ in self._scan(shard))))
            left -= counts[-1]
        self.counts = counts

    def refs(self, shard: int) -> Iterator[dict]:
        for n, ref in enumerate(self._scan(shard)):
            if n == self.counts[shard]:
                return
            yield ref

    def _scan(self, shard: int) -> Iterator[dict]:
        """The clips of tar ``shard`` from its headers (member data is skipped, not read): one per video member,
        with the offsets of it and of its caption members (members of one key are adjacent, as WebDataset writes)."""
        sample: dict | None = None
        try:
            with tarfile.open(self.shards[shard], "r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, _, suffix = member.name.rpartition("/")[2].partition(".")
                    key = f"{member.name.rpartition('/')[0]}/{key}".lstrip("/")
                    if sample is not None and sample["key"] != key:
                        yield from _video_only(sample)
                        sample = None
                    sample = sample or {"key": key, "shard": shard}
                    if f".{suffix.lower()}" in (*VIDEO_SUFFIXES, *CAPTION_SUFFIXES):
                        sample[suffix.lower()] = [member.offset_data, member.size]
        except (tarfile.TarError, OSError) as e:
            logger.warning("data.tar shard %s is unreadable from some point on (%s); its clips before it are used",
                           self.shards[shard], e)  # fmt: skip
        if sample is not None:
            yield from _video_only(sample)

    def load(self, ref: dict) -> TrainingClip:
        shard = self.shards[ref["shard"]]
        video = next(s for s in ref if f".{s}" in VIDEO_SUFFIXES)
        try:
            with open(shard, "rb") as f:
                data = {name: _read(f, *ref[name]) for name in ("json", "txt", video) if name in ref}
        except OSError as e:
            raise ClipSkipped("missing", f"{shard}: {ref['key']}: {e}") from e
        try:
            caption = json_caption(data["json"].decode()) if "json" in data else None
        except (UnicodeDecodeError, ValueError):
            caption = None
        if caption is None and "txt" in data:
            caption = data["txt"].decode(errors="replace").strip() or None
        if caption is None:
            raise ClipSkipped("no_caption", f"{shard}: {ref['key']} has no .json caption or .txt member")
        return decode_clip(media.MediaBytes(f"{shard}:{ref['key']}.{video}", data[video]), 0.0, caption, self.data)


def _video_only(sample: dict) -> Iterator[dict]:
    if any(f".{name}" in VIDEO_SUFFIXES for name in sample):
        yield sample


def _read(f, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def decode_clip(source: Path | media.MediaBytes, start: float, caption: str, data: DataConfig) -> TrainingClip:
    """``data.seconds`` of ``source`` from ``start`` s, conformed for training (see ``data.conform_clip``), or
    :class:`ClipSkipped` when it cannot be decoded, is too short (``"truncated"`` when the file ends before its
    header says), has no sound or is silent."""
    seconds = data.seconds
    try:
        clip = media.read_video(source, fps=VIDEO_FPS, size=(data.size, data.size), start=start, duration=seconds)
    except (UniFormError, OSError, av.error.FFmpegError, EOFError) as e:
        raise ClipSkipped("unreadable", f"{source}: {e}") from e
    if clip.audio is None:
        raise ClipSkipped("no_audio", f"{source} has no audio stream")
    have = min(clip.duration, clip.audio.duration)
    if have < seconds - SHORT_TOLERANCE:
        cut = any("truncated" in note for note in clip.notes + clip.audio.notes)
        reason = "truncated" if cut else "too_short"
        raise ClipSkipped(reason, f"{source}: {have:.2f} s from {start:g} s, {seconds} s needed")
    if clip.audio.waveform.abs().max().item() < SILENT_PEAK:
        raise ClipSkipped("silent", f"{source}: its sound never reaches {SILENT_PEAK:g} (-60 dBFS)")
    return conform_clip(clip, seconds, data.size, caption)
