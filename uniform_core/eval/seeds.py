"""Which synthetic clips an evaluation may look at: training, tuning and report seeds never overlap.

Training clips are the recipe's seeds (below ``HELDOUT_FIRST_SEED``). Every evaluation run while the current
bundle was trained and its sampling settings chosen (how long to train, which CFG) used seeds from the tuning
range; its numbers are therefore tuned to those clips. The report range is only looked at to report a finished
bundle, and the code refuses to report on tuning seeds unless asked to.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..errors import InputError
from ..train.synthetic import HELDOUT_FIRST_SEED

# Seeds 1,000,000..1,000,089 chose the training length and T2AV's CFG of the current uniform-tiny (model card);
# the whole first thousand is kept for tuning.
TUNING_SEEDS = range(HELDOUT_FIRST_SEED, HELDOUT_FIRST_SEED + 1000)
REPORT_SEEDS = range(2_000_000, 3_000_000)


@dataclass(frozen=True)
class SeedRange:
    """``clips`` consecutive seeds from ``first``, and the named range they lie in (``"report"``, ``"tuning"``)."""

    first: int
    clips: int
    name: str

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first, self.first + self.clips))

    def describe(self) -> str:
        return f"seeds {self.first}..{self.first + self.clips - 1} ({self.name} range)"


def choose_seeds(first: int | None, clips: int, allow_tuning: bool = False) -> SeedRange:
    """The clips an evaluation uses: ``clips`` seeds from ``first`` (default: the start of the report range).

    Raises InputError for seeds below the held-out ranges (training seeds), for a range that overlaps the tuning
    seeds unless ``allow_tuning``, and for one that straddles the two ranges."""
    checks.integer(clips, "clips", 2)  # the shuffled baseline pairs clips
    first = REPORT_SEEDS.start if first is None else first
    checks.integer(first, "--first-seed (lower seeds are training clips)", HELDOUT_FIRST_SEED)
    last = first + clips - 1
    for name, seeds in (("report", REPORT_SEEDS), ("tuning", TUNING_SEEDS)):
        if seeds.start <= first and last < seeds.stop:
            if name == "tuning" and not allow_tuning:
                raise InputError(
                    f"seeds {first}..{last} are tuning seeds ({TUNING_SEEDS.start}..{TUNING_SEEDS.stop - 1}, used "
                    f"while training and tuning the bundle); report on seeds from {REPORT_SEEDS.start}, or allow "
                    "tuning seeds explicitly (--allow-tuning-seeds)"
                )
            return SeedRange(first, clips, name)
    raise InputError(
        f"seeds {first}..{last} must lie inside one range: tuning {TUNING_SEEDS.start}..{TUNING_SEEDS.stop - 1} or "
        f"report {REPORT_SEEDS.start}..{REPORT_SEEDS.stop - 1}"
    )
