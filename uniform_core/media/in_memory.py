"""A media file held in memory, for the readers to take in place of a path."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MediaBytes:
    """A media file's bytes (a member of a tar shard): the readers take it where they take a path, so an archive is
    read without extracting anything to disk. ``name`` stands for it in messages."""

    name: str
    data: bytes = field(repr=False)

    def __str__(self) -> str:
        return self.name
