"""Media I/O on real files written here with PyAV: round trips, time-correct fps resampling, audio from files and
videos, conforming with notes, and clear errors for bad inputs."""

import math
import struct
import wave
from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from uniform_core import media
from uniform_core.errors import InputError


def _index_video(path, fps=30, n=60, size=(48, 64), pts=None, time_base=None):
    """Grey frames whose brightness encodes their index (4 * i), so a decoded frame tells which source frame it is."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": "10"})
        s.height, s.width, s.pix_fmt = size[0], size[1], "yuv420p"
        if time_base is not None:
            s.time_base = time_base
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((*size, 3), 4 * i, np.uint8), format="rgb24")
            f.pts = i if pts is None else pts[i]
            f.time_base = Fraction(1, fps) if time_base is None else time_base
            c.mux(s.encode(f))
        c.mux(s.encode())
    return path


def _frame_index(frames):
    return (frames.mean(dim=(1, 2, 3)) * 255 / 4).round().long().tolist()


def _wav(path, waveform, rate):
    """16-bit PCM WAV of a (C, N) float waveform."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=rate)
        s.layout = "mono" if waveform.shape[0] == 1 else "stereo"
        pcm = (waveform.T.reshape(1, -1) * 32767).round().astype(np.int16)
        f = av.AudioFrame.from_ndarray(pcm, format="s16", layout=s.layout.name)
        f.sample_rate, f.pts = rate, 0
        c.mux(s.encode(f))
        c.mux(s.encode())
    return path


def _tone(freq, seconds, rate, channels=1):
    t = np.arange(round(seconds * rate)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]).astype(np.float32)


@pytest.fixture(scope="module")
def av_mp4(tmp_path_factory):
    """2 s, 17 fps, 64x48 MP4 with stereo 44.1 kHz audio, written by write_mp4."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    t = torch.linspace(0, 1, 34).view(34, 1, 1)
    frames = torch.stack([x.expand(34, -1, -1), y.expand(34, -1, -1), t.expand(-1, 48, 64)], dim=-1)  # smooth
    audio = media.AudioClip(torch.from_numpy(_tone(440, 2.0, 44100, channels=2)), 44100)
    path = media.write_mp4(tmp_path_factory.mktemp("mp4") / "clip.mp4", frames, 17, audio)
    return path, frames, audio


# ---- round trips ---------------------------------------------------------------------------------------------


def test_mp4_round_trip_keeps_frames_fps_duration_and_audio_length(av_mp4):
    path, frames, audio = av_mp4
    info = media.probe(path)
    assert (info.has_video, info.has_audio, info.width, info.height) == (True, True, 64, 48)
    assert info.num_frames == 34 and info.fps == 17 and info.sample_rate == 44100 and info.channels == 2
    assert info.duration == pytest.approx(2.0, abs=1e-3)
    assert info.audio_samples == 88200

    clip = media.read_video(path)
    assert clip.num_frames == 34 and clip.fps == 17 and clip.duration == pytest.approx(2.0)
    assert clip.frames.dtype == torch.float32 and clip.frames.shape == (34, 48, 64, 3)
    assert (clip.frames - frames).abs().mean() < 0.02  # H.264 + yuv420p are lossy, but not on smooth pictures
    assert clip.audio.sample_rate == 44100 and clip.audio.waveform.shape[0] == 2
    assert abs(clip.audio.waveform.shape[1] - 88200) <= 1024
    lag = audio.waveform[:, 2048:80000]
    got = clip.audio.waveform[:, 2048:80000]
    assert torch.nn.functional.cosine_similarity(lag.flatten(), got.flatten(), dim=0) > 0.95


def test_write_mp4_makes_audio_exactly_as_long_as_video(tmp_path):
    frames = (torch.rand(20, 32, 32, 3) * 255).to(torch.uint8)  # uint8 is accepted too
    # 22 kHz is not an AAC rate and 3 channels are down-mixed; 0.5 s of audio is padded to 20 / 10 fps = 2 s
    audio = media.AudioClip(torch.from_numpy(_tone(300, 0.5, 22000, channels=3)), 22000)
    path = media.write_mp4(tmp_path / "sub" / "x.mp4", frames, 10, audio)
    info = media.probe(path)
    assert info.sample_rate == 22050 and info.channels == 1
    assert info.audio_samples == 2 * 22050
    assert info.num_frames == 20 and info.duration == pytest.approx(2.0, abs=1e-3)
    assert [p.name for p in path.parent.iterdir()] == ["x.mp4"]  # no temporary file left behind


def test_write_mp4_without_audio_and_fractional_fps(tmp_path):
    path = media.write_mp4(tmp_path / "v.mp4", torch.rand(10, 32, 32, 3), 30000 / 1001)
    info = media.probe(path)
    assert not info.has_audio and info.num_frames == 10 and info.fps == pytest.approx(29.97, abs=1e-2)
    clip = media.read_video(path)
    assert clip.audio is None and clip.num_frames == 10
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # index first, so browsers start playing before the download ends


# ---- time-correct fps resampling -----------------------------------------------------------------------------


def test_read_video_30_to_17_fps_picks_frame_on_screen_at_k_over_17(tmp_path):
    path = _index_video(tmp_path / "idx.mp4", fps=30, n=60)
    clip = media.read_video(path, fps=17)
    assert clip.fps == 17 and clip.num_frames == 34  # 2 s
    assert _frame_index(clip.frames) == [math.floor(k * 30 / 17) for k in range(34)]


def test_read_video_window_and_upsampling(tmp_path):
    path = _index_video(tmp_path / "idx.mp4", fps=30, n=60)
    clip = media.read_video(path, fps=17, start=0.5, duration=1.0)
    assert _frame_index(clip.frames) == [math.floor((0.5 + k / 17) * 30 + 1e-9) for k in range(17)]
    clip = media.read_video(path, fps=60, duration=0.5)
    assert _frame_index(clip.frames) == [k // 2 for k in range(30)]
    native = media.read_video(path, start=1.5)
    assert native.fps == 30 and _frame_index(native.frames) == list(range(45, 60))


def test_read_video_uses_real_timestamps_of_variable_rate_video(tmp_path):
    # frames at 0, 100, 150, 400, 450, ... ms: the gaps differ, so only real pts give the right answer
    pts = [0, 100, 150, 400, 450, 500, 700, 750, 800, 990]
    path = _index_video(tmp_path / "vfr.mp4", fps=20, n=10, pts=pts, time_base=Fraction(1, 1000))
    clip = media.read_video(path, fps=10)
    expected = [max(i for i, p in enumerate(pts) if p <= 100 * k) for k in range(clip.num_frames)]
    assert _frame_index(clip.frames) == expected
    assert clip.num_frames >= 10


def test_resample_fps_nearest_frame_in_time():
    frames = torch.arange(30).float().view(30, 1, 1, 1).expand(30, 2, 2, 3) / 100
    out = media.resample_fps(frames, 30, 17)
    assert out.shape[0] == 17
    assert (out[:, 0, 0, 0] * 100).round().long().tolist() == [math.floor(k * 30 / 17) for k in range(17)]
    assert media.resample_fps(frames, 10, 20).shape[0] == 60
    assert media.resample_fps(frames, 24, 24) is frames


def test_resize_center_crop_keeps_aspect_and_middle():
    frames = torch.zeros(2, 48, 96, 3)
    frames[:, :, 16:80] = 1.0  # bright middle of a 2:1 picture
    out = media.resize_center_crop(frames, 24, 24)  # short side 48 -> 24, width 96 -> 48, keep the middle 24
    assert out.shape == (2, 24, 24, 3)
    assert out.min() > 0.99
    assert media.resize_center_crop(frames, 48, 96).equal(frames)


def test_read_video_turns_rotated_phone_video_upright(tmp_path):
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        picture = np.zeros((32, 64, 3), np.uint8)
        picture[:, :32] = 255  # left half white
        for i in range(3):
            f = av.VideoFrame.from_ndarray(picture, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 10)
            c.mux(s.encode(f))
        c.mux(s.encode())
    data = bytearray(path.read_bytes())
    matrix = data.find(b"tkhd") + 4 + 40  # version-0 track header: the display matrix follows 40 bytes of fields
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)  # 90 deg clockwise
    path.write_bytes(data)
    clip = media.read_video(path)
    assert clip.frames.shape == (3, 64, 32, 3)  # portrait, as shown by players
    assert clip.frames[:, :28].min() > 0.9 and clip.frames[:, 36:].max() < 0.1  # the left half is now on top
    small = media.read_video(path, size=(32, 16))  # resized as shown: 32x64 -> 16x32
    assert small.frames.shape == (3, 32, 16, 3)
    assert small.frames[:, :14].min() > 0.9 and small.frames[:, 18:].max() < 0.1


def test_read_video_size_resizes_short_side_and_crops(tmp_path):
    path = _index_video(tmp_path / "idx.mp4", fps=30, n=40)
    clip = media.read_video(path, fps=17, size=(32, 32), with_audio=False)
    assert clip.frames.shape == (23, 32, 32, 3)
    assert _frame_index(clip.frames) == [math.floor(k * 30 / 17) for k in range(23)]
    ramp = torch.linspace(0, 1, 96).view(1, 1, 96, 1).expand(4, 48, 96, 3)  # 2:1, brightness grows to the right
    path = media.write_mp4(tmp_path / "ramp.mp4", ramp, 10)
    got = media.read_video(path, size=(24, 24)).frames[..., 0].mean(dim=(0, 1))  # column profile
    want = media.resize_center_crop(ramp, 24, 24)[..., 0].mean(dim=(0, 1))  # middle half: 0.25 .. 0.75
    assert (got - want).abs().max() < 0.03 and want[0] == pytest.approx(0.26, abs=0.02)


# ---- audio ---------------------------------------------------------------------------------------------------


def test_read_audio_wav_stereo_mono_and_resampling(tmp_path):
    tone = _tone(220, 1.0, 44100, channels=2)
    path = _wav(tmp_path / "a.wav", tone, 44100)
    clip = media.read_audio(path)
    assert clip.sample_rate == 44100 and clip.waveform.shape == (2, 44100) and clip.duration == pytest.approx(1.0)
    assert torch.allclose(clip.waveform, torch.from_numpy(tone), atol=1e-4)
    mono = media.read_audio(path, sample_rate=16000, mono=True)
    assert mono.sample_rate == 16000 and mono.waveform.shape == (1, 16000)
    direct = media.resample_audio(media.to_mono(torch.from_numpy(tone)), 44100, 16000)
    assert torch.allclose(mono.waveform, direct, atol=1e-4)
    part = media.read_audio(path, start=0.25, duration=0.5)
    assert part.waveform.shape == (2, 22050)
    assert torch.allclose(part.waveform, torch.from_numpy(tone[:, 11025:33075]), atol=1e-4)


def test_read_audio_seeks_to_a_late_window(tmp_path):
    tone = _tone(3, 3.0, 8000)  # slow ramp-like sine: every sample position has a distinct value
    path = _wav(tmp_path / "long.wav", tone, 8000)
    part = media.read_audio(path, start=2.25, duration=0.5)
    assert part.waveform.shape == (1, 4000)
    assert torch.allclose(part.waveform, torch.from_numpy(tone[:, 18000:22000]), atol=1e-4)
    assert media.read_audio(path, start=2.5).waveform.shape == (1, 4000)  # to the end


def test_to_mono_and_resample_lengths():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, -0.5]])
    assert torch.allclose(media.to_mono(x), torch.tensor([[0.5, 0.25]]))
    y = media.resample_audio(torch.randn(2, 44100) * 0.1, 44100, 16000)
    assert y.shape == (2, 16000)


def test_read_audio_from_mp4_and_other_codecs(av_mp4, tmp_path):
    path, _, audio = av_mp4
    clip = media.read_audio(path, mono=True)
    assert clip.waveform.shape[0] == 1 and abs(clip.waveform.shape[1] - 88200) <= 1024
    flac = tmp_path / "a.flac"
    with av.open(str(flac), "w") as c:
        s = c.add_stream("flac", rate=16000)
        s.layout = "mono"
        f = av.AudioFrame.from_ndarray((_tone(500, 0.5, 16000) * 32767).astype(np.int16), format="s16", layout="mono")
        f.sample_rate, f.pts = 16000, 0
        c.mux(s.encode(f))
        c.mux(s.encode())
    assert media.read_audio(flac).waveform.shape == (1, 8000)


def test_read_video_places_late_audio_on_the_video_timeline(tmp_path):
    path = tmp_path / "late.mp4"
    tone = _tone(250, 1.0, 16000)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=10)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        for i in range(20):  # 2 s of video from 0 s
            f = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 10)
            c.mux(v.encode(f))
        c.mux(v.encode())
        for s in range(0, 16000, 1024):  # 1 s of sound from 0.5 s
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, s : s + 1024]), format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = 16000, 8000 + s, Fraction(1, 16000)
            c.mux(a.encode(f))
        c.mux(a.encode())
    clip = media.read_video(path)
    wave = clip.audio.waveform[0]
    assert clip.num_frames == 20 and wave[:7800].abs().max() < 0.02  # silence until the sound starts
    assert wave[8100:9000].abs().max() > 0.3
    alone = media.read_audio(path).waveform[0]  # alone, it starts with the sound (after at most one AAC frame)
    assert alone[:2048].abs().max() > 0.3 and abs(alone.shape[0] - 16000) <= 1024


def test_read_video_audio_follows_the_video_window(av_mp4):
    path, _, audio = av_mp4
    for start in (0.5, 1.25):  # the later start seeks in both streams
        clip = media.read_video(path, fps=17, start=start, duration=0.5)
        assert clip.num_frames == 9 and clip.audio.waveform.shape == (2, round(9 / 17 * 44100))
        first = round(start * 44100)
        ref = audio.waveform[:, first : first + clip.audio.waveform.shape[1]]
        got = clip.audio.waveform
        assert torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0) > 0.95


# ---- conforming ----------------------------------------------------------------------------------------------


def test_conform_video_notes_every_change():
    frames = torch.arange(90).float().view(90, 1, 1, 1).expand(90, 48, 64, 3) / 100  # 3 s at 30 fps
    out, notes = media.conform_video(frames, 30, 17, 34, 32, 32)
    assert out.shape == (34, 32, 32, 3) and out.dtype == torch.float32
    assert "video resampled 30 -> 17 fps (90 -> 51 frames)" in notes
    assert "video resized from 64x48 to 32x32 (short side scaled, center-cropped)" in notes
    assert "video trimmed from 3 s to 2 s (51 -> 34 frames)" in notes
    short, notes = media.conform_video(frames[:17], 17, 17, 34, 48, 64)
    assert notes == ["video padded from 1 s to 2 s by holding the last frame for 17 frames"]
    assert short[16:].equal(frames[16:17].expand(18, -1, -1, -1))
    same, notes = media.conform_video(frames[:34], 17, 17, 34, 48, 64)
    assert notes == [] and same.equal(frames[:34])


def test_conform_audio_notes_every_change():
    stereo = torch.from_numpy(_tone(200, 1.5, 44100, channels=2))
    mono, notes = media.conform_audio(stereo, 44100, 16000, 32000)
    assert mono.shape == (32000,) and mono.dtype == torch.float32
    assert notes == [
        "audio down-mixed from 2 channels to mono",
        "audio resampled 44100 -> 16000 Hz",
        "audio padded from 1.5 s to 2 s with 0.5 s of silence",
    ]
    assert mono[24000:].abs().max() == 0 and mono[:24000].abs().max() > 0.1
    cut, notes = media.conform_audio(torch.randn(1, 16000 * 5) * 0.1, 16000, 16000, 16000 * 4)
    assert notes == ["audio trimmed from 5 s to 4 s"] and cut.shape == (64000,)


# ---- ComfyUI interop -----------------------------------------------------------------------------------------


def test_comfy_audio_round_trip_and_checks():
    clip = media.AudioClip(torch.randn(2, 100) * 0.1, 16000)
    d = media.to_comfy_audio(clip)
    assert d["waveform"].shape == (1, 2, 100) and d["sample_rate"] == 16000
    back = media.from_comfy_audio(d)
    assert back.waveform.equal(clip.waveform) and back.sample_rate == 16000
    assert media.from_comfy_audio({"waveform": clip.waveform, "sample_rate": 8000}).waveform.shape == (2, 100)
    with pytest.raises(InputError, match="'waveform' and 'sample_rate'"):
        media.from_comfy_audio({"waveform": clip.waveform})
    with pytest.raises(InputError, match="batch of 2"):
        media.from_comfy_audio({"waveform": torch.zeros(2, 1, 100), "sample_rate": 16000})
    with pytest.raises(InputError, match=r"\(1, C, N\) or \(C, N\)"):
        media.from_comfy_audio({"waveform": torch.zeros(1, 1, 1, 100), "sample_rate": 16000})
    with pytest.raises(InputError, match="AUDIO sample_rate"):
        media.from_comfy_audio({"waveform": clip.waveform, "sample_rate": 0})


def test_from_comfy_video_duck_typed():
    audio = {"waveform": torch.zeros(1, 1, 160), "sample_rate": 16000}
    parts = SimpleNamespace(images=torch.rand(5, 16, 16, 3), frame_rate=Fraction(24000, 1001), audio=audio)
    clip = media.from_comfy_video(SimpleNamespace(get_components=lambda: parts))
    assert clip.num_frames == 5 and clip.fps == pytest.approx(23.976, abs=1e-3) and clip.audio.sample_rate == 16000
    with pytest.raises(InputError, match="get_components"):
        media.from_comfy_video(torch.rand(5, 16, 16, 3))


# ---- bad inputs ----------------------------------------------------------------------------------------------


def test_missing_empty_and_non_media_files(tmp_path):
    with pytest.raises(InputError, match="video file not found"):
        media.read_video(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        media.read_video(tmp_path / "empty.mp4")
    (tmp_path / "notes.txt").write_text("not a video at all\n" * 20)
    for fn in (media.read_video, media.read_audio, media.probe):
        with pytest.raises(InputError, match="not a media file"):
            fn(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="file path"):
        media.read_audio(42)


def test_audio_only_to_read_video_and_silent_video_to_read_audio(tmp_path):
    wav = _wav(tmp_path / "a.wav", _tone(220, 0.2, 16000), 16000)
    with pytest.raises(InputError, match="has no video stream \\(audio only\\)"):
        media.read_video(wav)
    silent = _index_video(tmp_path / "v.mp4", n=4)
    with pytest.raises(InputError, match="has no audio stream"):
        media.read_audio(silent)


def test_zero_length_audio(tmp_path):
    with wave.open(str(tmp_path / "z.wav"), "wb") as w:  # a valid WAV header with no samples
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    with pytest.raises(InputError, match="zero-length"):
        media.read_audio(tmp_path / "z.wav")
    with pytest.raises(InputError, match="zero-length"):
        media.conform_audio(torch.zeros(1, 0), 16000, 16000, 16000)
    with pytest.raises(InputError, match="zero-length"):
        media.write_mp4(tmp_path / "z.mp4", torch.rand(2, 16, 16, 3), 17, media.AudioClip(torch.zeros(1, 0), 16000))


def test_nan_and_inf_waveforms(tmp_path):
    bad = torch.zeros(1, 1600)
    bad[0, 7] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        media.conform_audio(bad, 16000, 16000, 1600)
    with pytest.raises(InputError, match="NaN"):
        media.write_mp4(tmp_path / "n.mp4", torch.rand(2, 16, 16, 3), 17, media.AudioClip(bad, 16000))
    with pytest.raises(InputError, match="NaN"):
        media.from_comfy_audio({"waveform": bad.unsqueeze(0) * float("inf"), "sample_rate": 16000})
    frames = torch.rand(2, 16, 16, 3)
    frames[0, 0, 0, 0] = float("inf")
    with pytest.raises(InputError, match="NaN or infinite"):
        media.write_mp4(tmp_path / "f.mp4", frames, 17)
    assert not (tmp_path / "n.mp4").exists() and not (tmp_path / "f.mp4").exists()


def test_one_frame_video_where_two_are_needed(tmp_path):
    with pytest.raises(InputError, match="1 frame\\(s\\); at least 2"):
        media.conform_video(torch.rand(1, 16, 16, 3), 17, 17, 17, 16, 16)
    out, _ = media.conform_video(torch.rand(1, 16, 16, 3), 17, 17, 17, 16, 16, min_frames=1)
    assert out.shape[0] == 17


def test_odd_sizes_and_bad_fps(tmp_path):
    with pytest.raises(InputError, match="65x48"):
        media.write_mp4(tmp_path / "o.mp4", torch.rand(2, 48, 65, 3), 17)
    with pytest.raises(InputError, match="32x47"):
        media.write_mp4(tmp_path / "o.mp4", torch.rand(2, 47, 32, 3), 17)
    with pytest.raises(InputError, match="crf"):
        media.write_mp4(tmp_path / "o.mp4", torch.rand(2, 16, 16, 3), 17, crf=99)
    for fps in (0, -5, float("nan")):
        with pytest.raises(InputError, match="fps"):
            media.write_mp4(tmp_path / "o.mp4", torch.rand(2, 16, 16, 3), fps)
    with pytest.raises(InputError, match="fps"):
        media.conform_video(torch.rand(4, 16, 16, 3), 0, 17, 17, 16, 16)
    with pytest.raises(InputError, match="to_fps"):
        media.resample_fps(torch.rand(4, 16, 16, 3), 30, -1)
    path = _index_video(tmp_path / "v.mp4", n=4)
    with pytest.raises(InputError, match="fps"):
        media.read_video(path, fps=0)
    assert not (tmp_path / "o.mp4").exists()


def test_bad_tensors_and_arguments(tmp_path):
    with pytest.raises(InputError, match=r"\(T, H, W, 3\)"):
        media.write_mp4(tmp_path / "b.mp4", torch.rand(16, 16, 3), 17)
    with pytest.raises(InputError, match=r"\(channels, samples\)"):
        media.AudioClip(torch.zeros(1, 1, 10), 16000)
    with pytest.raises(InputError, match="sample_rate"):
        media.AudioClip(torch.zeros(1, 10), 0)
    with pytest.raises(InputError, match="size"):
        media.read_video(_index_video(tmp_path / "v.mp4", n=4), size=(32,))
    with pytest.raises(InputError, match="start"):
        media.read_audio(_wav(tmp_path / "a.wav", _tone(220, 0.2, 16000), 16000), start=-1)
    with pytest.raises(InputError, match="past the end|no frames"):
        media.read_video(tmp_path / "v.mp4", start=10)
