"""One process's share of a data set, streamed in a shuffled order that is a pure function of (seed, epoch).

Each epoch the shards are visited in an order drawn from (seed, epoch); their clip references are dealt out in turn
to the processes (reference n of the epoch goes to process n mod world, so the shares are disjoint, cover the data
and differ in size by one at most); each process draws its next clip at random from a buffer of
``shuffle_buffer`` references, refilled from the shards. Only references sit in the buffer, never decoded clips.

The stream's :meth:`ClipStream.position` after any clip is a small JSON-able dict; a stream started from it yields
exactly the clips that would have followed. :func:`usable_clips` decodes the references, skipping the clips that
cannot be used (see ``sources.ClipSkipped``) with a count per reason.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import InputError
from .data import TrainingClip
from .sources import ClipSkipped, Source

logger = logging.getLogger(__name__)


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The order epoch ``epoch`` visits the shards in (the same on every process)."""
    if not shuffle:
        return list(range(num_shards))
    return np.random.default_rng([seed, epoch]).permutation(num_shards).tolist()


class ClipStream:
    """Clip references of process ``rank`` of ``world`` for ``epoch`` of ``source``, from ``position`` (None: the
    epoch's start). ``shuffle=False`` keeps the listing order (shards in order, no buffer)."""

    def __init__(
        self,
        source: Source,
        seed: int,
        epoch: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle_buffer: int = 1000,
        shuffle: bool = True,
        position: dict | None = None,
    ):
        if not 0 <= rank < world:
            raise InputError(f"process {rank} of {world}: the rank must be in 0..{world - 1}")
        self.source, self.seed, self.epoch, self.rank, self.world = source, seed, epoch, rank, world
        self.buffer_size = shuffle_buffer if shuffle else 1
        self.order = shard_order(len(source.counts), seed, epoch, shuffle)
        self.state = {"epoch": epoch, "shard": 0, "item": 0, "dealt": 0, "emitted": 0, "buffer": []}
        if position is not None:
            if position.get("epoch") != epoch or set(position) != set(self.state):
                raise InputError(f"stream position {position} is not a position of epoch {epoch} of this stream")
            self.state = copy.deepcopy(position)

    def position(self) -> dict:
        """Where the stream stands after the last clip it yielded (JSON-able)."""
        return copy.deepcopy(self.state)

    def __len__(self) -> int:
        """Clips this process gets in the epoch."""
        total = len(self.source)
        return total // self.world + (self.rank < total % self.world)

    def __iter__(self) -> Iterator[dict]:
        s = self.state
        buffer = s["buffer"]
        while s["shard"] < len(self.order):
            refs = self.source.refs(self.order[s["shard"]])
            for _ in range(s["item"]):
                next(refs)
            for ref in refs:
                s["item"] += 1
                mine = s["dealt"] % self.world == self.rank
                s["dealt"] += 1
                if mine:
                    buffer.append(ref)
                    if len(buffer) >= self.buffer_size:
                        yield self._draw()
            s["shard"], s["item"] = s["shard"] + 1, 0
        while buffer:
            yield self._draw()

    def _draw(self) -> dict:
        s = self.state
        buffer = s["buffer"]
        pick = int(np.random.default_rng([self.seed, s["epoch"], self.rank, s["emitted"]]).integers(len(buffer)))
        buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
        s["emitted"] += 1
        return buffer.pop()


def usable_clips(
    stream: ClipStream, skipped: Counter | None = None, workers: int = 0
) -> Iterator[tuple[dict, TrainingClip, dict]]:
    """(reference, decoded clip, the stream's position after it) for each clip of ``stream`` that can be used, in
    stream order; each one skipped is logged and counted in ``skipped`` (reason -> count), which goes on counting
    from what it holds. ``workers`` threads decode the next clips ahead (PyAV and torch release the GIL while they
    decode and resize); the clips, counts and positions are the same with any number of them."""
    skipped = Counter() if skipped is None else skipped
    ahead: deque = deque()  # (reference, its decoding, the position after it), in stream order
    with ThreadPoolExecutor(max(workers, 1), thread_name_prefix="decode") as pool:
        for ref in stream:
            ahead.append((ref, pool.submit(stream.source.load, ref), stream.position()))
            if len(ahead) > workers:
                yield from _settled(ahead.popleft(), skipped)
        while ahead:
            yield from _settled(ahead.popleft(), skipped)


def _settled(item: tuple, skipped: Counter) -> Iterator[tuple[dict, TrainingClip, dict]]:
    ref, decoding, position = item
    try:
        yield ref, decoding.result(), position
    except ClipSkipped as e:
        skipped[e.reason] += 1
        logger.info("skipped clip %s (%s): %s", ref["key"], e.reason, e)


def first_clips(source: Source, count: int) -> list[TrainingClip]:
    """The first ``count`` usable clips in listing order (what the codec stages train on)."""
    skipped: Counter = Counter()
    clips = []
    for _, clip, _ in usable_clips(ClipStream(source, seed=0, shuffle=False), skipped):
        clips.append(clip)
        if len(clips) == count:
            break
    if skipped:
        logger.warning("codec clips: skipped %s", format_skips(skipped))
    if not clips:
        raise InputError(f"the data set holds no usable clip (skipped: {format_skips(skipped)})")
    return clips


def format_skips(skipped: Counter) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())) or "none"
