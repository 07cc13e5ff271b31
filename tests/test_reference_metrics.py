"""Metrics that follow a published reference: AV-align (Seeing & Hearing), Frechet and kernel distances, KL and
Inception Score, and the feature extractors behind them (VGGish, PANNs, I3D)."""

import math

import numpy as np
import pytest
import torch

from uniform_core.errors import InputError
from uniform_core.train.synthetic import SyntheticSpec, make_clip

SR, FPS = 16000, 17


# ---- AV-align ---------------------------------------------------------------------------------------------------


def test_av_align_prefers_sync_over_a_shift_and_over_random_pairing():
    """Averaged over clips, in sync scores far above the audio delayed by 0.5 s and the audio of another clip.

    The delayed and the randomly paired audio both sit at AV-align's chance level: a hit needs |a - v| < 1/fps, so
    a 0.5 s offset of irregular impacts is as misaligned as a random pairing, and which of the two is higher
    depends on the clips drawn (measured over 30 clips: 0.18 vs 0.15, with per-12-clip means either way round)."""
    pytest.importorskip("librosa")
    pytest.importorskip("cv2")
    from uniform_core.eval.av_align import _iou, audio_peaks, av_align, video_peaks

    scores = []
    for seed in range(12):
        clip = make_clip(seed)
        shift = int(0.5 * SR)
        delayed = torch.cat([torch.zeros(shift), clip.waveform[:-shift]])
        other = make_clip(seed + 1000).waveform
        synced = av_align(clip.frames, FPS, clip.waveform, SR)
        v_peaks = synced.video_peaks
        scores.append([synced.score] + [_iou(audio_peaks(w, SR)[0], v_peaks, FPS)[0] for w in (delayed, other)])
        if seed == 0:
            assert len(synced.motion_curve) == clip.frames.shape[0]
            assert synced.motion_curve[0] == synced.motion_curve[1]  # the original's duplicated first entry
            assert (
                v_peaks
                == video_peaks(
                    [np.ascontiguousarray((f * 255).round().byte().numpy()[..., ::-1]) for f in clip.frames], FPS
                )[0]
            )
            assert all(abs(a - v) < 1 / FPS for a, v in synced.matched)
    sync, delayed, other = np.mean(scores, axis=0)
    assert sync > 2 * delayed and sync > 2 * other, scores
    assert delayed < 0.3 and other < 0.3, scores


def _beat_clip(beats, seconds: int, size: int = 64):
    """Known events on a beat: a white square that jumps between two places at each beat (still in between) and a
    10 ms-decay 880 Hz click at each beat, as (frames (T, H, W, 3) in [0, 1], waveform (N,)) at FPS and SR."""
    frames = torch.zeros(seconds * FPS, size, size, 3)
    jumps = {round(b * FPS) for b in beats}
    x = 12
    for i in range(len(frames)):
        x = (48 - x) if i in jumps else x
        frames[i, 24:40, x : x + 16] = 1.0
    waveform = torch.zeros(seconds * SR)
    t = torch.arange(int(0.05 * SR)) / SR
    click = torch.sin(2 * math.pi * 880 * t) * torch.exp(-t / 0.01)
    for b in beats:
        start = round(b * SR)
        waveform[start : start + len(click)] += click[: len(waveform) - start]
    return frames, waveform


def test_av_align_orders_sync_above_a_half_second_shift_above_random_on_a_beat():
    """On clips with a steady beat (120 BPM, each beat +-30 ms off the grid, 8 s): in sync scores 1; the audio
    delayed by 0.5 s puts each click next to the following beat, within AV-align's +-1/fps for most of them; clicks
    at random times hit only by chance. (On irregular impacts a 0.5 s delay is as bad as random pairing: the test
    above.)"""
    pytest.importorskip("librosa")
    pytest.importorskip("cv2")
    from uniform_core.eval.av_align import av_align

    rng = np.random.default_rng(1)
    grid = np.arange(0.25, 7.9, 0.5)
    for _ in range(4):
        beats = grid + rng.uniform(-0.03, 0.03, size=len(grid))
        frames, waveform = _beat_clip(beats, seconds=8)
        shift = int(0.5 * SR)
        delayed = torch.cat([torch.zeros(shift), waveform[:-shift]])
        random_clicks = _beat_clip(np.sort(rng.uniform(0.05, 7.9, size=len(grid))), seconds=8)[1]
        synced, shifted, random = (av_align(frames, FPS, w, SR) for w in (waveform, delayed, random_clicks))
        assert len(synced.video_peaks) == len(beats) and len(synced.audio_peaks) == len(beats)
        assert synced.score == 1.0 > shifted.score > 0.5 > 0.3 > random.score, (shifted.score, random.score)


def test_av_align_empty_case_and_missing_dependency(monkeypatch):
    pytest.importorskip("librosa")
    pytest.importorskip("cv2")
    from uniform_core.errors import UniFormError
    from uniform_core.eval import av_align as mod

    still = torch.full((8, 32, 32, 3), 0.5)
    result = mod.av_align(still, FPS, torch.zeros(SR), SR)
    assert (result.score, result.audio_peaks, result.video_peaks) == (0.0, [], [])
    with pytest.raises(InputError, match="2 video frames"):
        mod.av_align(still[:1], FPS, torch.zeros(SR), SR)
    monkeypatch.setitem(__import__("sys").modules, "librosa", None)
    with pytest.raises(UniFormError, match=r"pip install uniform-av\[eval\]"):
        mod.av_align(still, FPS, torch.zeros(SR), SR)


def _reference_av_align(mp4: str, wav: str) -> float:
    """The Seeing & Hearing procedure restated step by step with cv2/librosa, to pin every parameter."""
    import cv2
    import librosa

    y, sr = librosa.load(wav)
    env = librosa.onset.onset_strength(y=y, sr=sr)
    a = librosa.frames_to_time(librosa.onset.onset_detect(onset_envelope=env, sr=sr), sr=sr)
    cap = cv2.VideoCapture(mp4)
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while (ok_frame := cap.read())[0]:
        frames.append(cv2.cvtColor(ok_frame[1], cv2.COLOR_BGR2GRAY))

    def flow(p, c):
        f = cv2.calcOpticalFlowFarneback(p, c, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        return cv2.mean(cv2.magnitude(f[..., 0], f[..., 1]))[0]

    mags = [flow(frames[0], frames[1])] + [flow(frames[i - 1], frames[i]) for i in range(1, len(frames))]
    v = [i / fps for i in range(1, len(mags) - 1) if mags[i - 1] < mags[i] > mags[i + 1]]
    hits = sum(any(x - 1 / fps < t < x + 1 / fps for x in v) for t in a)
    return hits / (len(a) + len(v) - hits)


def test_av_align_files_match_the_reference_procedure(tmp_path):
    pytest.importorskip("librosa")
    cv2 = pytest.importorskip("cv2")
    soundfile = pytest.importorskip("soundfile")
    pytest.importorskip("uniform_core.media")
    from uniform_core.eval.av_align import av_align, av_align_dataset, av_align_files, video_peaks
    from uniform_core.media import read_video
    from uniform_core.train.synthetic import write_dataset

    videos, wavs = tmp_path / "videos", tmp_path / "wavs"
    paths = write_dataset(videos, [3, 4], SyntheticSpec())
    wavs.mkdir()
    soundfile.write(wavs / "000003.wav", make_clip(3).waveform.numpy(), SR)

    with_wav = av_align_files(paths[0], wavs / "000003.wav")
    assert with_wav.score == pytest.approx(_reference_av_align(str(paths[0]), str(wavs / "000003.wav")))
    # The MP4's own AAC track gives the same peaks as the WAV, and the file matches the decoded tensors.
    own = av_align_files(paths[0])
    assert own.score == pytest.approx(with_wav.score, abs=0.15)
    decoded = read_video(paths[0])
    assert av_align(decoded.frames, decoded.fps, decoded.audio.waveform, SR).video_peaks == own.video_peaks

    small = av_align_files(paths[0], wavs / "000003.wav", size="32:32")  # the original's --size
    assert len(small.motion_curve) == 34 and small.audio_peaks == with_wav.audio_peaks
    cap, frames = cv2.VideoCapture(str(paths[0])), []
    while (got := cap.read())[0]:
        frames.append(cv2.resize(got[1], (32, 32), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_allclose(small.motion_curve, video_peaks(frames, FPS)[1])
    with pytest.raises(InputError, match="size"):
        av_align_files(paths[0], size="big")

    data = av_align_dataset(videos, wavs)
    assert data.num_files == 2 and data.missing_audio == ["000004"]
    assert data.score == pytest.approx(with_wav.score / 2)  # the missing WAV still counts, as in the original
    with pytest.raises(InputError, match="no .mp4"):
        av_align_dataset(wavs)


# ---- Frechet / kernel distances ---------------------------------------------------------------------------------


def _reference_frechet(a, b):
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _reference_kernel(a, b, degree=3, gamma=None, coef0=1.0):
    gamma = 1.0 / a.shape[1] if gamma is None else gamma
    m, n = len(a), len(b)

    def k(x, y):
        return np.array([[(gamma * xi.dot(yj) + coef0) ** degree for yj in y] for xi in x])

    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    off = lambda m_: m_.sum() - np.diagonal(m_).sum()  # noqa: E731
    return off(kaa) / (m * (m - 1)) + off(kbb) / (n * (n - 1)) - 2 * kab.sum() / (m * n)


def test_frechet_and_kernel_distance_match_independent_references():
    pytest.importorskip("scipy")
    from uniform_core.eval.frechet import frechet_distance, kernel_distance

    rng = np.random.default_rng(0)
    a = rng.standard_normal((60, 8))
    b = rng.standard_normal((45, 8)) @ rng.standard_normal((8, 8)) * 0.5 + 0.3
    assert frechet_distance(a, b) == pytest.approx(_reference_frechet(a, b), rel=1e-6)
    assert frechet_distance(torch.from_numpy(a).float(), b) == pytest.approx(_reference_frechet(a, b), rel=1e-4)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert kernel_distance(a, b) == pytest.approx(_reference_kernel(a, b), rel=1e-9)
    assert kernel_distance(a, b, degree=2, gamma=0.3, coef0=0.5) == pytest.approx(
        _reference_kernel(a, b, 2, 0.3, 0.5), rel=1e-9
    )
    # Same distribution: both distances are near zero, far below a shifted one.
    c = rng.standard_normal((60, 8))
    assert abs(kernel_distance(a, c)) < 0.1 * kernel_distance(a, c + 1.0)
    assert frechet_distance(a, c) < 0.1 * frechet_distance(a, c + 1.0)
    with pytest.raises(InputError, match="same width"):
        frechet_distance(a, b[:, :4])
    with pytest.raises(InputError, match="feats_a"):
        kernel_distance(a[:1], b)


@pytest.mark.parametrize("kind, file", [("vggish", "vggish-10086976.pth"), ("i3d", "i3d_pretrained_400.pt")])
def test_missing_feature_weights_say_what_to_get(kind, file, tmp_path):
    from uniform_core.errors import CheckpointError
    from uniform_core.eval.frechet import load_feature_extractor

    with pytest.raises(CheckpointError, match=file):
        load_feature_extractor(kind, None)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_feature_extractor(kind, tmp_path / file)
    with pytest.raises(InputError, match="vggish, panns, i3d"):
        load_feature_extractor("inception", None)


def test_av_align_plot_marks_curves_and_matches():
    pytest.importorskip("librosa")
    pytest.importorskip("cv2")
    from uniform_core.eval.av_align import av_align, plot_av_align

    clip = make_clip(1)
    result = av_align(clip.frames, FPS, clip.waveform, SR)
    img = plot_av_align(result, width=400, height=200)
    assert img.shape == (200, 400, 3) and 0.0 <= img.min() and img.max() <= 1.0
    px = (img * 255).round().int()
    orange = (px[..., 0] > 200) & (px[..., 1] > 110) & (px[..., 1] < 190) & (px[..., 2] < 90)
    blue = (px[..., 2] > 200) & (px[..., 0] < 120)
    assert orange[:100].sum() > 100 and blue[100:].sum() > 100  # envelope on top, motion below
    assert result.matched
    duration = len(result.onset_envelope) / result.envelope_rate
    for a, _ in result.matched:
        x = round(8 + (400 - 16) * a / duration)
        column = px[:, max(0, x - 1) : x + 2]
        assert ((column[..., 1] > 200) & (column[..., 0] < 120)).any()  # a green line through each match
    with pytest.raises(InputError, match="plot size"):
        plot_av_align(result, width=10)


def _reference_audioset_mel_matrix():
    """AudioSet mel_features.spectrogram_to_mel_matrix(64, 257, 16000, 125, 7500), restated band by band."""

    def mel(hz):
        return 1127.0 * np.log(1.0 + hz / 700.0)

    bins = mel(np.linspace(0.0, 8000.0, 257))
    edges = np.linspace(mel(125.0), mel(7500.0), 66)
    out = np.empty((257, 64))
    for i in range(64):
        lo, c, hi = edges[i : i + 3]
        out[:, i] = np.maximum(0.0, np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)))
    out[0, :] = 0.0
    return out


def test_vggish_front_end_and_loading(tmp_path):
    from uniform_core.errors import CheckpointError
    from uniform_core.eval.frechet import frechet_distance, load_feature_extractor
    from uniform_core.eval.vggish import VGGish, log_mel_examples, mel_matrix

    np.testing.assert_allclose(mel_matrix().numpy(), _reference_audioset_mel_matrix(), atol=1e-10)
    wave = make_clip(0).waveform
    examples = log_mel_examples(wave)
    assert examples.shape == (2, 1, 96, 64)  # 2 s -> two whole 0.96 s examples
    # First frame: periodic Hann, 512-point FFT magnitude, mel, log(+0.01).
    frame = wave[:400].double().numpy() * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400))
    first = np.log(np.abs(np.fft.rfft(frame, 512)) @ _reference_audioset_mel_matrix() + 0.01)
    np.testing.assert_allclose(examples[0, 0, 0].numpy(), first, rtol=1e-5, atol=1e-5)

    torch.manual_seed(0)
    model = VGGish()
    path = tmp_path / "vggish-10086976.pth"
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)  # torchvggish's keys; half to save disk
    loaded = load_feature_extractor("vggish", path)
    batch = torch.stack([make_clip(s).waveform for s in (0, 1, 2)])
    feats = loaded(batch)
    assert feats.shape == (6, 128) and torch.isfinite(feats).all()
    assert frechet_distance(feats, loaded(batch.flip(-1) * 0.1)) > frechet_distance(feats, loaded(batch))
    bad = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(64, 1, 3, 3)}, bad)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_feature_extractor("vggish", bad)


def test_i3d_layout_preprocessing_and_loading(tmp_path):
    from uniform_core.errors import UniFormError
    from uniform_core.eval.frechet import kernel_distance, load_feature_extractor
    from uniform_core.eval.i3d import I3D, preprocess

    torch.manual_seed(0)
    model = I3D()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # pytorch-i3d's names and sizes, which i3d_pretrained_400.pt is stored under (12.7 M parameters).
    assert shapes["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert shapes["Conv3d_2c_3x3.bn.running_var"] == (192,)
    assert shapes["Mixed_4f.b3b.conv3d.weight"] == (128, 528, 1, 1, 1)
    assert shapes["Mixed_5c.b1b.conv3d.weight"] == (384, 192, 3, 3, 3)
    assert shapes["logits.conv3d.weight"] == (400, 1024, 1, 1, 1) and "logits.conv3d.bias" in shapes
    assert sum(p.numel() for p in model.parameters()) == 12_697_264

    video = torch.rand(10, 48, 80, 3)
    x = preprocess(video)
    assert x.shape == (3, 10, 224, 224) and -1 <= x.min() and x.max() <= 1
    assert torch.allclose(preprocess(torch.full((9, 32, 32, 3), 0.75)), torch.tensor(0.5))

    # A file saved without BatchNorm's batch counters (older PyTorch) still loads.
    path = tmp_path / "i3d_pretrained_400.pt"
    state = {k: v.half() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    loaded = load_feature_extractor("i3d", path)
    clips = torch.stack([make_clip(s).frames[:9] for s in (0, 1)])
    feats = loaded(clips)
    assert feats.shape == (2, 400) and torch.isfinite(feats).all()
    assert kernel_distance(feats, feats + 1.0) > 0
    with pytest.raises(InputError, match="T >= 9"):
        loaded(clips[:, :4])
    with pytest.raises(UniFormError, match="panns weights .* missing keys"):
        load_feature_extractor("panns", path)  # an I3D file is no PANNs file


def test_panns_front_end_and_loading(tmp_path):
    librosa = pytest.importorskip("librosa")
    from uniform_core.eval.frechet import frechet_distance, load_feature_extractor
    from uniform_core.eval.panns import Cnn14

    torch.manual_seed(0)
    model = Cnn14().eval()
    mel = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=50, fmax=8000).T  # torchlibrosa's melW
    np.testing.assert_allclose(model.logmel_extractor.melW.numpy(), mel, atol=1e-6)
    wave = make_clip(0).waveform[None]
    power = model.spectrogram_extractor(wave)
    ref = torch.stft(
        wave, 512, 160, window=torch.hann_window(512), center=True, pad_mode="reflect", return_complex=True
    )
    torch.testing.assert_close(power[:, 0], ref.abs().square().transpose(1, 2), rtol=1e-4, atol=1e-4)

    path = tmp_path / "Cnn14_16k_mAP=0.438.pth"
    torch.save({"model": {k: v.half() for k, v in model.state_dict().items()}}, path)  # PANNs nests under "model"
    loaded = load_feature_extractor("panns", path)
    batch = torch.stack([make_clip(s).waveform for s in (0, 1)])
    emb = loaded(batch)
    assert emb.shape == (2, 2048) and (emb >= 0).all()
    torch.testing.assert_close(loaded.logits(batch[:1]), loaded.fc_audioset(emb[:1]))
    assert loaded(batch[:1, :8000]).shape == (1, 2048)  # short clips are padded to 2 s, as audioldm_eval does
    assert frechet_distance(emb, emb) == pytest.approx(0.0, abs=1e-6)


def test_kl_and_inception_score_match_their_definitions():
    from uniform_core.eval.frechet import inception_score, kl_divergence

    rng = np.random.default_rng(1)
    gen, ref = rng.standard_normal((20, 7)), rng.standard_normal((20, 7))

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p_ref, p_gen = softmax(ref), softmax(gen)
    expected = (p_ref * (np.log(p_ref) - np.log(p_gen + 1e-6))).sum() / 20
    assert kl_divergence(gen, ref) == pytest.approx(expected, rel=1e-9)
    s_ref, s_gen = 1 / (1 + np.exp(-ref)), 1 / (1 + np.exp(-gen))
    expected = (s_ref * (np.log(s_ref) - np.log(s_gen + 1e-6))).sum() / 20
    assert kl_divergence(gen, ref, variant="sigmoid") == pytest.approx(expected, rel=1e-9)
    assert kl_divergence(ref, ref) == pytest.approx(0.0, abs=1e-4)

    # 40 confident clips over 8 classes: IS is the number of classes; one class only: IS is 1.
    confident = np.full((40, 8), -20.0)
    confident[np.arange(40), np.arange(40) % 8] = 20.0
    assert inception_score(confident, splits=1)[0] == pytest.approx(8.0, rel=1e-6)
    mean, std = inception_score(confident, splits=4)
    assert 1.0 < mean < 8.0 and std > 0  # shuffled splits of 10 see fewer than all 8 classes evenly
    assert inception_score(np.tile(confident[:1], (40, 1)), splits=4) == pytest.approx((1.0, 0.0))
    with pytest.raises(InputError, match="splits"):
        inception_score(confident, splits=41)
