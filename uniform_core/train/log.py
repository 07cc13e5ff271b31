"""The loss log (one JSON object per line) and the progress bar, both written by the main process only."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from accelerate import Accelerator
from tqdm.auto import tqdm

from ..atomic import write_text


class LossLog:
    """Appends ``{"stage", "step", "loss", ..., "time_s"}`` lines to ``path`` (``train_log.jsonl``).

    ``time_s`` counts seconds since the log was opened; on resume, lines past the resumed step are dropped first,
    so the file always reads as one run. A line is appended with one write; a last line cut by a kill is dropped on
    resume too.
    """

    def __init__(self, path: str | os.PathLike, accelerator: Accelerator):
        self.path = Path(path)
        self.enabled = accelerator.is_main_process
        self.start = time.monotonic()
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate(self, stage: str, step: int) -> None:
        """Drop the lines of ``stage`` (and its sub-stages ``stage.*``) after ``step``: they belong to the part of an
        interrupted run that is being redone."""
        if not self.enabled or not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        if lines and not _parses(lines[-1]):
            lines.pop()
        kept = [line for line in lines if not _after(line, stage, step)]
        write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, **values) -> None:
        if not self.enabled:
            return
        values["time_s"] = round(time.monotonic() - self.start, 2)
        with self.path.open("a") as f:
            f.write(json.dumps(values) + "\n")
            f.flush()


def read_log(path: str | os.PathLike, stage: str | None = None) -> list[dict]:
    """The entries of a loss log, optionally only those of ``stage``."""
    lines = Path(path).read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    return [e for e in entries if stage is None or e.get("stage") == stage]


def progress_bar(accelerator: Accelerator, total: int, desc: str, initial: int = 0) -> tqdm:
    return tqdm(
        total=total, initial=initial, desc=desc, unit="step", disable=not accelerator.is_local_main_process, leave=True
    )


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def _after(line: str, stage: str, step: int) -> bool:
    entry = json.loads(line)
    return str(entry.get("stage", "")).split(".")[0] == stage and entry.get("step", 0) > step
