"""Start a UniForm DiT from an Open-Sora STDiT-v3 or a PixArt-Sigma checkpoint, mapping weights by key name.

Open-Sora 1.2 started from PixArt-Sigma the same way (``opensora/utils/ckpt_utils.py``); UniForm starts from
Open-Sora. What does not come from the source (audio embedder and head, task embedding, and whatever PixArt lacks)
keeps the model's own initialisation, and the returned :class:`InitReport` says which keys those are.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ..checkpoint import load_state_dict_file
from ..errors import CheckpointError
from .uniform_dit import PRESETS, UniFormConfig, UniFormDiT

logger = logging.getLogger(__name__)

UNIFORM_ONLY = ("audio_embedder.", "audio_final_layer.", "task_embedding.")
CAPTION_FC1 = ("y_embedder.y_proj.fc1.weight", "y_embedder.y_proj.fc1.bias")
NULL_CAPTION = "y_embedder.y_embedding"
# Keys Open-Sora added on top of PixArt (ckpt_utils.reparameter loads PixArt with strict=False).
PIXART_NEW = re.compile(r"^(temporal_blocks\.|fps_embedder\.|rope\.freqs$|spatial_blocks\.\d+\.attn\.[qk]_norm\.)")
PIXART_DROPPED = ("pos_embed", "pos_embed_temporal")

StateDict = Mapping[str, torch.Tensor]


@dataclass
class InitReport:
    """Where every tensor of a freshly initialised UniForm DiT came from."""

    source: str
    loaded: list[str] = field(default_factory=list)  # copied from the source checkpoint
    new: list[str] = field(default_factory=list)  # not in the source; the model's own initialisation
    reinitialised: dict[str, str] = field(default_factory=dict)  # in the source but unusable: key -> why
    adapted: dict[str, str] = field(default_factory=dict)  # loaded after a change: key -> what changed
    ignored: list[str] = field(default_factory=list)  # source keys the model has no place for
    loaded_numel: int = 0

    def summary(self) -> str:
        lines = [
            f"UniForm DiT initialised from {self.source}: {len(self.loaded)} tensors loaded "
            f"({self.loaded_numel / 1e6:.1f} M values), {len(self.new)} new, "
            f"{len(self.reinitialised)} re-initialised, {len(self.ignored)} source keys ignored"
        ]
        if self.new:
            groups = Counter(key.split(".")[0] for key in self.new)
            lines.append("  new: " + ", ".join(f"{name} ({n})" for name, n in sorted(groups.items())))
        for label, entries in (("re-initialised", self.reinitialised), ("adapted", self.adapted)):
            for why in dict.fromkeys(entries.values()):
                keys = ", ".join(k for k, w in entries.items() if w == why)
                lines.append(f"  {label} ({why}): {keys}")
        if self.ignored:
            lines.append("  ignored: " + ", ".join(self.ignored))
        return "\n".join(lines)

    __str__ = summary


def init_from_opensora(
    state_dict: StateDict | str | os.PathLike, config: UniFormConfig = PRESETS["xl"], device="cpu"
) -> tuple[UniFormDiT, InitReport]:
    """A UniForm DiT whose shared part is an Open-Sora STDiT-v3 checkpoint (``hpcai-tech/OpenSora-STDiT-v3``).

    state_dict: the checkpoint's tensors or its file; config: the UniForm config (its STDiT3 sizes must match the
    checkpoint's); device: where the model is built ("meta" checks the mapping without allocating weights).
    The caption projection's fc1 and the null caption are re-initialised when the text width differs (T5-XXL's
    4096 vs FLAN-T5's 1024). Raises CheckpointError naming missing, unexpected or mis-shaped keys.
    """
    sd = _as_state_dict(state_dict)
    return _init(sd, config, device, InitReport("Open-Sora STDiT-v3"), lambda key: key.startswith(UNIFORM_ONLY))


def init_from_pixart(
    state_dict: StateDict | str | os.PathLike, config: UniFormConfig = PRESETS["xl"], device="cpu"
) -> tuple[UniFormDiT, InitReport]:
    """A UniForm DiT whose spatial part is a PixArt-Sigma XL/2 checkpoint, mapped as Open-Sora 1.2 did.

    ``blocks.N`` become ``spatial_blocks.N``, the 2-D patch kernel gets a time axis, ``pos_embed`` is dropped,
    the null caption is extended (last row repeated) or truncated to ``model_max_length``. Temporal blocks (zero
    output projections, so they start as the identity), fps embedder, q/k norms, RoPE and the UniForm parts are new.
    Keys that STDiT3 has no place for are ignored and listed in the report, as Open-Sora's strict=False load did.
    """
    sd = dict(_as_state_dict(state_dict))
    report = InitReport("PixArt-Sigma")
    mapped = {}
    for key, tensor in sd.items():
        if key in PIXART_DROPPED:
            report.ignored.append(key)
            continue
        new_key = re.sub(r"^blocks\.", "spatial_blocks.", key)
        if new_key == "x_embedder.proj.weight" and tensor.ndim == 4:
            tensor = tensor.unsqueeze(2)
            report.adapted[new_key] = "2-D patch kernel given a time axis of 1"
        mapped[new_key] = tensor

    def is_new(key: str) -> bool:
        return key.startswith(UNIFORM_ONLY) or PIXART_NEW.match(key) is not None

    return _init(mapped, config, device, report, is_new, ignore_unexpected=True)


def _init(
    sd: dict[str, torch.Tensor],
    config: UniFormConfig,
    device,
    report: InitReport,
    may_be_new: Callable[[str], bool],
    ignore_unexpected: bool = False,
) -> tuple[UniFormDiT, InitReport]:
    """Build the model, then copy every source tensor that fits; raise if the source does not fit the config.

    may_be_new(key) is True for model keys the source is not expected to have."""
    with torch.device("meta"):  # shapes only: a checkpoint that does not fit fails before 4.8 GB are allocated
        target = {k: v.shape for k, v in UniFormDiT(config).state_dict().items()}
    sd = dict(sd)

    caption_width = sd[CAPTION_FC1[0]].shape[1] if CAPTION_FC1[0] in sd else config.caption_channels
    if caption_width != config.caption_channels:
        why = f"caption width {caption_width} in the source, {config.caption_channels} in the config"
        for key in (*CAPTION_FC1, NULL_CAPTION):
            if sd.pop(key, None) is not None:
                report.reinitialised[key] = why
    elif NULL_CAPTION in sd and sd[NULL_CAPTION].shape[0] != config.model_max_length:
        rows = sd[NULL_CAPTION].shape[0]
        sd[NULL_CAPTION] = _fit_rows(sd[NULL_CAPTION], config.model_max_length)
        report.adapted[NULL_CAPTION] = f"{rows} rows fitted to model_max_length {config.model_max_length}"

    missing = [k for k in target if k not in sd and k not in report.reinitialised and not may_be_new(k)]
    unexpected = sorted(k for k in sd if k not in target)
    misshaped = [
        f"{k}: source {tuple(sd[k].shape)} vs model {tuple(target[k])}"
        for k in target
        if k in sd and sd[k].shape != target[k]
    ]
    if ignore_unexpected:
        report.ignored += unexpected
        unexpected = []
    _raise_if_unfit(report.source, config, missing, unexpected, misshaped)

    report.loaded = [k for k in target if k in sd]
    report.new = [k for k in target if k not in sd and k not in report.reinitialised]
    report.loaded_numel = sum(sd[k].numel() for k in report.loaded)
    with torch.device(device):
        model = UniFormDiT(config)
    model.load_state_dict({k: sd[k] for k in report.loaded}, strict=False)
    logger.info("%s", report.summary())
    return model, report


def _raise_if_unfit(source, config, missing, unexpected, misshaped) -> None:
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            shown = ", ".join(keys[:12]) + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")
            parts.append(f"{label} keys: {shown}")
    if parts:
        sizes = f"hidden_size={config.hidden_size}, depth={config.depth}, num_heads={config.num_heads}"
        raise CheckpointError(
            f"the {source} checkpoint does not fit the UniForm config ({sizes}); " + "; ".join(parts)
        )


def _fit_rows(table: torch.Tensor, rows: int) -> torch.Tensor:
    """Truncate, or extend by repeating the last row (Open-Sora's rule for PixArt's null caption)."""
    if table.shape[0] >= rows:
        return table[:rows]
    return torch.cat([table, table[-1:].expand(rows - table.shape[0], -1)], dim=0)


def _as_state_dict(state_dict: StateDict | str | os.PathLike) -> StateDict:
    if isinstance(state_dict, (str, os.PathLike)):
        return load_state_dict_file(state_dict)
    return state_dict
