"""Start-up: importing the pipeline leaves diffusers and transformers unimported, and a bundle built without random
init (``empty_init``) holds exactly the file's weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from uniform_core.bundle import load_bundle, random_tiny_bundle, save_bundle

HEAVY = ("diffusers", "transformers", "tokenizers", "torch._dynamo")
REPO = Path(__file__).resolve().parents[1]


def test_importing_the_pipeline_leaves_the_heavy_libraries_unimported():
    code = f"import json, sys, uniform_core.pipeline; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_loaded_bundle_holds_exactly_the_saved_weights(tmp_path):
    saved = random_tiny_bundle(seed=3)
    loaded = load_bundle(save_bundle(saved, tmp_path / "b"))
    for name, module in saved.modules().items():
        want, got = module.state_dict(), loaded.modules()[name].state_dict()
        assert want.keys() == got.keys(), name
        for key in want:
            assert torch.equal(want[key], got[key]), (name, key)
    t5 = loaded.text_encoder.model
    assert t5.shared.weight is t5.encoder.embed_tokens.weight  # still one token table
    emb, _ = loaded.text_encoder.encode(["a red ball bounces"])
    assert torch.equal(emb, saved.text_encoder.encode(["a red ball bounces"])[0])
