"""Decoding the sound of audio and video files to float waveforms."""

from __future__ import annotations

import logging
import math
import os
import struct
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .clips import AudioClip
from .conform import _seconds, resample_audio, to_mono
from .in_memory import MediaBytes
from .probe import _open, _stream_origin
from .validation import _check_file, _check_rate, _check_window

logger = logging.getLogger(__name__)

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
    return AudioClip(waveform, sample_rate or clip.sample_rate, clip.notes)


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
        decoded_end = None  # seconds from origin where the samples run out; None when the window ended first
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
            else:
                decoded_end = (first_t - origin + have / rate) if first_t is not None else 0.0
        except av.error.FFmpegError as e:
            if not chunks:
                raise InputError(f"audio {str(p)!r} could not be decoded ({e})") from e
            decoded_end = first_t - origin + have / rate  # a file cut mid-packet: keep what came before the cut
            logger.info("audio %r stops decoding at %s: %s", str(p), _seconds(decoded_end), e)
        total = round(stream.duration * stream.time_base * rate) if stream.duration and rate else None
        claimed_end = _claimed_end(p, c, stream, origin or 0.0)
    notes = []
    if decoded_end is not None and claimed_end is not None and decoded_end < min(claimed_end, end) - 0.05:
        notes.append(
            f"audio {str(p)!r} is truncated: its header says {_seconds(claimed_end)} of sound, but the file holds "
            f"{_seconds(decoded_end)}"
        )
        logger.warning(notes[-1])
    if not chunks or sum(x.shape[1] for x in chunks) == 0:
        if notes:
            raise InputError(notes[0].replace(f"holds {_seconds(decoded_end)}", "holds none that can be read"))
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
    return AudioClip(waveform.contiguous(), rate, notes)


def _claimed_end(p: Path, c, stream, origin: float) -> float | None:
    """Where the file's header says its sound ends, in seconds from ``origin``; None when it does not say."""
    if c.format.name == "wav":
        return _wav_data_seconds(p)
    if stream.duration:
        return float((stream.start_time or 0) * stream.time_base) + float(stream.duration * stream.time_base) - origin
    return c.duration / av.time_base if c.duration else None


def _wav_data_seconds(p: Path) -> float | None:
    """Seconds of sound a RIFF/WAVE header says its data chunk holds. FFmpeg measures a WAV by its size on disk, so
    a file cut short would pass for a shorter complete one; the header still says how long it was."""
    if isinstance(p, MediaBytes):
        head = p.data[: 1 << 16]
    else:
        with open(p, "rb") as f:
            head = f.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk == b"fmt " and pos + 20 <= len(head):
            byte_rate = struct.unpack_from("<I", head, pos + 16)[0]  # after format tag, channels, sample rate
        if chunk == b"data":  # 0 and 0xFFFFFFFF: written by a stream that never knew its length
            return size / byte_rate if byte_rate and size not in (0, 0xFFFFFFFF) else None
        pos += 8 + size + (size & 1)
    return None


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
