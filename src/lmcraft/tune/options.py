"""The options of ``lmcraft tune``: the search's own, and every fine-tuning option as the base of each trial."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmcraft.config import budget_seconds, opt
from lmcraft.stage_options import FinetuneConfig


@dataclass
class TuneConfig:
    budget: str = opt("30m", "time for the whole study (90s, 30m, 2h): no trial starts once the time spent plus the "
                             "estimated final retraining would pass it")
    trials: int = opt(0, "at most this many finished trials in the study, those of earlier runs (--resume) "
                         "included; 0: as many as the budget allows")
    space: str = opt("", "a YAML file that changes the search space: OPTION.PATH: {type: float, low, high, log}, "
                         "{type: categorical, choices: [...]}, a fixed value, or null to leave it out "
                         "(docs/tuning.md)")
    final_seeds: int = opt(3, "retrain the best configuration with this many seeds and report mean ± std "
                              "(0: keep the best trial's model as it is)")
    prune: bool = opt(True, "stop a trial at a dev evaluation where it lies below the median of the trials "
                            "before it at that step; --no-prune runs every trial to its end")
    prune_after: int = opt(2, "finished trials the median pruner waits for before stopping weak trials early")
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(out="runs/tune", baseline=False))

    def __post_init__(self) -> None:
        budget_seconds(self.budget)
        if self.trials < 0 or self.final_seeds < 0 or self.prune_after < 0:
            raise ValueError("--trials, --final-seeds and --prune-after must be 0 or more")
