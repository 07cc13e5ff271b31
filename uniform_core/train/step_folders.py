"""Checkpoint step folders that are complete or absent, and the choice of the one to resume from.

A step folder ``checkpoints/step_XXXXXX`` is filled under a temporary name (``.step_XXXXXX.partial``), each file
written atomically; its marker ``trainer_state.json`` is written last and lists every file with its size and
SHA-256; only then is the folder renamed into place. A kill at any moment therefore leaves the older step folders
as they were plus, at most, a hidden partial folder that the next save clears. On resume the marker is checked
again (a folder damaged or edited later is refused), and a folder holding pickle files is refused by name: resume
never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

from ..atomic import fsync_dir, write_text
from ..errors import CheckpointError

logger = logging.getLogger(__name__)

MARKER = "trainer_state.json"
FORMAT = 2  # 1: accelerate's save_state (pickles), refused
PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")
STEP_NAME = re.compile(r"step_(\d+)")


def step_folder(checkpoints: Path, step: int) -> Path:
    return checkpoints / f"step_{step:06d}"


def partial_folder(checkpoints: Path, step: int) -> Path:
    """Where step ``step`` is written before it is renamed into place (hidden from ``step_*``)."""
    return checkpoints / f".step_{step:06d}.partial"


def clear_partial_folders(checkpoints: Path) -> None:
    """Remove what killed saves left behind (main process, before a save)."""
    for leftover in checkpoints.glob(".step_*.partial"):
        shutil.rmtree(leftover)
    for leftover in checkpoints.glob(".step_*.old"):
        shutil.rmtree(leftover)


def publish(partial: Path, folder: Path, state: dict) -> Path:
    """Write the marker of ``partial`` (``state`` plus every file's size and SHA-256) and rename it to ``folder``."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(partial.iterdir())}
    write_text(partial / MARKER, json.dumps({**state, "format": FORMAT, "files": files}, indent=1) + "\n")
    fsync_dir(partial)
    if folder.exists():  # a step redone after resuming from an older one: swap the new folder in
        old = folder.with_name(f".{folder.name}.old")
        folder.rename(old)
        partial.rename(folder)
        shutil.rmtree(old)
    else:
        partial.rename(folder)
    fsync_dir(folder.parent)
    return folder


def verify(folder: str | Path, hashes: bool = True) -> dict:
    """The marker's state of a complete step folder, after checking every listed file's size and SHA-256
    (``hashes=False``: sizes only).

    A missing or unreadable marker, a listed file that is missing or differs, or any pickle file in the folder is a
    CheckpointError naming the folder and the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {str(folder)!r} is not a folder")
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"checkpoint {str(folder)!r}: refused {', '.join(pickles)}: resume never unpickles (pickle files can "
            "run code); this folder was written by accelerate's save_state or edited, not by this trainer"
        )
    marker = folder / MARKER
    if not marker.is_file():
        raise CheckpointError(f"checkpoint {str(folder)!r} is incomplete: it has no {MARKER} (written last)")
    try:
        state = json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {str(folder)!r}: {MARKER} is not valid JSON: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("files"), dict):
        raise CheckpointError(
            f"checkpoint {str(folder)!r}: {MARKER} is not a format-{FORMAT} marker with a 'files' list "
            f"(format {state.get('format') if isinstance(state, dict) else None!r})"
        )
    if not isinstance(state.get("step"), int) or not isinstance(state.get("seed"), int):
        raise CheckpointError(f"checkpoint {str(folder)!r}: {MARKER} lacks an integer 'step' and 'seed'")
    for name, expected in state["files"].items():
        _check_file(folder, name, expected, hashes)
    return state


def newest_complete(checkpoints: Path) -> Path | None:
    """The complete step folder with the highest step under ``checkpoints``, or None; every newer folder that is
    skipped is logged with the reason."""
    for folder in reversed(step_folders(checkpoints)):
        try:
            verify(folder)
        except CheckpointError as e:
            logger.warning("resume: skipped %s: %s", folder.name, e)
            continue
        return folder
    return None


def step_folders(checkpoints: Path) -> list[Path]:
    """``step_*`` folders under ``checkpoints``, by step."""
    found = [p for p in checkpoints.glob("step_*") if STEP_NAME.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(STEP_NAME.fullmatch(p.name).group(1)))


def prune(checkpoints: Path, newest: Path, keep: int) -> None:
    """Keep ``newest`` and the ``keep - 1`` complete folders before it; remove older and broken ones (completeness
    by the marker's file sizes: hashing every folder at every save would cost more than the save)."""
    older = [p for p in step_folders(checkpoints) if _step(p) < _step(newest)]
    complete = [p for p in older if _is_complete(p)]
    kept = complete[len(complete) - keep + 1 :] if keep > 1 else []
    for folder in older:
        if folder not in kept:
            shutil.rmtree(folder)


def _check_file(folder: Path, name, expected, hashes: bool) -> None:
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..", MARKER):
        raise CheckpointError(f"checkpoint {str(folder)!r}: {MARKER} lists {name!r}, not a file name in the folder")
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(folder)!r} is incomplete: {name} is missing")
    if not isinstance(expected, dict) or path.stat().st_size != expected.get("bytes"):
        raise CheckpointError(
            f"checkpoint {str(folder)!r}: {name} has {path.stat().st_size} bytes, its marker says "
            f"{expected.get('bytes') if isinstance(expected, dict) else expected!r}"
        )
    if hashes and _sha256(path) != expected.get("sha256"):
        raise CheckpointError(f"checkpoint {str(folder)!r}: {name} differs from its SHA-256 in {MARKER}")


def _is_complete(folder: Path) -> bool:
    try:
        verify(folder, hashes=False)
    except CheckpointError:
        return False
    return True


def _step(folder: Path) -> int:
    return int(STEP_NAME.fullmatch(folder.name).group(1))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
