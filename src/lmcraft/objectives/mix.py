"""Pretraining on a mix of corpora, with held-out MLM loss reported for each one.

Continued pretraining on a domain corpus makes a model forget general text. Replaying a share of general
text limits that (Gururangan et al. 2020 adapt; replay is the classic remedy for forgetting). To see either
effect, every corpus keeps its own dev blocks and its own metrics, ``domain/loss`` and ``general/loss``.
The checkpoint is selected on the first corpus's loss (the domain's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmcraft.model.heads import Model
from lmcraft.objectives.mlm import MaskedLM


@dataclass
class Sourced:
    """A packed block and the index of the corpus it comes from."""

    source: int
    block: Any  # list[int] or WordBlock

    def __len__(self) -> int:
        return len(self.block)


class CorpusMix:
    """The MLM objective over blocks from several named corpora."""

    def __init__(self, objective: MaskedLM, names: Sequence[str]) -> None:
        self.objective = objective
        self.names = list(names)
        self.head = objective.head
        self.metric = f"{self.names[0]}/loss"
        self.greater_is_better = False

    def collate(self, items: Sequence[Sourced], generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = self.objective.collate([it.block for it in items], generator)
        batch["source"] = torch.tensor([it.source for it in items])  # (B,)
        return batch

    def split_batch(self, indices: Sequence[int], items: Sequence[Sourced]) -> list[list[int]]:
        """Evaluation batches hold one corpus's blocks, so that each corpus gets its own loss."""
        by_source: dict[int, list[int]] = {}
        for i in indices:
            by_source.setdefault(items[i].source, []).append(i)
        return list(by_source.values())

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return self.objective.n_targets(batch)

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.objective.loss_sum(model, batch)

    def new_metrics(self) -> MixMetrics:
        return MixMetrics(self)


class MixMetrics:
    def __init__(self, mix: CorpusMix) -> None:
        self.mix = mix
        self.parts = [mix.objective.new_metrics() for _ in mix.names]

    def update(self, model: Model, batch: dict[str, torch.Tensor]) -> None:
        self.parts[int(batch["source"][0])].update(model, batch)

    def reduce(self, sum_tensor: Callable[[torch.Tensor], torch.Tensor]) -> None:
        for part in self.parts:
            part.reduce(sum_tensor)

    def compute(self) -> dict[str, float]:
        return {f"{name}/{key}": value for name, part in zip(self.mix.names, self.parts, strict=True)
                for key, value in part.compute().items()}
