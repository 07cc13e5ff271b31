"""STDiT3 matches Open-Sora 1.2: state-dict keys/shapes of the real checkpoint and the reference's recorded outputs."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from uniform_core.errors import InputError
from uniform_core.model import STDiT3, STDiT3Config

DATA = Path(__file__).parent / "data"  # travels with the tests; a missing file fails them, never skips them
GOLDEN = DATA / "golden" / "opensora"
MANIFESTS = DATA / "manifests"

SMALL = dict(depth=2, hidden_size=64, num_heads=4, caption_channels=32, model_max_length=8)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def golden():
    model = STDiT3(STDiT3Config(**SMALL)).eval()
    model.load_state_dict(load_file(GOLDEN / "stdit3_small_weights.safetensors"), strict=True)
    return model, load_file(GOLDEN / "stdit3_small_io.safetensors")


def manifest_shapes(name: str) -> dict[str, tuple[int, ...]]:
    data = json.loads((MANIFESTS / name).read_text())
    return {k: tuple(v) for k, v in data["tensors"].items()}, data["header"]["config"]


@pytest.mark.parametrize(
    "call, expected",
    [({"mask": "mask"}, "out_mask"), ({}, "out_nomask"), ({"mask": "mask", "x_mask": "x_mask"}, "out_xmask")],
)
def test_matches_reference_outputs(golden, call, expected):
    model, io = golden
    kwargs = {k: io[v] for k, v in call.items()}
    with torch.no_grad():
        out = model(io["x"], io["timestep"], io["y"], fps=io["fps"], height=io["height"], width=io["width"], **kwargs)
    assert out.dtype == torch.float32
    assert rel_err(out, io[expected]) < 1e-5


def test_text_mask_and_x_mask_change_the_output(golden):
    """Guards against the recorded cases passing trivially: the second sample's mask hides 3 tokens."""
    _, io = golden
    assert rel_err(io["out_mask"][1], io["out_nomask"][1]) > 1e-3
    assert rel_err(io["out_xmask"], io["out_mask"]) > 1e-3


def test_odd_size_is_padded_and_cropped_like_the_reference(golden):
    model, io = golden
    with torch.no_grad():  # height/width default to 8 x the 7x6 latent, as recorded
        out = model(io["x_odd"], io["timestep"][:1], io["y"][:1], fps=io["fps"][:1])
    assert out.shape == (1, 8, 3, 7, 6)
    assert rel_err(out, io["out_odd"]) < 1e-5


def test_embeddings_match_reference(golden):
    model, io = golden
    with torch.no_grad():
        assert rel_err(model.t_embedder(io["timestep"]), io["t_emb"]) < 1e-5
        assert rel_err(model.fps_embedder(io["fps"]), io["fps_emb"]) < 1e-5
        assert rel_err(model.video_pos_embed(4, 5, 64.0, 80.0)[None], io["pos_emb"]) < 1e-5


@pytest.mark.parametrize("name", ["opensora_stdit3_xl2.json", "opensora_stdit3_small.json"])
def test_state_dict_matches_opensora_manifest(name):
    expected, header_config = manifest_shapes(name)
    config = STDiT3Config.from_dict(header_config)
    with torch.device("meta"):
        model = STDiT3(config)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(got) ^ set(expected)) == []
    assert {k: s for k, s in got.items() if expected[k] != s} == {}


def test_xl2_defaults_are_the_opensora_checkpoint():
    c = STDiT3Config()
    assert (c.hidden_size, c.depth, c.num_heads, c.out_channels, c.head_dim) == (1152, 28, 16, 8, 72)


def test_fresh_temporal_blocks_are_identity_and_fps_embedding_is_zero():
    """Open-Sora's init: a new temporal block passes tokens through unchanged, so PixArt weights keep working."""
    torch.manual_seed(0)
    model = STDiT3(STDiT3Config(**SMALL)).eval()
    x = torch.randn(2, 3, 4, 64)
    y = torch.randn(2, 8, 64)
    t_mlp = torch.randn(2, 6 * 64)
    with torch.no_grad():
        out = model.temporal_blocks[0](x, y, None, t_mlp, rope=model.rope)
        fps = model.fps_embedder(torch.tensor([17.0, 24.0]))
    torch.testing.assert_close(out, x)
    assert fps.abs().max() == 0


def test_rope_rotates_interleaved_pairs_by_frame_index():
    model = STDiT3(STDiT3Config(**SMALL))
    x = torch.zeros(1, 1, 3, 16)
    x[..., 0] = 1.0  # first pair (x0, x1) = (1, 0), frequency 1
    out = model.rope(x)
    angles = torch.arange(3.0)
    torch.testing.assert_close(out[0, 0, :, 0], angles.cos())
    torch.testing.assert_close(out[0, 0, :, 1], angles.sin())


def test_config_rejects_unknown_fields():
    with pytest.raises(InputError, match="hidden"):
        STDiT3Config.from_dict({"hiden_size": 64})


def test_training_replaces_captions_by_the_null_caption(golden):
    """Open-Sora's caption dropout for classifier-free guidance (class_dropout_prob, training mode only)."""
    model, io = golden
    always = STDiT3(STDiT3Config(**SMALL, class_dropout_prob=1.0))
    always.load_state_dict(model.state_dict())
    null = model.y_embedder.y_embedding.expand(2, 1, -1, -1)
    kwargs = dict(fps=io["fps"], height=io["height"], width=io["width"])
    with torch.no_grad():
        dropped = always.train()(io["x"], io["timestep"], io["y"], **kwargs)
        expected = model(io["x"], io["timestep"], null, **kwargs)
        kept = always.eval()(io["x"], io["timestep"], io["y"], **kwargs)
    torch.testing.assert_close(dropped, expected)
    torch.testing.assert_close(kept, io["out_nomask"], atol=1e-5, rtol=1e-5)
