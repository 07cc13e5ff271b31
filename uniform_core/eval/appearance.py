"""What the picture shows, frame by frame: the object's colour, its shape and the floor's colour.

Tuned on the synthetic data of :mod:`uniform_core.train.synthetic` (plain objects of the palette over a backdrop
and floor of horizontal bands) and robust to the blur and halos of a small video VAE: each pixel is unmixed from
its row's background, so a soft edge keeps its object's colour.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..train.synthetic import COLOURS, FLOORS, SHAPES
from ..train.synthetic import _sdf as shape_sdf  # the renderer's own geometry: a template is drawn as clips are

FOREGROUND_DISTANCE = 0.15  # RGB distance from the row's background that makes a pixel foreground
MIN_OBJECT_PIXELS = 12.0  # object coverage (pixels) below which a frame shows no object (the smallest is ~110)


def as_frames(frames, name: str = "frames") -> np.ndarray:
    """(T, H, W, 3) in [0, 1] (tensor or array) -> float32 numpy."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().float().numpy()
    f = np.asarray(frames, dtype=np.float32)
    if f.ndim != 4 or f.shape[-1] != 3 or f.size == 0:
        raise InputError(f"{name} must have shape (T, H, W, 3) in [0, 1]; got {tuple(f.shape)}")
    return f


@dataclass(frozen=True)
class ObjectMap:
    """Frames with their :func:`object_coverage`, computed once for the several readings of one clip."""

    frames: np.ndarray
    cover: np.ndarray
    labels: np.ndarray


def object_map(frames) -> ObjectMap:
    """``frames`` (T, H, W, 3) in [0, 1], or an :class:`ObjectMap` (returned as it is)."""
    if isinstance(frames, ObjectMap):
        return frames
    f = as_frames(frames)
    return ObjectMap(f, *object_coverage(f))


def object_coverage(frames) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel object coverage (T, H, W) in [0, 1] and palette-colour index (T, H, W) of ``frames``.

    The background is the row's median colour (backdrop and floor are horizontal bands, and an object covers less
    than half a row). A pixel at least FOREGROUND_DISTANCE from it is explained as a mix ``a * colour + (1 - a) *
    background`` of the palette colour it lies closest to; ``a`` is its coverage.
    """
    f = as_frames(frames)
    palette = np.asarray(list(COLOURS.values()), dtype=np.float32)  # (P, 3)
    background = np.median(f, axis=2, keepdims=True)  # (T, H, 1, 3)
    d = f - background  # (T, H, W, 3)
    e = palette - background[..., None, :]  # (T, H, 1, P, 3)
    a = np.clip((d[..., None, :] * e).sum(-1) / np.maximum((e * e).sum(-1), 1e-6), 0.0, 1.0)  # (T, H, W, P)
    residual = np.linalg.norm(d[..., None, :] - a[..., None] * e, axis=-1)
    labels = residual.argmin(-1)
    cover = np.take_along_axis(a, labels[..., None], -1)[..., 0]
    return np.where(np.linalg.norm(d, axis=-1) > FOREGROUND_DISTANCE, cover, 0.0), labels


def frame_colours(frames, n_objects: int = 1) -> list[tuple[str, ...] | None]:
    """Per frame, the ``n_objects`` palette colours covering most of the foreground (sorted by name), or None for
    a frame that shows no object."""
    m = object_map(frames)
    cover, labels = m.cover, m.labels
    per_colour = np.stack([np.where(labels == i, cover, 0.0).sum((1, 2)) for i in range(len(COLOURS))], 1)
    names = list(COLOURS)
    out: list[tuple[str, ...] | None] = []
    for mass in per_colour:  # (P,) pixels of each colour in this frame
        if mass.sum() < MIN_OBJECT_PIXELS * n_objects:
            out.append(None)
        else:
            out.append(tuple(sorted(names[i] for i in np.argsort(-mass)[:n_objects])))
    return out


def dominant_colour(frames) -> str:
    """The palette colour covering most object pixels over all of ``frames``, or ``"none"`` if nothing shows."""
    m = object_map(frames)
    cover, labels = m.cover, m.labels
    mass = [float(np.where(labels == i, cover, 0.0).sum()) for i in range(len(COLOURS))]
    return list(COLOURS)[int(np.argmax(mass))] if max(mass) >= MIN_OBJECT_PIXELS else "none"


@dataclass(frozen=True)
class ColourTrack:
    """How the captioned colour(s) held over a clip. ``share``: frames showing exactly the captioned colours (a
    frame with no object counts as wrong); ``flips``: changes of the dominant colours between consecutive frames
    that show an object; ``held``: every frame shows the captioned colours (right colour, no flip)."""

    share: float
    flips: int
    held: bool


def colour_track(colours: list[tuple[str, ...] | None], captioned) -> ColourTrack:
    """Score :func:`frame_colours` against the captioned colour names."""
    want = tuple(sorted(captioned))
    unknown = [c for c in want if c not in COLOURS]
    if unknown:
        raise InputError(f"captioned colours must be among {', '.join(COLOURS)}; got {unknown}")
    seen = [c for c in colours if c is not None]
    flips = sum(a != b for a, b in zip(seen, seen[1:], strict=False))
    share = sum(c == want for c in colours) / len(colours)
    return ColourTrack(share, flips, share == 1.0)


def _template(shape: str, mass: float, centre: tuple[float, float], size: tuple[int, int]) -> np.ndarray:
    """Coverage (H, W) of ``shape`` drawn as the renderer draws it, scaled to ``mass`` pixels of area and placed
    with its centroid at ``centre`` (x, y)."""
    unit = {"ball": np.pi, "square": 4 * 0.85**2, "triangle": 2.0}[shape]  # area for a half-extent of 1
    r = float(np.sqrt(mass / unit))
    dy = r / 3 if shape == "triangle" else 0.0  # the triangle's centroid lies a third of r below its origin
    ys = torch.arange(size[0], dtype=torch.float64) + 0.5 - (centre[1] - dy)
    xs = torch.arange(size[1], dtype=torch.float64) + 0.5 - centre[0]
    return (0.5 - shape_sdf(shape, xs[None, :], ys[:, None], r)).clamp(0, 1).numpy()


def frame_shapes(frames, colour: str | None = None) -> list[str | None]:
    """Per frame, the shape (of :data:`SHAPES`) whose template overlaps the object best (soft IoU), or None when
    no object shows. ``colour`` picks one object by its palette colour; default all foreground."""
    m = object_map(frames)
    cover, labels = m.cover, m.labels
    if colour is not None:
        cover = np.where(labels == list(COLOURS).index(colour), cover, 0.0)
    rows, cols = np.mgrid[0 : cover.shape[1], 0 : cover.shape[2]] + 0.5
    out: list[str | None] = []
    for c in cover:
        mass = float(c.sum())
        if mass < MIN_OBJECT_PIXELS:
            out.append(None)
            continue
        centre = (float((c * cols).sum() / mass), float((c * rows).sum() / mass))
        iou = {}
        for shape in SHAPES:
            t = _template(shape, mass, centre, c.shape)
            iou[shape] = np.minimum(c, t).sum() / max(np.maximum(c, t).sum(), 1e-9)
        out.append(max(iou, key=iou.get))
    return out


def object_shape(frames, colour: str | None = None) -> str:
    """The shape most frames of ``frames`` show (:func:`frame_shapes`), or ``"none"``."""
    votes = Counter(s for s in frame_shapes(frames, colour) if s is not None)
    return votes.most_common(1)[0][0] if votes else "none"


def floor_colour(frames, floor_row: float) -> str:
    """The floor colour (of :data:`FLOORS`) nearest the median of the rows below ``floor_row`` (pixels from the
    top; objects never go below it)."""
    f = object_map(frames).frames
    first = int(np.ceil(floor_row)) + 1
    if first >= f.shape[1]:
        raise InputError(f"floor_row must leave rows below it in {f.shape[1]}-row frames; got {floor_row!r}")
    median = np.median(f[:, first:].reshape(-1, 3), axis=0)
    names = list(FLOORS)
    return names[int(np.argmin([np.linalg.norm(median - np.asarray(FLOORS[n])) for n in names]))]


def foreground_pixels(frames) -> np.ndarray:
    """Per frame (T,), the number of pixels that stand out from their row's background (object and any halo)."""
    return (object_map(frames).cover > 0).sum((1, 2)).astype(np.float64)
