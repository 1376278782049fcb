"""Multi-task learning: several tasks, each with its own head, on one shared backbone.

To the training loop a ``MultiTask`` is one more task. Every batch holds the items of one task (the
losses of different tasks count different things: sentences, entity tags), and the order of the batches
mixes the tasks by sampling:

- ``proportional``: all tasks' batches of one pass, shuffled together: each task's share of the batches
  is its share of the training items, and one epoch sees every item once;
- ``temperature``: shares ∝ n_k^(1/T) (T > 1 flattens them, as in multilingual T5), so small tasks are
  seen more often than their size alone would give; a task that runs out of batches starts a new pass.

The dev metrics of every task are reported as ``name/metric``; the checkpoint is selected on one task's
own metric or on the mean of all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmcraft.data.batching import epoch_batches
from lmcraft.model.heads import Model

SAMPLINGS = ("proportional", "temperature")


@dataclass
class MultiItem:
    task: int  # index of the task the item belongs to
    item: Any  # that task's own encoded item


class MultiTask:
    """A list of named tasks trained together; each task's ``head`` is renamed to the task's name."""

    def __init__(self, tasks: Sequence[tuple[str, Any]], *, sampling: str = "proportional",
                 temperature: float = 2.0, select: str = "mean") -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, not {sampling!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        names = [name for name, _ in tasks]
        if len(set(names)) != len(names) or len(names) < 2:
            raise ValueError(f"multi-task learning needs at least two tasks with distinct names, got {names}")
        if select != "mean" and select not in names:
            raise ValueError(f"select must be 'mean' or one of the tasks {names}, not {select!r}")
        for name, task in tasks:
            task.head = name
            if not task.greater_is_better:
                raise ValueError(f"task {name!r} selects on {task.metric!r}, where lower is better; multi-task "
                                 "selection takes metrics where higher is better")
        self.names = names
        self.tasks = [task for _, task in tasks]
        self.sampling, self.temperature, self.select = sampling, temperature, select
        self.metric = "mean" if select == "mean" else f"{select}/{self.tasks[names.index(select)].metric}"
        self.greater_is_better = True
        self._train_sizes: list[int] = []

    def encode(self, k: int, tokenizer: Any, examples: Sequence[Any], max_len: int) -> list[MultiItem]:
        """Task ``k``'s examples as items of the mix."""
        return [MultiItem(k, item) for item in self.tasks[k].encode(tokenizer, examples, max_len)]

    def set_train_items(self, items: Sequence[MultiItem]) -> None:
        """Training items must come task by task (all of task 0, then task 1, ...): their counts fix the mix."""
        sizes = [0] * len(self.tasks)
        previous = 0
        for it in items:
            if it.task < previous:
                raise ValueError("multi-task training items must be grouped by task, in task order")
            previous = it.task
            sizes[it.task] += 1
        self._train_sizes = sizes

    def shares(self) -> list[float]:
        """Each task's probability of supplying the next batch."""
        sizes = torch.tensor(self._train_sizes, dtype=torch.float64)
        weights = sizes if self.sampling == "proportional" else sizes ** (1.0 / self.temperature)
        return (weights / weights.sum()).tolist()

    def epoch_batches(self, n: int, batch_size: int, *, seed: int, epoch: int,
                      lengths: Sequence[int] | None = None) -> list[list[int]]:
        """One epoch's batches: as many as one pass over all items would give, each from one task, the
        tasks drawn by their shares. A function of (seed, epoch) alone, so runs resume exactly."""
        if sum(self._train_sizes) != n:
            raise ValueError("call set_train_items with the training items before training")
        starts = [sum(self._train_sizes[:k]) for k in range(len(self.tasks))]
        passes = [0] * len(self.tasks)

        def one_pass(k: int) -> list[list[int]]:
            size, start = self._train_sizes[k], starts[k]
            own = None if lengths is None else lengths[start : start + size]
            order = epoch_batches(size, batch_size, seed=seed + 7919 * k, epoch=epoch * 1000 + passes[k],
                                  lengths=own)
            passes[k] += 1
            return [[start + i for i in batch] for batch in order]

        queues = [one_pass(k) if size else [] for k, size in enumerate(self._train_sizes)]
        total = sum(len(q) for q in queues)
        g = torch.Generator().manual_seed(seed * 100_003 + epoch + 17)
        if self.sampling == "proportional":  # every task's batches once, in a random interleaving
            pooled = [b for q in queues for b in q]
            return [pooled[i] for i in torch.randperm(total, generator=g).tolist()]
        picks = torch.multinomial(torch.tensor(self.shares()), total, replacement=True, generator=g).tolist()
        batches = []
        for k in picks:
            if not queues[k]:
                queues[k] = one_pass(k)
            batches.append(queues[k].pop(0))
        return batches

    def split_batch(self, indices: Sequence[int], items: Sequence[MultiItem]) -> list[list[int]]:
        """Cut an evaluation batch where the task changes."""
        parts: list[list[int]] = []
        for i in indices:
            if parts and items[parts[-1][-1]].task == items[i].task:
                parts[-1].append(i)
            else:
                parts.append([i])
        return parts

    def collate(self, items: Sequence[MultiItem], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        k = items[0].task
        if any(it.task != k for it in items):
            raise ValueError("a multi-task batch must hold the items of one task")
        batch = self.tasks[k].collate([it.item for it in items], generator)
        batch["task_index"] = torch.tensor(k)
        return batch

    def _route(self, batch: dict[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor]]:
        k = int(batch["task_index"])
        return self.tasks[k], {key: v for key, v in batch.items() if key != "task_index"}

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        task, own = self._route(batch)
        return task.n_targets(own)

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        task, own = self._route(batch)
        return task.loss_sum(model, own)

    def new_metrics(self) -> MultiMetrics:
        return MultiMetrics(self)


class MultiMetrics:
    """Every task's own metrics, fed by its own batches."""

    def __init__(self, multi: MultiTask) -> None:
        self.multi = multi
        self.parts = [task.new_metrics() for task in multi.tasks]
        self.seen = [False] * len(multi.tasks)

    def update(self, model: Model, batch: dict[str, torch.Tensor]) -> None:
        k = int(batch["task_index"])
        self.parts[k].update(model, {key: v for key, v in batch.items() if key != "task_index"})
        self.seen[k] = True

    def reduce(self, sum_tensor: Callable[[torch.Tensor], torch.Tensor]) -> None:
        for part in self.parts:
            part.reduce(sum_tensor)

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        own = []
        for name, task, part in zip(self.multi.names, self.multi.tasks, self.parts, strict=True):
            values = part.compute()
            out.update({f"{name}/{key}": value for key, value in values.items()})
            own.append(values[task.metric])
        out["mean"] = sum(own) / len(own)
        return out
