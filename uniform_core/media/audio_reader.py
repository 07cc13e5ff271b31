"""Decoding the sound of audio and video files to float waveforms."""

from __future__ import annotations

import math
import os
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .clips import AudioClip
from .conform import resample_audio, to_mono
from .probe import _open, _stream_origin
from .validation import _check_file, _check_rate, _check_window

_SAMPLE_SCALE = {"s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63, "flt": 1.0, "dbl": 1.0}


def read_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    mono: bool = False,
    start: float = 0.0,
    duration: float | None = None,
) -> AudioClip:
    """Decode the first audio stream of ``path`` (an audio file, or a video file's sound) to (C, N) float32 in
    [-1, 1]. ``sample_rate`` resamples (None keeps the file's rate); ``mono`` averages the channels;
    ``start`` / ``duration`` (seconds) pick a window."""
    p = _check_file(path, "audio")
    start, duration = _check_window(start, duration)
    if sample_rate is not None:
        sample_rate = _check_rate(sample_rate, "sample_rate")
    clip = _read_audio_file(p, start, duration, None)
    waveform = clip.waveform
    if mono:
        waveform = to_mono(waveform)
    if sample_rate is not None and sample_rate != clip.sample_rate:
        waveform = resample_audio(waveform, clip.sample_rate, sample_rate)
    return AudioClip(waveform, sample_rate or clip.sample_rate)


def _read_audio_file(p: Path, start: float, duration: float | None, origin: float | None) -> AudioClip:
    """Samples of ``p``'s audio from ``start`` s for ``duration`` s, with time measured from ``origin`` (the
    video's first frame when read along with a video; the audio's own first sample when None)."""
    with _open(p, "audio") as c:
        if not c.streams.audio:
            raise InputError(f"audio {str(p)!r} has no audio stream; pass a file with sound (wav, flac, mp3, m4a...)")
        stream = c.streams.audio[0]
        stream.thread_type = "AUTO"
        if origin is None:
            origin = _stream_origin(stream)
        sought = start > 1.0 and origin is not None
        if sought:
            c.seek(int((start + origin - 1.0) / stream.time_base), stream=stream, backward=True)
        chunks, first_t, rate, last_samples, have = [], None, stream.rate, 0, 0
        end = math.inf if duration is None else start + duration
        try:
            for frame in c.decode(stream):
                if first_t is None:
                    first_t = float(frame.time) if frame.time is not None else (origin or 0.0)
                    rate = frame.sample_rate
                    origin = first_t if origin is None else origin
                if first_t - origin + have / rate > end:
                    break
                chunks.append(_frame_to_float(frame))
                last_samples = frame.samples
                have += frame.samples
        except av.error.FFmpegError as e:
            raise InputError(f"audio {str(p)!r} could not be decoded ({e})") from e
        total = round(stream.duration * stream.time_base * rate) if stream.duration and rate else None
    if not chunks or sum(x.shape[1] for x in chunks) == 0:
        raise InputError(f"audio {str(p)!r} is zero-length: its audio stream has no samples")
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1))
    if not sought and total is not None and 0 < waveform.shape[1] - total <= last_samples:
        waveform = waveform[:, :total]  # drop the encoder's padding of the last frame (AAC: up to 1024 samples)
    # place the first decoded sample on the timeline, then cut the window
    offset = round((first_t - origin - start) * rate)
    if offset > 0:
        waveform = F.pad(waveform, (offset, 0))
    elif offset < 0:
        waveform = waveform[:, -offset:]
    if duration is not None:
        waveform = waveform[:, : round(duration * rate)]
    if waveform.shape[1] == 0:
        raise InputError(f"audio {str(p)!r} has no samples from start={start:g} s on")
    return AudioClip(waveform.contiguous(), rate)


def _frame_to_float(frame) -> np.ndarray:
    """(C, n) float32 in [-1, 1] from any PyAV sample format, planar or packed."""
    channels = len(frame.layout.channels)
    array = frame.to_ndarray()
    if not frame.format.is_planar:
        array = array.reshape(-1, channels).T
    name = frame.format.name.rstrip("p")
    if name == "u8":
        return (array.astype(np.float32) - 128.0) / 128.0
    if name not in _SAMPLE_SCALE:
        raise InputError(f"audio sample format {frame.format.name!r} is not supported")
    return (array.astype(np.float32) / np.float32(_SAMPLE_SCALE[name])).astype(np.float32, copy=False)
