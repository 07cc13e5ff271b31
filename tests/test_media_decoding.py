"""Decoding by presentation timestamps and at the target size: a variable-frame-rate file keeps its timing and
length on every path that reads video (read_video, the training reader, the pipeline behind the CLI, the ComfyUI
VIDEO input), and a 4K file is never held at full size."""

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from uniform_core import media
from uniform_core.bundle import random_tiny_bundle
from uniform_core.pipeline import UniFormPipeline
from uniform_core.train.data import read_training_clip

# Frame i is on screen from PTS[i] / 30 s to PTS[i + 1] / 30 s: the gaps alternate 1/30 s and 1/10 s, and the last
# frame lasts 1/30 s (what the MP4 muxer records for a last frame), so the clip lasts 61/30 s.
PTS = [4 * (i // 2) + i % 2 for i in range(31)]
VFR_SECONDS = (PTS[-1] + 1) / 30


def _shown_at(t: float) -> int:
    """The source frame whose presentation interval contains time t."""
    return max(i for i, p in enumerate(PTS) if p / 30 <= t + 1e-9)


def _frame_index(frames: torch.Tensor) -> list[int]:
    """The index a frame's brightness encodes (source frame i is 8 * i grey)."""
    return (frames.mean(dim=(1, 2, 3)) * 255 / 8).round().long().tolist()


def _write_vfr(path: Path, size=(48, 64), with_audio=False) -> Path:
    """PTS-timed grey frames whose brightness is 8 x their index, optionally with a 440 Hz tone."""
    tb = Fraction(1, 30)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=30, options={"crf": "10"})
        v.height, v.width, v.pix_fmt = size[0], size[1], "yuv420p"
        v.time_base = tb
        a = c.add_stream("aac", rate=16000, layout="mono") if with_audio else None
        for i, p in enumerate(PTS):
            frame = av.VideoFrame.from_ndarray(np.full((*size, 3), 8 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = p, tb
            c.mux(v.encode(frame))
        c.mux(v.encode())
        if a is not None:
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(round(VFR_SECONDS * 16000)) / 16000)).astype(np.float32)
            for s in range(0, tone.shape[0], 1024):
                frame = av.AudioFrame.from_ndarray(tone[None, s : s + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = 16000, s, Fraction(1, 16000)
                c.mux(a.encode(frame))
            c.mux(a.encode())
    return path


@pytest.fixture(scope="module")
def vfr_mp4(tmp_path_factory):
    return _write_vfr(tmp_path_factory.mktemp("vfr") / "vfr.mp4")


def test_variable_rate_file_read_at_its_own_rate_keeps_timing_and_length(vfr_mp4):
    clip = media.read_video(vfr_mp4)
    assert clip.fps == media.probe(vfr_mp4).fps == 30  # the nominal rate: every timestamp falls on a 1/30 s step
    assert clip.duration == pytest.approx(VFR_SECONDS, abs=1e-6)  # not 31 frames at the 15.5 fps average
    assert _frame_index(clip.frames) == [_shown_at(k / 30) for k in range(clip.num_frames)]


@pytest.mark.parametrize("fps", [17, 24, 60])
def test_variable_rate_file_resampled_by_timestamps(vfr_mp4, fps):
    clip = media.read_video(vfr_mp4, fps=fps)
    assert clip.num_frames == int(np.ceil(VFR_SECONDS * fps - 1e-6))
    assert _frame_index(clip.frames) == [_shown_at(k / fps) for k in range(clip.num_frames)]


def test_variable_rate_window_and_decode_time_resize(vfr_mp4):
    clip = media.read_video(vfr_mp4, fps=17, size=(16, 16), start=0.5, duration=1.0)
    assert clip.frames.shape == (17, 16, 16, 3)
    assert _frame_index(clip.frames) == [_shown_at(0.5 + k / 17) for k in range(17)]


def test_training_reader_takes_variable_rate_frames_by_timestamps(tmp_path):
    path = _write_vfr(tmp_path / "clip.mp4", with_audio=True)
    path.with_suffix(".txt").write_text("grey frames and a tone")
    clip = read_training_clip(path, seconds=2, size=32)
    assert clip.frames.shape == (34, 32, 32, 3) and clip.waveform.shape == (32000,)
    assert _frame_index(clip.frames) == [_shown_at(k / 17) for k in range(34)]


def test_v2a_from_a_variable_rate_file_conditions_on_the_frames_shown(tmp_path):
    path = _write_vfr(tmp_path / "vfr.mp4", size=(48, 64))
    result = UniFormPipeline(random_tiny_bundle(seed=0)).generate("v2a", video=path, steps=1, height=32, width=32)
    assert result.frames.shape == (1, 34, 32, 32, 3)  # 2 whole seconds at 17 fps, resized while decoding
    assert _frame_index(result.frames[0]) == [_shown_at(k / 17) for k in range(34)]
    assert "video resampled 30 -> 17 fps by its timestamps (35 frames)" in result.notes


def test_video_encode_node_decodes_load_videos_file_by_timestamps(vfr_mp4):
    from nodes.encode import UniFormVideoEncode
    from nodes.managed import Component

    def whole_file_at_full_size():
        raise AssertionError("a file-backed VIDEO must not be decoded whole by ComfyUI's get_components()")

    loaded = SimpleNamespace(get_components=whole_file_at_full_size, get_stream_source=lambda: str(vfr_mp4))
    vae = Component(random_tiny_bundle(seed=0).video_vae, "video_vae", offload="auto")
    _, frames, fps = UniFormVideoEncode().run(
        video_vae=vae, fps=17.0, duration=2, width=32, height=32, images=None, video=loaded
    )
    assert fps == 17 and frames.shape == (34, 32, 32, 3)
    assert _frame_index(frames) == [_shown_at(k / 17) for k in range(34)]


# ---- 4K input: resized while decoding ------------------------------------------------------------------------

UHD = (2160, 3840)


@pytest.fixture(scope="module")
def uhd_mp4(tmp_path_factory):
    """2 s of 3840x2160 at 17 fps: a diagonal ramp that moves, and a brightness that tells the frame."""
    path = tmp_path_factory.mktemp("uhd") / "uhd.mp4"
    h, w = UHD
    ramp = (np.add.outer(np.arange(h), np.arange(w)) // 16).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=17, options={"preset": "ultrafast", "crf": "18"})
        s.height, s.width, s.pix_fmt = h, w, "yuv420p"
        for i in range(34):
            yuv = np.full((h * 3 // 2, w), 128, np.uint8)  # the Y plane above the two chroma planes
            yuv[:h] = ramp + np.uint8(5 * i)
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 17)
            c.mux(s.encode(frame))
        c.mux(s.encode())
    return path


_PEAK_MEMORY = """
import json, resource, sys
from uniform_core import media
from uniform_core.bundle import random_tiny_bundle
from uniform_core.pipeline import UniFormPipeline
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = peak_mb()
clip = media.read_video(sys.argv[1], fps=17, size=(256, 256), with_audio=False)
print(json.dumps({"shape": list(clip.frames.shape), "base": base, "peak": peak_mb()}))
"""


def test_4k_input_is_resized_while_decoding(uhd_mp4):
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY, str(uhd_mp4)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        # FFmpeg decodes on one thread per CPU (+1), each with frames of its own: two CPUs, as on a laptop or CI
        preexec_fn=lambda: os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2]),
    )
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["shape"] == [34, 256, 256, 3]
    full_clip_mb = 34 * UHD[0] * UHD[1] * 3 / 2**20  # the clip at full size, even as uint8: 808 MB
    # the rest is the decoder's own reference frames, the same for a clip of any length
    assert got["peak"] - got["base"] < 0.4 * full_clip_mb, got


def test_a_4k_v2a_input_runs_at_the_bundles_size_on_every_path(uhd_mp4, pipe):
    """Without a height/width, a 3840x2160 condition is read at the bundle's pixel count (64x64 for the tiny
    bundle) at its own 16:9 aspect, by the one-call and the long-clip path alike."""
    from uniform_core.long import generate_long

    assert (pipe.bundle.height, pipe.bundle.width) == (64, 64)
    short = pipe.generate("v2a", video=uhd_mp4, steps=1)
    long = generate_long(pipe, "v2a", video=uhd_mp4, steps=1, window=2, overlap=1)
    for result in (short, long):
        assert result.frames.shape == (1, 34, 48, 80, 3)


def test_decode_time_resize_matches_resizing_after_decoding(uhd_mp4):
    small = media.read_video(uhd_mp4, fps=17, size=(256, 256), duration=3 / 17, with_audio=False)
    full = media.read_video(uhd_mp4, fps=17, duration=3 / 17, with_audio=False)
    assert full.frames.shape == (3, *UHD, 3)
    after = media.resize_center_crop(full.frames, 256, 256)
    assert small.frames.shape == after.shape == (3, 256, 256, 3)
    assert (small.frames - after).abs().mean() < 0.01
    assert (small.frames.mean(dim=(1, 2, 3)) - after.mean(dim=(1, 2, 3))).abs().max() < 0.005


def test_read_video_notes_say_what_it_changed(vfr_mp4):
    assert media.read_video(vfr_mp4).notes == []
    notes = media.read_video(vfr_mp4, fps=17, size=(32, 32)).notes
    assert notes == [
        "video resampled 30 -> 17 fps by its timestamps (35 frames)",
        "video resized from 64x48 to 32x32 while decoding (short side scaled, center-cropped)",
    ]


def test_comfy_video_backed_by_a_file_is_decoded_by_timestamps(vfr_mp4):
    def average_rate_frames():  # what ComfyUI's own decoding hands over: every frame, one average rate
        with av.open(str(vfr_mp4)) as c:
            frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) / 255 for f in c.decode(video=0)]
            return SimpleNamespace(images=torch.stack(frames), frame_rate=c.streams.video[0].average_rate, audio=None)

    loaded = SimpleNamespace(get_components=average_rate_frames, get_stream_source=lambda: str(vfr_mp4))
    clip = media.from_comfy_video(loaded, fps=17, size=(16, 16))
    assert clip.frames.shape == (35, 16, 16, 3)
    assert _frame_index(clip.frames) == [_shown_at(k / 17) for k in range(35)]
    in_memory = media.from_comfy_video(SimpleNamespace(get_components=average_rate_frames), fps=17, size=(16, 16))
    assert in_memory.frames.shape[1:] == (16, 16, 3) and in_memory.fps == 17  # only the average rate to go by
