"""AudioSet / VGGSound-style CSV files of clips: which file, from which second, with which caption.

Columns are found by a header row (``#``-comment lines before it are skipped; AudioSet's header is such a comment):
``file`` (or ``path``, ``filename``) or ``ytid`` (``youtube_id``, ``video_id``); ``start`` (``start_seconds``,
``start_time``), optional; ``caption`` (``text``, ``label``, ``labels``); ``split``, optional. A file without a
header row is VGGSound's ``vggsound.csv``: ``ytid, start, label, split``.

A row that names a ``file`` is read from ``start`` seconds into it. A row that names a YouTube id is the file
``name_format.format(ytid=..., start=int(start))`` (VGGSound's ``{ytid}_{start:06d}.mp4``); a name that holds the
start is a clip already cut there, read from its beginning, otherwise from ``start`` seconds in. One row per line.
The index keeps only where each shard's rows begin, so a CSV of millions of rows is never held in memory.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

COLUMNS = {
    "file": ("file", "path", "filename"),
    "ytid": ("ytid", "youtube_id", "video_id"),
    "start": ("start", "start_seconds", "start_time"),
    "caption": ("caption", "text", "label", "labels"),
    "split": ("split",),
}
VGGSOUND_COLUMNS = {"ytid": 0, "start": 1, "caption": 2, "split": 3}


class CsvIndex:
    """The rows of ``path`` (those of ``split`` when given, at most ``limit``) in shards of ``shard_rows``:
    ``counts[s]`` rows each, ``rows(s)`` yields them as references ``{"key", "file", "start", "caption"}``."""

    def __init__(self, path: Path, name_format: str, split: str | None, limit: int, shard_rows: int):
        if not path.is_file():
            raise InputError(f"data.csv {str(path)!r} is not a file")
        self.path, self.name_format, self.split = path, name_format, split
        self.columns: dict[str, int] | None = None
        self.offsets: list[int] = []  # byte offset of each shard's first row
        self.counts: list[int] = []
        for line, offset, fields in self._lines(0):
            if sum(self.counts) == limit:
                break
            if self.columns is None:
                self.columns = self._header(fields, line)
                if self.columns is not None:
                    continue
                if fields[0].startswith("#"):
                    continue
                self.columns = dict(VGGSOUND_COLUMNS)
            if self._row(fields, line) is None:
                continue
            if not self.counts or self.counts[-1] == shard_rows:
                self.offsets.append(offset)
                self.counts.append(0)
            self.counts[-1] += 1
        if not self.counts:
            raise InputError(f"data.csv {str(path)!r} lists no clips" + (f" of split {split!r}" if split else ""))

    def rows(self, shard: int) -> Iterator[dict]:
        left = self.counts[shard]
        for line, _, fields in self._lines(self.offsets[shard]):
            if left == 0:
                return
            ref = self._row(fields, line)
            if ref is not None:
                left -= 1
                yield ref

    def _lines(self, offset: int) -> Iterator[tuple[int, int, list[str]]]:
        """(line number from where reading started, byte offset, fields) of each non-blank line from ``offset``."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            for number, raw in enumerate(f, 1):
                text = raw.decode("utf-8", errors="replace").strip()
                if text:
                    yield number, offset, next(csv.reader([text], skipinitialspace=True))
                offset += len(raw)

    def _header(self, fields: list[str], line: int) -> dict[str, int] | None:
        names = [f.lstrip("#").strip().lower() for f in fields]
        found = {role: names.index(n) for role, aliases in COLUMNS.items() for n in aliases if n in names}
        if not found:
            return None
        if "caption" not in found or not ({"file", "ytid"} & set(found)):
            raise InputError(
                f"data.csv {str(self.path)!r} line {line}: the header {fields} needs a caption column "
                f"({', '.join(COLUMNS['caption'])}) and a file or YouTube id column "
                f"({', '.join(COLUMNS['file'] + COLUMNS['ytid'])})"
            )
        if "file" not in found and "{start" in self.name_format and "start" not in found:
            raise InputError(f"data.csv {str(self.path)!r}: data.name_format uses {{start}}, the CSV has no start")
        return found

    def _row(self, fields: list[str], line: int) -> dict | None:
        """The row's reference, or None for a row of another split."""
        cols = self.columns
        if len(fields) <= max(cols.values()):
            raise InputError(f"data.csv {str(self.path)!r} line {line}: {len(fields)} fields, {len(cols)} expected")
        if self.split is not None and ("split" not in cols or fields[cols["split"]] != self.split):
            return None
        try:
            start = float(fields[cols["start"]]) if "start" in cols else 0.0
        except ValueError:
            raise InputError(
                f"data.csv {str(self.path)!r} line {line}: start {fields[cols['start']]!r} is not seconds"
            ) from None
        if "file" in cols:
            name = fields[cols["file"]]
        else:
            name = self.name_format.format(ytid=fields[cols["ytid"]], start=int(start))
            start = 0.0 if "{start" in self.name_format else start
        key = Path(name).stem if start == 0 else f"{Path(name).stem}@{start:g}"
        return {"key": key, "file": name, "start": start, "caption": fields[cols["caption"]].strip()}
