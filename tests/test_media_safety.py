"""What media files the project writes and how it treats damaged ones: outputs appear whole with the user's umask,
the same frames give the same bytes in any process, and a file cut short is reported as cut short."""

import os
import stat
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from uniform_core import media
from uniform_core.errors import InputError

# ---- how files are written -----------------------------------------------------------------------------------


def test_written_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = media.write_mp4(tmp_path / "u.mp4", torch.rand(2, 16, 16, 3), 17)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


_WRITE_SAME_CLIP = """
import sys, torch
from uniform_core import media

def write(path):
    g = torch.Generator().manual_seed(7)
    y, x = torch.meshgrid(torch.linspace(0, 1, 256), torch.linspace(0, 1, 256), indexing="ij")
    t = torch.linspace(0, 1, 17).view(17, 1, 1)
    frames = torch.stack([(x + t) % 1, (y + 2 * t) % 1, (x * y + t) % 1], -1) * 0.8
    frames += torch.rand(17, 256, 256, 3, generator=g) * 0.2
    audio = media.AudioClip(torch.rand(2, 22050, generator=g) * 0.2 - 0.1, 22050)
    media.write_mp4(path, frames, 17, audio, metadata={"prompt": "{}"})

if __name__ == "__main__":
    write(sys.argv[1])
"""


def test_write_mp4_gives_the_same_bytes_in_one_process_and_across_processes(tmp_path):
    paths = [tmp_path / f"same{i}.mp4" for i in range(3)]
    script = {}
    exec(compile(_WRITE_SAME_CLIP, "write_same_clip", "exec"), script)
    script["write"](paths[0])
    script["write"](paths[1])
    cpus = sorted(os.sched_getaffinity(0))
    # one CPU for the child: x264 on "auto" threads (2 here for 256 px on 2 CPUs, 1 on one) writes other bytes
    subprocess.run(
        [sys.executable, "-c", _WRITE_SAME_CLIP, str(paths[2])],
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        preexec_fn=lambda: os.sched_setaffinity(0, cpus[:1]),
    )
    data = [p.read_bytes() for p in paths]
    assert data[0] == data[1] == data[2]


# ---- files cut short ----------------------------------------------------------------------------------------


def _tone_wav(path: Path, seconds: float, rate=16000) -> Path:
    t = np.arange(round(seconds * rate)) / rate
    pcm = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[None]
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        c.mux(s.encode(frame))
        c.mux(s.encode())
    return path


def _cut(path: Path, keep: int) -> Path:
    cut = path.with_name(f"cut-{path.name}")
    cut.write_bytes(path.read_bytes()[:keep])
    return cut


def test_wav_cut_in_half_reports_the_real_length_and_the_cut(tmp_path, caplog):
    full = _tone_wav(tmp_path / "tone.wav", 2.0)
    half = _cut(full, full.stat().st_size // 2)
    clip = media.read_audio(half)
    assert clip.duration == pytest.approx(1.0, abs=0.01)
    assert len(clip.notes) == 1 and "truncated" in clip.notes[0] and str(half) in clip.notes[0]
    assert "says 2 s" in clip.notes[0] and f"holds {clip.duration:.3f} s" in clip.notes[0]
    assert "truncated" in caplog.text
    assert media.read_audio(full).notes == []
    # the conformed length then says what it really pads: not "1 s to 1 s"
    _, notes = media.conform_audio(clip.waveform, clip.sample_rate, 16000, 16000)
    assert notes == [f"audio padded from {clip.duration:.3f} s to 1 s with {1 - clip.duration:.3f} s of silence"]


def test_wav_cut_before_its_first_sample_is_an_error_naming_it(tmp_path):
    full = _tone_wav(tmp_path / "tone.wav", 2.0)
    data = full.read_bytes()
    header_end = data.index(b"data") + 8
    with pytest.raises(
        InputError, match=r"tone\.wav' is truncated: its header says 2 s of sound, but the file holds none"
    ):
        media.read_audio(_cut(full, header_end))
    with pytest.raises(InputError, match=r"cut-tone\.wav"):
        media.read_audio(_cut(full, 20))  # not even a whole header


def test_mp4_cut_in_half_reports_the_real_length_and_the_cut(tmp_path):
    frames = torch.linspace(0, 1, 34).view(34, 1, 1, 1).expand(34, 32, 32, 3).contiguous()
    audio = media.AudioClip(torch.sin(torch.arange(32000) / 16000 * 2 * torch.pi * 440).view(1, -1) * 0.3, 16000)
    full = media.write_mp4(tmp_path / "clip.mp4", frames, 17, audio)
    half = _cut(full, full.stat().st_size // 2)
    clip = media.read_video(half)
    assert 0.2 < clip.duration < 1.8
    assert len(clip.notes) == 1 and str(half) in clip.notes[0]
    assert "truncated: its header says 2 s" in clip.notes[0] and f"read {round(clip.duration, 3):g} s" in clip.notes[0]
    sound = media.read_audio(half)
    assert sound.duration < 1.8 and "truncated" in sound.notes[0]
    assert media.read_video(full).notes == [] and media.read_audio(full).notes == []
    with pytest.raises(InputError, match=r"cut-clip\.mp4"):
        media.read_video(_cut(full, 200))  # the header alone: no frame to read
