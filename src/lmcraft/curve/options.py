"""The options of ``lmcraft curve``: the points of the curve, and every fine-tuning option as the base of
each run."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmcraft.config import opt
from lmcraft.stage_options import FinetuneConfig

MODELS = ("pretrained", "scratch", "baseline")
# fine-tuning options the curve sets itself for every run: no flags of their own on `lmcraft curve` (its own
# --out is the curve's directory)
SET_BY_THE_CURVE = frozenset({"max_train_examples", "train_sample_seed", "baseline", "random_init", "seed"})


@dataclass
class CurveConfig:
    sizes: list[str] = opt(["200", "1000", "5000", "all"], "numbers of training labels, each drawn at random from "
                                                           "the train split per seed; all: the whole split")
    seeds: list[str] = opt(["0", "1", "2"], "seeds; each draws its own subset and initialises its own model")
    models: list[str] = opt(list(MODELS), "pretrained (--init fine-tuned), scratch (--init's architecture and "
                                          "tokenizer from random weights) and/or baseline (the task's classic "
                                          "model: TF-IDF + LR for classify)")
    min_steps: int = opt(300, "fewest optimiser steps of a run: a small subset gets more epochs (the best dev "
                              "checkpoint is kept), so that 200 labels are not 19 steps; it also raises a smaller "
                              "--max-steps")
    scratch_lr: float = opt(1e-3, "learning rate of the from-scratch model (a random encoder wants a larger one); "
                                  "0: the same --lr as the pretrained one")
    out: str = opt("runs/curve", "directory of the curve: curve.md, curve.png, curve.json, and each run in "
                                 "OUT/runs/ (a rerun skips the runs done there, and refuses other settings)")
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(baseline=False))

    def __post_init__(self) -> None:
        self.sizes, self.seeds, self.models = (list(dict.fromkeys(x)) for x in (self.sizes, self.seeds, self.models))
        if not self.sizes or not self.seeds:
            raise ValueError("--sizes and --seeds need at least one value each")
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown or not self.models:
            raise ValueError(f"--models takes {', '.join(MODELS)}; got {', '.join(unknown) or 'none'}")
        for size in self.sizes:
            if size != "all" and not (size.isdigit() and int(size) > 0):
                raise ValueError(f"--sizes takes positive numbers of labels or all; got {size!r}")
        for seed in self.seeds:
            if not seed.lstrip("-").isdigit() or int(seed) < 0:
                raise ValueError(f"--seeds takes numbers 0 or more; got {seed!r}")
        if self.min_steps < 0 or self.scratch_lr < 0:
            raise ValueError("--min-steps and --scratch-lr must be 0 or more")
