"""The smallest recipe that runs every training stage (one step a codec stage, a few DiT steps on 4 clips): the
train, extract and distributed tests share it so that a change to the recipe's fields is made in one place."""

from __future__ import annotations

import json
from pathlib import Path


def smallest_recipe(data: dict | None = None, dit: dict | None = None, **fields) -> dict:
    """The recipe with ``data`` and ``dit`` fields added to (or overriding) the smallest ones, plus top-level
    ``fields`` (name, sampler, cfg)."""
    return {
        **fields,
        "data": {"num_clips": 4, "seconds": 2, "codec_clips": 2, **(data or {})},
        "video_vae": {"steps": 1, "stage2_steps": 1, "stage3_steps": 1, "batch_size": 4},
        "audio_vae": {"steps": 1, "batch_size": 2},
        "vocoder": {"steps": 1, "batch_size": 2},
        "dit": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2, **(dit or {})},
    }


def write_recipe(folder: Path, recipe: dict) -> str:
    """``recipe`` written as ``folder/recipe.json``; its path as the CLI's ``--config`` takes it."""
    (folder / "recipe.json").write_text(json.dumps(recipe))
    return str(folder / "recipe.json")
