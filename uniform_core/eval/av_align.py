"""AV-Align (Seeing & Hearing, ``eval/av-align/av-align.py``, after TempoTokens), computed the way they compute it.

Audio peaks: librosa onsets (``onset_strength`` then ``onset_detect``, all defaults) of the mono audio at 22050 Hz.
Video peaks: strict local maxima of the mean Farneback optical-flow magnitude between consecutive BGR->GRAY
frames, whose first entry is duplicated so the curve has one value per frame; peak ``i`` is at ``i / fps``.
Score: the number of audio peaks with a video peak closer than ``1 / fps`` (each audio peak counted once), divided
by ``len(audio) + len(video) - hits``. A data set scores the sum of its clip scores over the number of MP4 files.

One case the original does not handle: with no peak in either modality it divides by zero. Here such a clip scores
0.0 (it shows no evidence of alignment), and it still counts in a data set's denominator, as a clip without a WAV
does in the original. librosa and OpenCV are the optional ``eval`` extra, imported on first use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import checks
from ..errors import InputError, UniFormError

logger = logging.getLogger(__name__)

AUDIO_RATE = 22050  # librosa.load's default rate
ONSET_HOP = 512  # librosa's default hop
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def _librosa():
    try:
        import librosa
    except ImportError as e:
        raise UniFormError("AV-align needs librosa: pip install uniform-av[eval]") from e
    return librosa


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise UniFormError("AV-align needs OpenCV: pip install uniform-av[eval]") from e
    return cv2


@dataclass(frozen=True)
class AVAlignResult:
    """AV-align of one clip. Peaks in seconds; ``matched`` pairs each audio peak that hit with the first video peak
    that it hit. ``onset_envelope``: librosa onset strength at ``envelope_rate`` frames per second;
    ``motion_curve``: mean flow magnitude (pixels per frame), one value per video frame at ``fps``."""

    score: float
    audio_peaks: list[float]
    video_peaks: list[float]
    matched: list[tuple[float, float]]
    onset_envelope: np.ndarray
    motion_curve: np.ndarray
    fps: float
    envelope_rate: float = AUDIO_RATE / ONSET_HOP


@dataclass(frozen=True)
class AVAlignDatasetResult:
    """AV-align of a folder: ``score`` = sum of clip scores / number of MP4 files (clips without audio count 0)."""

    score: float
    clip_scores: dict[str, float]
    missing_audio: list[str]
    num_files: int


def audio_peaks(waveform, sample_rate: int) -> tuple[list[float], np.ndarray]:
    """librosa onset times (s) and onset-strength envelope of ``waveform`` ((N,) or (C, N) float) at
    ``sample_rate``, after down-mixing and resampling to 22050 Hz as ``librosa.load`` does (soxr_hq)."""
    librosa = _librosa()
    w = waveform.detach().cpu().float().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    w = w.astype(np.float32)
    if w.ndim not in (1, 2) or w.shape[-1] == 0:
        raise InputError(f"waveform must have shape (N,) or (C, N) with N > 0; got {tuple(w.shape)}")
    checks.integer(sample_rate, "sample_rate (Hz)", 1)
    y = librosa.to_mono(w)
    if sample_rate != AUDIO_RATE:
        y = librosa.resample(y, orig_sr=int(sample_rate), target_sr=AUDIO_RATE, res_type="soxr_hq")
    return _onsets(librosa, y)


def _onsets(librosa, y: np.ndarray) -> tuple[list[float], np.ndarray]:
    env = librosa.onset.onset_strength(y=y, sr=AUDIO_RATE)
    frames = librosa.onset.onset_detect(onset_envelope=env, sr=AUDIO_RATE)
    return [float(t) for t in librosa.frames_to_time(frames, sr=AUDIO_RATE)], env


def _to_bgr_uint8(frames) -> list[np.ndarray]:
    if isinstance(frames, torch.Tensor):  # uint8 stays uint8: scaling 0..255 values by 255 would flatten motion
        frames = frames.detach().cpu()
        frames = frames if frames.dtype == torch.uint8 else frames.float()
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3:
        raise InputError(f"frames must have shape (T, H, W, 3) in [0, 1]; got {tuple(f.shape)}")
    if f.dtype != np.uint8:
        f = np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(x[..., ::-1]) for x in f]  # RGB -> BGR, what cv2 decodes


def video_peaks(frames_bgr: list[np.ndarray], fps: float) -> tuple[list[float], np.ndarray]:
    """Strict local maxima (s) of the per-frame mean Farneback flow magnitude of BGR uint8 frames, and the curve."""
    cv2 = _cv2()
    if len(frames_bgr) < 2:
        raise InputError(f"AV-align needs at least 2 video frames; got {len(frames_bgr)}")
    if not fps > 0:
        raise InputError(f"fps must be positive; got {fps!r}")
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames_bgr]

    def flow(a, b) -> float:
        fl = cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK)
        return cv2.mean(cv2.magnitude(fl[..., 0], fl[..., 1]))[0]

    curve = [flow(gray[i - 1], gray[i]) for i in range(1, len(gray))]
    curve = np.asarray([curve[0], *curve])  # the original duplicates the first pair's flow
    peaks = [i / fps for i in range(1, len(curve) - 1) if curve[i - 1] < curve[i] > curve[i + 1]]
    return peaks, curve


def _iou(a_peaks: list[float], v_peaks: list[float], fps: float) -> tuple[float, list[tuple[float, float]]]:
    matched = []
    for a in a_peaks:
        for v in v_peaks:
            if v - 1 / fps < a < v + 1 / fps:
                matched.append((a, v))
                break
    union = len(a_peaks) + len(v_peaks) - len(matched)
    return (len(matched) / union if union else 0.0), matched


def _result(a_peaks, env, v_peaks, curve, fps) -> AVAlignResult:
    score, matched = _iou(a_peaks, v_peaks, fps)
    return AVAlignResult(score, a_peaks, v_peaks, matched, env, curve, float(fps))


def av_align(frames, fps: float, waveform, sample_rate: int) -> AVAlignResult:
    """AV-align of tensors: ``frames`` (T, H, W, 3) float in [0, 1] (or uint8) RGB at ``fps``; ``waveform`` (N,)
    or (C, N) float at ``sample_rate`` Hz. Frames are quantised to uint8 as a video file would hold them."""
    a_peaks, env = audio_peaks(waveform, sample_rate)
    v_peaks, curve = video_peaks(_to_bgr_uint8(frames), fps)
    return _result(a_peaks, env, v_peaks, curve, fps)


def _resize(frames: list[np.ndarray], size: str) -> list[np.ndarray]:
    """The original's ``--size``: ``"min=N"`` scales the short side to N, ``"W:H"`` resizes to W x H."""
    cv2 = _cv2()
    h, w = frames[0].shape[:2]
    try:
        if size.startswith("min="):
            scale = int(size.split("=")[1]) / min(w, h)
            new_w, new_h = int(scale * w), int(scale * h)
        else:
            new_w, new_h = (int(x) for x in size.split(":"))
    except ValueError as e:
        raise InputError(f"size must be 'min=N' or 'W:H'; got {size!r}") from e
    if (new_w, new_h) == (w, h):
        return frames
    return [cv2.resize(f, (new_w, new_h), interpolation=cv2.INTER_LINEAR) for f in frames]


def _read_frames(path: Path) -> tuple[list[np.ndarray], float]:
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"video {str(path)!r} could not be opened by OpenCV")
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


def av_align_files(mp4_path, wav_path=None, size: str | None = None) -> AVAlignResult:
    """AV-align of a video file, with the sound of ``wav_path`` (read by ``librosa.load``, as the original does)
    or, when None, the video file's own audio track. ``size`` resizes frames as the original's ``--size``."""
    mp4 = Path(mp4_path)
    if not mp4.is_file():
        raise InputError(f"video file {str(mp4)!r} does not exist")
    frames, fps = _read_frames(mp4)
    if size is not None:
        frames = _resize(frames, size)
    v_peaks, curve = video_peaks(frames, fps)
    if wav_path is None:
        from ..media import read_audio

        audio = read_audio(mp4)
        a_peaks, env = audio_peaks(audio.waveform, audio.sample_rate)
    else:
        wav = Path(wav_path)
        if not wav.is_file():
            raise InputError(f"audio file {str(wav)!r} does not exist")
        librosa = _librosa()
        y, _ = librosa.load(str(wav), sr=AUDIO_RATE)
        a_peaks, env = _onsets(librosa, y)
    return _result(a_peaks, env, v_peaks, curve, fps)


def av_align_dataset(video_dir, wav_dir=None, size: str | None = None) -> AVAlignDatasetResult:
    """AV-align of every ``*.mp4`` in ``video_dir`` with ``<wav_dir>/<stem>.wav`` (or the file's own audio when
    ``wav_dir`` is None). As in the original, a video without its WAV is skipped but counts in the denominator."""
    vdir = Path(video_dir)
    files = sorted(vdir.glob("*.mp4"))
    if not files:
        raise InputError(f"video_dir {str(vdir)!r} holds no .mp4 files")
    scores, missing = {}, []
    for mp4 in files:
        wav = None if wav_dir is None else Path(wav_dir) / f"{mp4.stem}.wav"
        if wav is not None and not wav.is_file():
            logger.warning("AV-align: no audio %s for %s; it counts as 0", wav, mp4.name)
            missing.append(mp4.stem)
            continue
        scores[mp4.stem] = av_align_files(mp4, wav, size).score
    return AVAlignDatasetResult(sum(scores.values()) / len(files), scores, missing, len(files))


def plot_av_align(result: AVAlignResult, width: int = 640, height: int = 256) -> torch.Tensor:
    """A picture of ``result`` as an IMAGE frame (H, W, 3) float in [0, 1]: the onset envelope (orange, top) and
    the motion curve (blue, bottom) over time, each peak ticked, a green line through every matched audio peak."""
    from PIL import Image, ImageDraw

    if width < 64 or height < 64:
        raise InputError(f"plot size must be at least 64 x 64 pixels; got {width} x {height}")
    env, curve = np.asarray(result.onset_envelope, float), np.asarray(result.motion_curve, float)
    duration = max(len(env) / result.envelope_rate, len(curve) / result.fps, 1e-3)
    img = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    left, right, top = 8, width - 8, 18
    panel = (height - top - 8) // 2
    panels = (
        (top, env, result.envelope_rate, result.audio_peaks, (255, 150, 40)),
        (top + panel, curve, result.fps, result.video_peaks, (80, 160, 255)),
    )

    def x_of(t: float) -> float:
        return left + (right - left) * t / duration

    for a, _ in result.matched:
        draw.line((x_of(a), top + 2, x_of(a), top + 2 * panel - 2), fill=(90, 220, 110), width=1)
    for y0, values, rate, peaks, colour in panels:
        draw.rectangle((left, y0 + 2, right, y0 + panel - 2), outline=(60, 60, 66))
        scale = values.max() if len(values) and values.max() > 0 else 1.0
        pts = [(x_of(i / rate), y0 + panel - 4 - (panel - 8) * v / scale) for i, v in enumerate(values)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for t in peaks:
            draw.line((x_of(t), y0 + 4, x_of(t), y0 + 12), fill=colour, width=2)
    draw.text(
        (left, 3),
        f"AV-align {result.score:.3f}  audio peaks {len(result.audio_peaks)}  video peaks "
        f"{len(result.video_peaks)}  matched {len(result.matched)}  ({duration:.2f} s)",
        fill=(230, 230, 230),
    )
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
