"""Settings of the classification task (``lmcraft finetune --task classify``)."""

from __future__ import annotations

from dataclasses import dataclass

from lmcraft.config import opt

POOLING_HELP = ("what the classifier reads: the first token's state (cls), the mean of all states (mean), BERT's "
                "pooler over the first (pooler), or auto: pooler when the initial model has a pretrained one, else cls")


@dataclass
class ClassifyOptions:
    pooling: str = opt("auto", POOLING_HELP)
