"""A bundle: the four parts UniForm needs (DiT, video VAE, audio VAE + vocoder, text encoder) in one folder.

Layout of a bundle folder (each file self-describing, see checkpoint.py)::

    dit.safetensors  video_vae.safetensors  audio_vae.safetensors  vocoder.safetensors  text_encoder.safetensors
    bundle.json      name, native clip size and the sampling settings the weights work best with:
                     {"name", "height", "width", "duration", "sampler", "cfg"}; "cfg" is one number or
                     one per task, e.g. {"t2av": 2.0, "a2v": 1.0, "v2a": 1.0}

The embedded default ``uniform-tiny`` ships inside the package (DESIGN §5).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checks
from .atomic import fsync_dir, write_bytes, write_text
from .codecs.audio import AudioCodec, AudioVAE, Vocoder, load_audio_codec
from .codecs.text import TextEncoder, load_text_encoder
from .codecs.video_vae import VideoVAE, load_video_vae
from .diffusion.guidance import guidance_scales
from .diffusion.samplers import check_sampler
from .errors import CheckpointError, InputError
from .model.uniform_dit import UniFormDiT
from .previews import PreviewMap, load_preview_map
from .tasks import task_index

DEFAULT_BUNDLE_DIR = Path(__file__).parent / "assets" / "uniform-tiny"
COMPONENT_FILES = {
    "dit": "dit.safetensors",
    "video_vae": "video_vae.safetensors",
    "audio_vae": "audio_vae.safetensors",
    "vocoder": "vocoder.safetensors",
    "text_encoder": "text_encoder.safetensors",
}


@dataclass
class Bundle:
    """Everything one generation needs, plus the clip size the model was trained for and the sampler and CFG scale
    its weights work best with (what the pipeline and the command line use unless told otherwise; the paper's
    IDDPM with CFG 5 by default)."""

    dit: UniFormDiT
    video_vae: VideoVAE
    audio_codec: AudioCodec
    text_encoder: TextEncoder
    name: str = "custom"
    height: int = 256
    width: int = 256
    duration: int = 4
    sampler: str = "iddpm"
    cfg: float | dict[str, float] = 5.0  # one scale, or one per task
    preview: PreviewMap | None = None  # live-preview maps fitted to these VAEs (preview.json), if stored

    def cfg_for(self, task: str) -> float:
        """The CFG scale this bundle uses for ``task`` unless told otherwise."""
        task_index(task)
        return guidance_scales(self.cfg)[task]

    def modules(self) -> dict[str, torch.nn.Module]:
        return {
            "dit": self.dit,
            "video_vae": self.video_vae,
            "audio_codec": self.audio_codec,
            "text_encoder": self.text_encoder,
        }


def default_bundle_available() -> bool:
    return all((DEFAULT_BUNDLE_DIR / f).is_file() for f in COMPONENT_FILES.values())


def load_bundle(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle folder; ``None`` loads the embedded default ``uniform-tiny``."""
    folder = DEFAULT_BUNDLE_DIR if path is None else checks.path(path, "bundle")
    if not folder.is_dir():
        raise CheckpointError(f"bundle {str(folder)!r} is not a folder; expected a folder holding {_expected()}")
    missing = [f for f in COMPONENT_FILES.values() if not (folder / f).is_file()]
    if missing:
        hint = " (the embedded default has not been trained into this install)" if path is None else ""
        raise CheckpointError(f"bundle {str(folder)!r} lacks {', '.join(missing)}{hint}; expected {_expected()}")
    info = _read_info(folder)
    bundle = Bundle(
        dit=UniFormDiT.load(folder / COMPONENT_FILES["dit"]),
        video_vae=load_video_vae(folder / COMPONENT_FILES["video_vae"]),
        audio_codec=load_audio_codec(folder),
        text_encoder=load_text_encoder(folder / COMPONENT_FILES["text_encoder"]),
        name=info.get("name", folder.name),
        height=info.get("height", 256),
        width=info.get("width", 256),
        duration=info.get("duration", 4),
        sampler=info.get("sampler", "iddpm"),
        cfg=info.get("cfg", 5.0),
        preview=load_preview_map(folder),
    )
    for module in bundle.modules().values():
        if torch.device(device).type != "cpu":  # loaded on the CPU; .to() would walk every module for nothing
            module.to(device)
        module.eval()
    return bundle


def save_bundle(bundle: Bundle, path: str | os.PathLike, extra: dict[str, str] | None = None) -> Path:
    """Write ``bundle`` as a bundle folder, plus ``extra`` text files (name -> text), whole or not at all.

    The files are written into a hidden sibling folder that is then renamed to ``path``; a bundle already there is
    replaced, and the other files it held (a model card) are carried over into the new one. Any other non-empty
    folder at ``path`` is refused (InputError), never replaced.
    """
    folder = Path(path)
    if folder.is_dir() and any(folder.iterdir()):
        subfolders = [p.name for p in folder.iterdir() if p.is_dir()]
        if subfolders or not (folder / COMPONENT_FILES["dit"]).is_file():
            raise InputError(
                f"bundle folder {str(folder)!r} exists and is not a bundle folder (it holds "
                f"{'folders ' + ', '.join(sorted(subfolders)) if subfolders else 'no ' + COMPONENT_FILES['dit']}); "
                "save into a new or empty folder"
            )
    partial = folder.with_name(f".{folder.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)  # left by a killed save
    partial.mkdir(parents=True)
    try:
        bundle.dit.save(partial / COMPONENT_FILES["dit"])
        bundle.video_vae.save(partial / COMPONENT_FILES["video_vae"])
        bundle.audio_codec.vae.save(partial / COMPONENT_FILES["audio_vae"])
        bundle.audio_codec.vocoder.save(partial / COMPONENT_FILES["vocoder"])
        bundle.text_encoder.save(partial / COMPONENT_FILES["text_encoder"])
        info = {"name": bundle.name, "height": bundle.height, "width": bundle.width, "duration": bundle.duration}
        info |= {"sampler": bundle.sampler, "cfg": bundle.cfg}
        write_text(partial / "bundle.json", json.dumps(info, indent=1) + "\n")
        for name, text in (extra or {}).items():
            write_text(partial / name, text)
    except BaseException:
        shutil.rmtree(partial)
        raise
    if folder.is_dir():
        for old in folder.iterdir():
            if old.is_file() and not (partial / old.name).exists():
                write_bytes(partial / old.name, old.read_bytes())
        replaced = folder.with_name(f".{folder.name}.old")
        if replaced.exists():
            shutil.rmtree(replaced)
        folder.rename(replaced)
        partial.rename(folder)
        shutil.rmtree(replaced)
    else:
        partial.rename(folder)
    fsync_dir(folder.parent)
    return folder


def random_tiny_bundle(seed: int = 0) -> Bundle:
    """An UNTRAINED tiny bundle with random weights, for tests and benchmarks only (its output is noise)."""
    torch.manual_seed(seed)
    bundle = Bundle(
        dit=UniFormDiT.from_preset("tiny"),
        video_vae=VideoVAE.from_preset("tiny"),
        audio_codec=AudioCodec(AudioVAE.from_preset("tiny"), Vocoder.from_preset("tiny")),
        text_encoder=TextEncoder.from_preset("tiny"),
        name="random-tiny (untrained, for tests only)",
        height=64,
        width=64,
        duration=2,
    )
    for module in bundle.modules().values():
        module.eval()
    return bundle


def _read_info(folder: Path) -> dict:
    """bundle.json, checked (before any weights load) by the rules user-given values follow."""
    info_file = folder / "bundle.json"
    if not info_file.is_file():
        return {}
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{info_file} is not valid JSON: {e}") from e
    if not isinstance(info, dict):
        raise CheckpointError(f"{info_file} must hold a JSON object {{name, height, ...}}; got {type(info).__name__}")
    try:
        checks.prompt(info.get("name", folder.name), "name")
        checks.size(info.get("height", 256), info.get("width", 256))
        checks.duration(info.get("duration", 4))
        check_sampler(info.get("sampler", "iddpm"))
        guidance_scales(info.get("cfg", 5.0))
    except InputError as e:
        raise CheckpointError(f"{info_file}: {e}") from None
    return info


def _expected() -> str:
    return ", ".join(COMPONENT_FILES.values()) + " (and optionally bundle.json)"
