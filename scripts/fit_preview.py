"""Fit a bundle's live-preview maps (uniform_core.previews) and store them beside it as preview.json.

    python scripts/fit_preview.py [BUNDLE_FOLDER]     (default: the embedded uniform-tiny)

Run it again whenever the bundle's video VAE or audio VAE changes; it prints the held-out errors it stores.
"""

from __future__ import annotations

import argparse
import json

import torch

from uniform_core.bundle import DEFAULT_BUNDLE_DIR, load_bundle
from uniform_core.previews import fit_preview_map, preview_errors, save_preview_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", default=str(DEFAULT_BUNDLE_DIR), help="bundle folder")
    folder = parser.parse_args().bundle
    torch.set_num_threads(1)
    bundle = load_bundle(folder)
    preview_map = fit_preview_map(bundle.video_vae, bundle.audio_codec)
    errors = preview_errors(preview_map, bundle.video_vae, bundle.audio_codec)
    print(f"wrote {save_preview_map(preview_map, folder, errors)}: held-out errors {json.dumps(errors)}")


if __name__ == "__main__":
    main()
