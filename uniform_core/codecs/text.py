"""Text conditioning: a transformers ``T5EncoderModel`` (FLAN-T5 by default) and its tokenizer.

Real weights come from a local Hugging Face folder (google/flan-t5-large layout). The embedded ``tiny`` encoder uses
ByT5's byte tokenizer, which needs no files, so the default bundle runs with nothing downloaded. A UniForm
component file holds the encoder weights, its config and, for a folder tokenizer, the tokenizer itself
(``tokenizer.json`` text in the metadata), so one file rebuilds the whole encoder.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import checks
from ..checkpoint import load_matching, load_state_dict_file, read_component_config, read_metadata, save_component
from ..empty_init import empty_init
from ..errors import CheckpointError, InputError

if TYPE_CHECKING:
    from transformers import T5Config, T5EncoderModel

TEXT_ENCODER_KIND = "text_encoder"
TOKENIZERS = ("byt5", "folder")
SPECIAL_TOKENS = ("pad_token", "eos_token", "unk_token")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


@dataclass(frozen=True)
class TextEncoderConfig:
    """T5 encoder size (transformers ``T5Config`` names), which tokenizer it reads, and the longest prompt in tokens.

    ``tokenizer``: ``"byt5"`` (UTF-8 bytes, no files) or ``"folder"`` (read from the model folder, then kept in the
    UniForm file). The encoder is frozen, so it is always built without dropout.
    """

    vocab_size: int = 32128
    d_model: int = 1024
    d_kv: int = 64
    d_ff: int = 2816
    num_layers: int = 24
    num_heads: int = 16
    feed_forward_proj: str = "gated-gelu"
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    tokenizer: str = "folder"
    max_length: int = 300  # Open-Sora's model_max_length

    def __post_init__(self):
        if self.tokenizer not in TOKENIZERS:
            raise InputError(f"text encoder tokenizer must be one of {', '.join(TOKENIZERS)}; got {self.tokenizer!r}")
        if not isinstance(self.max_length, int) or self.max_length < 1:
            raise InputError(f"text encoder max_length must be a positive int; got {self.max_length!r}")

    def t5_config(self) -> T5Config:
        from transformers import T5Config  # here, not at import: transformers takes seconds to import

        t5 = {k: v for k, v in asdict(self).items() if k not in ("tokenizer", "max_length")}
        return T5Config(**t5, dropout_rate=0.0, is_encoder_decoder=False, use_cache=False, pad_token_id=0)

    @classmethod
    def from_dict(cls, data: dict, **overrides) -> TextEncoderConfig:
        """From a UniForm config or a Hugging Face T5 ``config.json`` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in names}, **overrides})


TEXT_ENCODER_PRESETS: dict[str, TextEncoderConfig] = {
    "tiny": TextEncoderConfig(
        vocab_size=384, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, tokenizer="byt5", max_length=128
    ),
    "flan-t5-large": TextEncoderConfig(),
    # real size with random weights and the byte tokenizer: for benchmarks and memory checks without the files
    "flan-t5-large-random": TextEncoderConfig(tokenizer="byt5"),
}


class TextEncoder(nn.Module):
    """Prompts -> T5 encoder states ``(B, L, width)`` and a token mask; ``model`` holds the T5 keys verbatim."""

    def __init__(self, config: TextEncoderConfig, tokenizer=None, model: T5EncoderModel | None = None):
        """``tokenizer``: required for ``tokenizer="folder"`` configs; ``model``: already-loaded weights (else
        built from ``config`` with random weights)."""
        super().__init__()
        self.config = config
        from transformers import ByT5Tokenizer, T5EncoderModel  # here, not at import (seconds)

        if config.tokenizer == "byt5":
            tokenizer = ByT5Tokenizer()
        elif tokenizer is None:
            raise InputError(
                "this text encoder reads its tokenizer from a folder; pass tokenizer= or use load_text_encoder(folder)"
            )
        if len(tokenizer) > config.vocab_size:
            raise CheckpointError(
                f"the tokenizer has {len(tokenizer)} tokens but the encoder only {config.vocab_size} embeddings"
            )
        self.tokenizer = tokenizer
        self.model = model if model is not None else T5EncoderModel(config.t5_config())
        self.model.eval()

    @classmethod
    def from_preset(cls, name: str, tokenizer=None) -> TextEncoder:
        if name not in TEXT_ENCODER_PRESETS:
            raise InputError(f"text encoder preset must be one of {', '.join(TEXT_ENCODER_PRESETS)}; got {name!r}")
        return cls(TEXT_ENCODER_PRESETS[name], tokenizer)

    @property
    def width(self) -> int:
        """Channels of each token state (the DiT's ``caption_channels``)."""
        return self.config.d_model

    @torch.no_grad()
    def encode(self, prompts: list[str], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``prompts``: B strings. Returns ``emb`` ``(B, L, width)`` float32 and ``mask`` ``(B, L)`` bool.

        L is the longest tokenized prompt (end-of-sequence token included), cut at ``max_length`` (default: the
        config's). Padded positions are False in ``mask`` and zero in ``emb``. On the encoder's device.
        """
        if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts:
            raise InputError(f"prompts must be a non-empty list of strings; got {prompts!r}")
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise InputError(f"every prompt must be a string; got {bad[0]!r} ({type(bad[0]).__name__})")
        max_length = self.config.max_length if max_length is None else max_length
        checks.integer(max_length, "max_length (tokens)", 1)
        tokens = self.tokenizer(
            list(prompts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
        )
        device = next(self.model.parameters()).device
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        return states * mask[..., None], mask.bool()

    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file: T5 encoder weights, config and (folder tokenizers) the tokenizer definition."""
        config = asdict(self.config)
        if self.config.tokenizer == "folder":
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            if backend is None:
                raise CheckpointError(
                    f"{type(self.tokenizer).__name__} has no tokenizer.json form (a fast tokenizer), so it cannot be "
                    "stored in a UniForm file"
                )
            config["tokenizer_json"] = backend.to_str()
            config["special_tokens"] = {k: getattr(self.tokenizer, k) for k in SPECIAL_TOKENS}
        save_component(self.model, path, TEXT_ENCODER_KIND, config)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TextEncoder:
        """A UniForm ``text_encoder`` component file."""
        data = read_component_config(path, TEXT_ENCODER_KIND)
        config = TextEncoderConfig.from_dict(data)
        tokenizer = None
        if config.tokenizer == "folder":
            if "tokenizer_json" not in data:
                raise CheckpointError(f"text encoder file {path} has a folder tokenizer but does not hold it")
            from tokenizers import Tokenizer
            from transformers import PreTrainedTokenizerFast

            tokenizer = PreTrainedTokenizerFast(
                tokenizer_object=Tokenizer.from_str(data["tokenizer_json"]), **data["special_tokens"]
            )
        with empty_init():  # no random init: every weight comes from the file
            encoder = cls(config, tokenizer)
        load_matching(encoder.model, load_state_dict_file(path), f"text encoder file {path}", assign=True)
        encoder.model.set_input_embeddings(encoder.model.shared)  # assign untied T5's shared token table
        return encoder


def load_text_encoder(path: str | os.PathLike) -> TextEncoder:
    """A :class:`TextEncoder` from a Hugging Face T5 folder (``config.json``, tokenizer files and weights, e.g.
    google/flan-t5-large; a full encoder-decoder checkpoint is fine, only the encoder is kept; AudioLDM 2's
    ``text_encoder_2/`` finds ``tokenizer_2/`` beside it), a weight file inside such a folder (what a file picker
    hands over), or a UniForm ``text_encoder`` .safetensors file. Nothing is downloaded."""
    path = Path(path)
    expected = (
        "a Hugging Face T5 folder (config.json, tokenizer.json or spiece.model, model.safetensors; e.g. "
        "google/flan-t5-large) or a file in one, or a UniForm 'text_encoder' .safetensors file"
    )
    if path.is_dir():
        return _load_hf_folder(path, expected)
    if not path.is_file():
        raise CheckpointError(f"text encoder path {str(path)!r} does not exist; expected {expected}")
    if path.suffix == ".safetensors" and read_metadata(path).get("uniform_component") is not None:
        return TextEncoder.load(path)
    if (path.parent / "config.json").is_file():
        return _load_hf_folder(path.parent, expected)
    raise CheckpointError(f"{path} is neither a UniForm text encoder file nor in a T5 folder; expected {expected}")


def _load_hf_folder(folder: Path, expected: str) -> TextEncoder:
    config_path = folder / "config.json"
    try:
        hf_config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder} has no readable config.json; expected {expected}") from e
    if hf_config.get("model_type") != "t5":
        raise CheckpointError(f"{config_path} describes a {hf_config.get('model_type')!r} model, not T5")
    from transformers import AutoTokenizer, T5EncoderModel

    try:
        tokenizer = AutoTokenizer.from_pretrained(_tokenizer_folder(folder), local_files_only=True)
        model, info = T5EncoderModel.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32, dropout_rate=0.0, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as e:  # transformers raises RuntimeError for mis-shaped weights
        raise CheckpointError(f"{folder} could not be loaded as a T5 encoder ({e}); expected {expected}") from e
    missing = sorted(info.get("missing_keys") or ())
    if missing:  # transformers would fill these with random values
        shown = ", ".join(missing[:12]) + (f", ... ({len(missing)} in all)" if len(missing) > 12 else "")
        raise CheckpointError(f"{folder}'s weights do not fit its config.json; missing keys: {shown}")
    # max_length is ours: a "max_length" in a T5 config.json is an old generation default, not a prompt limit
    config = TextEncoderConfig.from_dict(hf_config, tokenizer="folder", max_length=TextEncoderConfig.max_length)
    return TextEncoder(config, tokenizer, model)


def _tokenizer_folder(folder: Path) -> Path:
    """The folder itself, or for a diffusers pipeline's ``text_encoder*/`` without tokenizer files, its sibling
    ``tokenizer*/`` (AudioLDM 2 keeps FLAN-T5-large in ``text_encoder_2/`` and ``tokenizer_2/``)."""
    sibling = folder.parent / folder.name.replace("text_encoder", "tokenizer")
    has_own = any((folder / f).is_file() for f in TOKENIZER_FILES)
    return sibling if not has_own and folder.name.startswith("text_encoder") and sibling.is_dir() else folder
