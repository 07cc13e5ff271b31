"""T5 text encoder: shapes and mask, truncation, determinism, UniForm files and Hugging Face T5 folders."""

import json
import shutil

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import T5Config, T5EncoderModel, T5ForConditionalGeneration, T5TokenizerFast

from uniform_core.codecs.text import TEXT_ENCODER_PRESETS, TextEncoder, TextEncoderConfig, load_text_encoder
from uniform_core.errors import CheckpointError, InputError

PROMPTS = ["a red ball bounces on the floor", "two green cubes collide", ""]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return TextEncoder.from_preset("tiny")


def _sentencepiece_like_tokenizer() -> T5TokenizerFast:
    """A T5-style Unigram tokenizer trained in memory (pad 0, </s> 1, unk 2; </s> appended), as flan-t5's is."""
    tk = Tokenizer(models.Unigram())
    tk.normalizer = normalizers.NFKC()
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    corpus = ["a red ball bounces on the floor", "a blue cube falls and hits the ground", "two green spheres"] * 10
    tk.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"]))
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    """A flan-t5-like folder: full encoder-decoder weights, config.json and tokenizer files."""
    folder = tmp_path_factory.mktemp("flan-t5-tiny")
    torch.manual_seed(1)
    config = T5Config(
        vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu"
    )
    model = T5ForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    tokenizer = _sentencepiece_like_tokenizer()  # Unigram training is not reproducible run to run: keep this one
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def test_shapes_mask_and_zero_padding(encoder):
    emb, mask = encoder.encode(PROMPTS)
    lengths = [len(p.encode()) + 1 for p in PROMPTS]  # ByT5: one token per UTF-8 byte, plus </s>
    assert emb.shape == (3, max(lengths), 64) and emb.dtype == torch.float32
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == lengths
    assert torch.all(emb[~mask] == 0) and torch.all(emb[mask].abs().sum(-1) > 0)
    assert encoder.width == 64


def test_padding_does_not_change_a_prompt(encoder):
    alone, _ = encoder.encode(PROMPTS[1:2])
    batched, _ = encoder.encode(PROMPTS)
    assert torch.allclose(batched[1, : alone.shape[1]], alone[0], atol=1e-6)


def test_max_length_truncates(encoder):
    emb, mask = encoder.encode(PROMPTS, max_length=8)
    assert emb.shape == (3, 8, 64) and mask.sum(1).tolist() == [8, 8, 1]
    default = TextEncoder(TextEncoderConfig(**{**TEXT_ENCODER_PRESETS["tiny"].__dict__, "max_length": 5}))
    assert default.encode(PROMPTS)[0].shape[1] == 5


def test_deterministic(encoder):
    a, _ = encoder.encode(PROMPTS)
    encoder.train()  # no dropout even in train mode: the encoder is frozen
    b, _ = encoder.encode(PROMPTS)
    encoder.eval()
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "prompts, match",
    [([], "non-empty list"), ("a red ball", "non-empty list"), (["ok", 3], "must be a string"), (None, "non-empty")],
)
def test_bad_prompts(encoder, prompts, match):
    with pytest.raises(InputError, match=match):
        encoder.encode(prompts)


def test_bad_max_length(encoder):
    with pytest.raises(InputError, match="max_length"):
        encoder.encode(["a"], max_length=0)


def test_folder_tokenizer_is_required():
    with pytest.raises(InputError, match="tokenizer"):
        TextEncoder.from_preset("flan-t5-large")


def test_uniform_file_round_trip(encoder, tmp_path):
    encoder.save(tmp_path / "text_encoder.safetensors")
    loaded = load_text_encoder(tmp_path / "text_encoder.safetensors")
    assert loaded.config == encoder.config
    assert torch.equal(loaded.encode(PROMPTS)[0], encoder.encode(PROMPTS)[0])


def test_hf_t5_folder_loads_the_encoder(t5_folder):
    folder, reference, tokenizer = t5_folder
    loaded = load_text_encoder(folder)
    assert loaded.config.tokenizer == "folder" and loaded.width == 32 and loaded.config.max_length == 300
    tokens = tokenizer(PROMPTS, padding="longest", return_tensors="pt")
    emb, mask = loaded.encode(PROMPTS)
    assert torch.equal(mask, tokens["attention_mask"].bool())
    ref = reference.encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
    assert torch.allclose(emb, ref * mask[..., None], atol=1e-5)


def test_a_weight_file_picks_its_folder(t5_folder):
    folder = t5_folder[0]
    picked = load_text_encoder(folder / "model.safetensors")
    assert torch.equal(picked.encode(PROMPTS)[0], load_text_encoder(folder).encode(PROMPTS)[0])


def test_folder_encoder_file_keeps_its_tokenizer(t5_folder, tmp_path):
    folder = t5_folder[0]
    loaded = load_text_encoder(folder)
    loaded.save(tmp_path / "te.safetensors")
    again = load_text_encoder(tmp_path / "te.safetensors")
    prompts = PROMPTS + ["a blue ball falls, hits the ground"]
    assert again.tokenizer(prompts)["input_ids"] == loaded.tokenizer(prompts)["input_ids"]
    assert torch.equal(again.encode(prompts)[0], loaded.encode(prompts)[0])


def test_bad_paths(t5_folder, tmp_path):
    folder = t5_folder[0]
    with pytest.raises(CheckpointError, match="does not exist"):
        load_text_encoder(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no readable config.json"):
        load_text_encoder(tmp_path)
    stray = tmp_path / "stray" / "model.safetensors"
    stray.parent.mkdir()
    shutil.copy(folder / "model.safetensors", stray)
    with pytest.raises(CheckpointError, match="neither a UniForm text encoder file nor in a T5 folder"):
        load_text_encoder(stray)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="not T5"):
        load_text_encoder(bert)
    weights_only = tmp_path / "no-weights"
    weights_only.mkdir()
    (weights_only / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_text_encoder(weights_only)


@pytest.mark.parametrize(
    "change, match", [({"num_layers": 3}, "missing keys: encoder.block.2"), ({"d_ff": 48}, "mismatch")]
)
def test_weights_that_do_not_fit_the_config_are_refused(t5_folder, tmp_path, change, match):
    folder = t5_folder[0]
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()), **change}))
    with pytest.raises(CheckpointError, match=match):
        load_text_encoder(bad)


def test_diffusers_pipeline_text_encoder_finds_its_tokenizer(t5_folder, tmp_path):
    folder, reference, tokenizer = t5_folder
    encoder_only = T5EncoderModel(reference.config)  # AudioLDM 2 layout: a T5EncoderModel, its tokenizer apart
    encoder_only.load_state_dict({k: v for k, v in reference.state_dict().items() if k in encoder_only.state_dict()})
    encoder_only.save_pretrained(tmp_path / "text_encoder_2")
    tokenizer.save_pretrained(tmp_path / "tokenizer_2")
    loaded = load_text_encoder(tmp_path / "text_encoder_2")
    assert torch.equal(loaded.encode(PROMPTS)[0], load_text_encoder(folder).encode(PROMPTS)[0])
