"""A seeded synthetic audio-visual data set that a tiny model can learn on a CPU.

Each clip shows one (optionally two) plain-coloured object bouncing on a floor in front of a plain backdrop. Every
floor impact makes a short sound whose class follows the object's shape (ball -> tone, square -> knock, triangle ->
chime) and whose pitch follows its colour. The impact times are chosen first and the motion is built around them
(a parabola between consecutive impacts), so the stored event times are exact in both modalities: the object
touches the floor at each event time and its sound starts on the same sample. A clip is a pure function of
``(seed, spec)``: numpy's PCG64 draws everything, so the same seed gives the same clip (bit-identical with the same
numpy and torch builds).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from .. import checks
from ..atomic import write_text
from ..errors import InputError
from ..tasks import SAMPLE_RATE, VIDEO_FPS

SHAPES = ("ball", "square", "triangle")
COLOURS = MappingProxyType(
    {
        "red": (0.92, 0.12, 0.10),
        "green": (0.10, 0.80, 0.20),
        "blue": (0.20, 0.45, 1.00),
        "yellow": (1.00, 0.85, 0.10),
        "white": (0.95, 0.95, 0.95),
    }
)
# Dark, low-saturation floors so every object colour stands out (also in grayscale, which AV-align's flow uses).
FLOORS = MappingProxyType({"black": (0.05, 0.05, 0.06), "grey": (0.20, 0.20, 0.20), "brown": (0.24, 0.15, 0.08)})
BACKDROP_SHADE = 0.55  # the backdrop above the floor is the floor colour, darker
SOUND_OF_SHAPE = MappingProxyType({"ball": "tone", "square": "knock", "triangle": "chime"})
SOUND_CLASSES = ("tone", "knock", "chime")
# Semitones above each sound class's base pitch; colour -> pitch.
PITCH_STEPS = MappingProxyType({"red": 0, "green": 2, "blue": 4, "yellow": 7, "white": 9})
BASE_PITCH_HZ = MappingProxyType({"tone": 262.0, "knock": 1500.0, "chime": 1047.0})
BURST_SECONDS = 0.25  # every impact sound is over (faded out) within this time
HELDOUT_FIRST_SEED = 1_000_000  # evaluation clips start here; training uses small seeds from 0


def heldout_seeds(n: int) -> list[int]:
    """The ``n`` seeds of the held-out evaluation clips, shared by every evaluation so numbers are comparable."""
    return list(range(HELDOUT_FIRST_SEED, HELDOUT_FIRST_SEED + n))


@dataclass(frozen=True)
class Vocabulary:
    """The attribute names captions and metrics use."""

    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    floors: tuple[str, ...]
    sound_classes: tuple[str, ...]
    sound_of_shape: MappingProxyType
    colour_rgb: MappingProxyType
    floor_rgb: MappingProxyType


def vocabulary() -> Vocabulary:
    """Shapes, colours, floors and sound classes of the synthetic data, with their RGB values and shape -> sound."""
    return Vocabulary(
        shapes=SHAPES,
        colours=tuple(COLOURS),
        floors=tuple(FLOORS),
        sound_classes=SOUND_CLASSES,
        sound_of_shape=SOUND_OF_SHAPE,
        colour_rgb=COLOURS,
        floor_rgb=FLOORS,
    )


def _gap_scale(n_obj: int) -> float:
    """Two objects bounce more slowly, so that together they do not crowd the sound track."""
    return 1.0 if n_obj == 1 else 1.5


@dataclass(frozen=True)
class SyntheticSpec:
    """What every clip of a data set shares. Times in seconds, sizes in pixels."""

    seconds: int = 2
    fps: int = VIDEO_FPS
    sample_rate: int = SAMPLE_RATE
    size: int = 64
    max_objects: int = 1  # 1 or 2; with 2 each clip draws 1 or 2 objects of different shape and colour
    min_object_px: int = 12
    max_object_px: int = 18
    min_event_gap: float = 0.4  # seconds between two impacts of one object (x1.5 with two objects); any two
    max_event_gap: float = 0.9  # events of a clip are at least BURST_SECONDS apart
    edge_margin: float = 0.12  # no impact this close to the clip's start or end, so both sides are visible
    ambient: bool = True  # low white-noise floor under the impact sounds

    def __post_init__(self):
        if not isinstance(self.seconds, int) or self.seconds < 1:
            raise InputError(f"SyntheticSpec.seconds must be a whole number >= 1; got {self.seconds!r}")
        if not isinstance(self.fps, int) or self.fps < 4:
            raise InputError(f"SyntheticSpec.fps must be a whole number >= 4; got {self.fps!r}")
        if not isinstance(self.sample_rate, int) or self.sample_rate < 12_000:
            # the chime's upper partial reaches 4.9 kHz
            raise InputError(f"SyntheticSpec.sample_rate must be a whole number >= 12000 Hz; got {self.sample_rate!r}")
        if self.max_objects not in (1, 2):
            raise InputError(f"SyntheticSpec.max_objects must be 1 or 2; got {self.max_objects!r}")
        if self.size < 32:
            raise InputError(f"SyntheticSpec.size must be >= 32 px; got {self.size!r}")
        if not 4 <= self.min_object_px <= self.max_object_px <= self.size // 3:
            raise InputError(
                f"SyntheticSpec object size must satisfy 4 <= min_object_px <= max_object_px <= size/3; "
                f"got {self.min_object_px}..{self.max_object_px} for size {self.size}"
            )
        if not BURST_SECONDS <= self.min_event_gap <= self.max_event_gap:
            raise InputError(
                f"SyntheticSpec event gaps must satisfy {BURST_SECONDS} <= min_event_gap <= max_event_gap; "
                f"got {self.min_event_gap}..{self.max_event_gap}"
            )
        if 2 * self.edge_margin + _gap_scale(self.max_objects) * self.max_event_gap > self.seconds:
            raise InputError(f"SyntheticSpec.seconds={self.seconds} is too short for max_event_gap and edge_margin")

    @property
    def num_frames(self) -> int:
        return self.seconds * self.fps

    @property
    def num_samples(self) -> int:
        return self.seconds * self.sample_rate

    @property
    def floor_y(self) -> float:
        """Image row (pixels from the top) where the floor starts; objects rest on it at each impact."""
        return float(self.size - self.size // 8)


@dataclass
class SyntheticClip:
    """One clip. ``frames``: (T, H, W, 3) float32 in [0, 1]; ``waveform``: (N,) float32 mono at the spec's rate;
    ``events``: impact times in seconds, sorted; ``attributes``: JSON-serialisable description."""

    frames: torch.Tensor
    waveform: torch.Tensor
    caption: str
    events: list[float]
    attributes: dict = field(default_factory=dict)


def _impact_times(rng: np.random.Generator, spec: SyntheticSpec, n_obj: int) -> np.ndarray:
    """Impact times of one object, including one virtual impact before and after the clip (they shape the motion
    at the clip edges). Gaps are drawn uniformly in [min_event_gap, max_event_gap] (times _gap_scale)."""
    scale = _gap_scale(n_obj)
    t = [-rng.uniform(0.0, scale * spec.max_event_gap)]
    while t[-1] <= spec.seconds:
        t.append(t[-1] + scale * rng.uniform(spec.min_event_gap, spec.max_event_gap))
    return np.asarray(t)


def _in_clip(times: np.ndarray, spec: SyntheticSpec) -> np.ndarray:
    return times[(times >= 0.0) & (times <= spec.seconds)]


def _valid(all_times: list[np.ndarray], spec: SyntheticSpec) -> bool:
    """No impact inside an edge margin, at least one event, and all events of all objects spaced apart."""
    events = np.sort(np.concatenate([_in_clip(t, spec) for t in all_times]))
    inside = (events >= spec.edge_margin) & (events <= spec.seconds - spec.edge_margin)
    gaps_ok = len(events) < 2 or np.diff(events).min() >= BURST_SECONDS
    return len(events) > 0 and bool(inside.all()) and gaps_ok


def _height(t: np.ndarray, impacts: np.ndarray, gravity: float) -> np.ndarray:
    """Height of the object's bottom above the floor (px) at times ``t``: a free-fall parabola between impacts."""
    k = np.searchsorted(impacts, t, side="right") - 1
    a, b = impacts[k], impacts[k + 1]
    return 0.5 * gravity * (t - a) * (b - t)


def _sdf(shape: str, px: torch.Tensor, py: torch.Tensor, r: float) -> torch.Tensor:
    """Signed distance (px, negative inside) of a shape of half-extent ``r`` centred on the origin."""
    if shape == "ball":
        return torch.sqrt(px**2 + py**2) - r
    if shape == "square":
        return torch.maximum(px.abs(), py.abs()) - 0.85 * r
    # Isosceles triangle standing on its base: apex (0, -r), base corners (+-r, r); max of three half-planes.
    s5 = math.sqrt(5.0)
    return torch.maximum(py - r, torch.maximum((-2 * px - py - r) / s5, (2 * px - py - r) / s5))


def _bottom_offset(shape: str, r: float) -> float:
    return 0.85 * r if shape == "square" else r


def _render(spec: SyntheticSpec, floor: str, objects: list[dict], centres: list[np.ndarray]) -> torch.Tensor:
    """Frames (T, H, W, 3): backdrop + floor band, then each object composited with 1-px anti-aliased edges."""
    h = spec.size
    ys = torch.arange(h, dtype=torch.float64) + 0.5
    xs = torch.arange(h, dtype=torch.float64) + 0.5
    floor_rgb = torch.tensor(FLOORS[floor], dtype=torch.float64)
    background = torch.where((ys >= spec.floor_y)[:, None, None], floor_rgb, floor_rgb * BACKDROP_SHADE)
    frames = background.expand(spec.num_frames, h, h, 3).clone()
    for obj, centre in zip(objects, centres, strict=True):
        c = torch.from_numpy(centre)  # (T, 2) x, y
        px = xs[None, None, :] - c[:, 0, None, None]
        py = ys[None, :, None] - c[:, 1, None, None]
        cover = (0.5 - _sdf(obj["shape"], px, py, obj["size_px"] / 2)).clamp(0.0, 1.0)[..., None]
        frames = frames * (1 - cover) + torch.tensor(COLOURS[obj["colour"]], dtype=torch.float64) * cover
    return frames.to(torch.float32).clamp(0.0, 1.0)


def _burst(sound: str, pitch: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One impact sound of BURST_SECONDS, starting at its first sample: 2 ms attack, exponential decay, end fade."""
    t = np.arange(int(BURST_SECONDS * sample_rate)) / sample_rate
    attack = np.clip(t / 0.002, 0.0, 1.0)
    fade = np.clip((BURST_SECONDS - t) / 0.03, 0.0, 1.0)
    if sound == "tone":
        wave = np.sin(2 * np.pi * pitch * t) * np.exp(-t / 0.07)
    elif sound == "chime":  # bell-like: an inharmonic upper partial
        wave = (np.sin(2 * np.pi * pitch * t) + 0.4 * np.sin(2 * np.pi * 2.76 * pitch * t)) / 1.4 * np.exp(-t / 0.09)
    else:  # knock: broadband noise, low-passed at a colour-dependent corner
        spectrum = np.fft.rfft(rng.standard_normal(len(t)))
        freqs = np.fft.rfftfreq(len(t), 1 / sample_rate)
        noise = np.fft.irfft(spectrum / np.sqrt(1 + (freqs / pitch) ** 2), n=len(t))
        wave = noise / (np.abs(noise).max() + 1e-9) * np.exp(-t / 0.03)
    return wave * attack * fade


def _caption(objects: list[dict], floor: str) -> str:
    names = " and ".join(f"a {o['colour']} {o['shape']}" for o in objects)
    verb = "bounces" if len(objects) == 1 else "bounce"
    return f"{names} {verb} on a {floor} floor"


def _place(rng, spec: SyntheticSpec, shape: str, colour: str, impacts: np.ndarray, slot: int, n_obj: int):
    """An object's attributes and its centre track (T, 2) in pixels (x, y from the top-left)."""
    size_px = float(rng.uniform(spec.min_object_px, spec.max_object_px))
    r = size_px / 2
    # Gravity is set so the highest arc of this object just fits under the top of the frame.
    headroom = spec.floor_y - size_px - 2.0
    gravity = 8 * headroom * rng.uniform(0.7, 1.0) / np.diff(impacts).max() ** 2
    # Horizontal drift that never reaches a wall, so the floor impacts are the only impacts.
    lo, hi = r + 2.0, spec.size - r - 2.0
    if n_obj == 2:  # each of two objects keeps to its half, so they never overlap
        half = spec.size / 2
        lo, hi = (lo, half - r) if slot == 0 else (half + r, hi)
    x0, x1 = rng.uniform(lo, hi, size=2)
    t = np.arange(spec.num_frames) / spec.fps
    x = x0 + (x1 - x0) * t / spec.seconds
    y = spec.floor_y - _bottom_offset(shape, r) - _height(t, impacts, gravity)
    sound = SOUND_OF_SHAPE[shape]
    attributes = {
        "shape": shape,
        "colour": colour,
        "sound": sound,
        "pitch_hz": round(BASE_PITCH_HZ[sound] * 2 ** (PITCH_STEPS[colour] / 12), 3),
        "size_px": size_px,
        "gravity_px_s2": float(gravity),
    }
    return attributes, np.stack([x, y], axis=1)


def _sound_track(rng, spec: SyntheticSpec, objects: list[dict], object_events: list[list[float]]):
    """(N,) float32 mono: each object's sound starting on the sample of each of its impacts, plus ambient noise."""
    audio = np.zeros(spec.num_samples)
    for obj, events in zip(objects, object_events, strict=True):
        for t in events:
            start = int(round(t * spec.sample_rate))
            burst = _burst(obj["sound"], obj["pitch_hz"], spec.sample_rate, rng) * rng.uniform(0.5, 0.9)
            end = min(start + len(burst), spec.num_samples)
            audio[start:end] += burst[: end - start]
    ambient = float(rng.uniform(0.002, 0.008)) if spec.ambient else 0.0
    if ambient:
        audio += ambient * rng.standard_normal(spec.num_samples)
    return torch.from_numpy(np.clip(audio, -1.0, 1.0).astype(np.float32)), ambient


def make_clip(seed: int, spec: SyntheticSpec = SyntheticSpec()) -> SyntheticClip:
    """The clip for ``seed`` (any int >= 0): a pure function of ``(seed, spec)``.

    Returns frames (T, H, W, 3) in [0, 1] with T = seconds * fps, a mono waveform (N,) with N = seconds *
    sample_rate, the caption, the sorted impact times (s) and the attributes behind them.
    """
    checks.integer(seed, "seed", 0)
    rng = np.random.default_rng([int(seed), 0x5EED])
    n_obj = 1 if spec.max_objects == 1 else int(rng.integers(1, 3))
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), size=n_obj, replace=False)]
    colours = [tuple(COLOURS)[i] for i in rng.choice(len(COLOURS), size=n_obj, replace=False)]
    floor = tuple(FLOORS)[int(rng.integers(len(FLOORS)))]
    for _ in range(1000):
        impacts = [_impact_times(rng, spec, n_obj) for _ in range(n_obj)]
        if _valid(impacts, spec):
            break
    else:  # pragma: no cover - the margins are checked in SyntheticSpec, so a valid draw comes within a few tries
        raise InputError(f"no valid impact sequence for seed {seed} and {spec}")

    placed = [_place(rng, spec, shapes[i], colours[i], impacts[i], i, n_obj) for i in range(n_obj)]
    objects = [attributes for attributes, _ in placed]
    object_events = [[float(t) for t in _in_clip(times, spec)] for times in impacts]
    frames = _render(spec, floor, objects, [track for _, track in placed])
    waveform, ambient = _sound_track(rng, spec, objects, object_events)
    attributes = {
        "seed": int(seed),
        "floor": floor,
        "objects": objects,
        "object_events": object_events,
        "ambient_level": ambient,
        "spec": asdict(spec),
    }
    events = sorted(t for ev in object_events for t in ev)
    return SyntheticClip(frames, waveform, _caption(objects, floor), events, attributes)


def write_dataset(out_dir: str | Path, seeds, spec: SyntheticSpec = SyntheticSpec()) -> list[Path]:
    """Write ``<out_dir>/<seed:06d>.mp4`` (H.264 + AAC) and a ``.json`` sidecar (caption, events, attributes) per
    seed. Returns the MP4 paths in the order of ``seeds``."""
    from ..media import AudioClip, write_mp4

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        clip = make_clip(seed, spec)
        path = out / f"{int(seed):06d}.mp4"
        write_mp4(path, clip.frames, spec.fps, AudioClip(clip.waveform[None], spec.sample_rate))
        sidecar = {"caption": clip.caption, "events": clip.events, "attributes": clip.attributes}
        write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=1))
        paths.append(path)
    return paths
