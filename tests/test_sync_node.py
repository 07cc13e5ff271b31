"""UniForm AV Sync, called as ComfyUI calls it: IMAGE frames + AUDIO + fps in, AV-align score and a plot out."""

from __future__ import annotations

import sys

import pytest
import torch

from uniform_core.errors import InputError, UniFormError
from uniform_core.train.synthetic import heldout_seeds, make_clip

pytest.importorskip("librosa")
pytest.importorskip("cv2")

FPS, SR = 17.0, 16000


@pytest.fixture(scope="module")
def node(pack):
    return pack.NODE_CLASS_MAPPINGS["UniFormAVSync"]()


def comfy_audio(waveform: torch.Tensor, sample_rate: int = SR) -> dict:
    return {"waveform": waveform.view(1, 1, -1), "sample_rate": sample_rate}


def test_scores_in_range_and_plot_is_an_image_batch(node):
    clip = make_clip(heldout_seeds(1)[0])
    score, plot = node.run(frames=clip.frames, fps=FPS, audio=comfy_audio(clip.waveform))
    assert isinstance(score, float) and 0.0 < score <= 1.0
    assert plot.dim() == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.shape[1] >= 64
    assert plot.dtype == torch.float32 and 0.0 <= plot.min() and plot.max() <= 1.0
    assert plot.std() > 0.05  # curves drawn, not a blank frame


def test_synced_clips_score_above_the_same_clips_with_sound_half_a_second_late(node):
    """Per clip a 0.5 s delay can land on another impact by chance; over six clips sync must clearly win."""
    synced, late = [], []
    shift = SR // 2
    for seed in heldout_seeds(6):
        clip = make_clip(seed)
        delayed = torch.cat([torch.zeros(shift), clip.waveform[:-shift]])
        synced.append(node.run(frames=clip.frames, fps=FPS, audio=comfy_audio(clip.waveform))[0])
        late.append(node.run(frames=clip.frames, fps=FPS, audio=comfy_audio(delayed))[0])
    assert sum(synced) > 1.5 * sum(late), (synced, late)


def test_stereo_audio_at_another_rate_is_accepted(node):
    clip = make_clip(heldout_seeds(1)[0])
    stereo = torch.nn.functional.interpolate(clip.waveform.view(1, 1, -1), scale_factor=3, mode="linear")[0]
    mono_score = node.run(frames=clip.frames, fps=FPS, audio=comfy_audio(clip.waveform))[0]
    score, _ = node.run(
        frames=clip.frames, fps=FPS, audio={"waveform": stereo.expand(2, -1)[None], "sample_rate": 48000}
    )
    assert score == pytest.approx(mono_score, abs=0.15)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"frames": "not frames"}, "frames must have shape"),
        ({"frames": torch.rand(1, 32, 32, 3)}, "at least 2 video frames"),
        ({"fps": 0.0}, "fps must be a number from 1.0"),  # the widget's range
        ({"audio": torch.zeros(16000)}, "AUDIO must be a dict"),
        ({"audio": {"waveform": torch.zeros(2, 1, 16000), "sample_rate": SR}}, "batch of 2"),
    ],
)
def test_bad_inputs_name_the_node_and_the_input(node, change, message):
    clip = make_clip(heldout_seeds(1)[0])
    inputs = {"frames": clip.frames, "fps": FPS, "audio": comfy_audio(clip.waveform)} | change
    with pytest.raises(InputError, match=message) as info:
        node.run(**inputs)
    assert str(info.value).startswith("UniForm AV Sync: ")


def test_missing_librosa_says_what_to_install(node, monkeypatch):
    monkeypatch.setitem(sys.modules, "librosa", None)  # import librosa now raises ImportError
    clip = make_clip(heldout_seeds(1)[0])
    with pytest.raises(UniFormError, match=r"^UniForm AV Sync: AV-align needs librosa"):
        node.run(frames=clip.frames, fps=FPS, audio=comfy_audio(clip.waveform))
