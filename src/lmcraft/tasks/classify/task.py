"""Sequence classification, single texts or text pairs: a linear head on the [CLS] state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmcraft.data.batching import pad
from lmcraft.data.readers import Example
from lmcraft.model.heads import Model
from lmcraft.tokenizer import TextTokenizer


@dataclass
class Encoded:
    """One tokenized example."""

    ids: list[int]
    segment_ids: list[int] | None
    label: int  # -1 when unlabelled


@dataclass
class Classify:
    """The classification task: encoding, batches, loss, metrics and decoding."""

    labels: list[str]  # index -> label name; the order of the classifier's outputs
    pad_id: int
    head: str = "classify"
    metric: str = "accuracy"  # dev metric that picks the best checkpoint: accuracy or macro_f1
    pooling: str = "cls"  # what the head reads: the first token's state ("cls") or the mean ("mean")
    greater_is_better: bool = True
    pad_to: int = 0  # pad every batch to this many tokens; 0: to its longest text (the plain path of benchmarks)

    def __post_init__(self) -> None:
        if self.metric not in ("accuracy", "macro_f1"):
            raise ValueError(f"classification selects on 'accuracy' or 'macro_f1', not {self.metric!r}")
        self.label_ids = {name: i for i, name in enumerate(self.labels)}

    def head_spec(self) -> dict[str, object]:
        return {"kind": "classify", "n_labels": len(self.labels), "labels": list(self.labels),
                "pooling": self.pooling}

    def encode(self, tokenizer: TextTokenizer, examples: Sequence[Example], max_len: int) -> list[Encoded]:
        texts = [ex.text for ex in examples]
        labels = [self.label_ids[ex.label] if ex.label is not None else -1 for ex in examples]
        if examples and examples[0].pair is not None:
            ids, segments = tokenizer.encode(texts, [ex.pair or "" for ex in examples], max_len=max_len)
            return [Encoded(i, s, y) for i, s, y in zip(ids, segments, labels, strict=True)]
        ids = tokenizer.encode(texts, max_len=max_len)
        return [Encoded(i, None, y) for i, y in zip(ids, labels, strict=True)]  # type: ignore[arg-type]

    def collate(self, items: Sequence[Encoded], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        ids, padding_mask = pad([it.ids for it in items], self.pad_id, to=self.pad_to)
        batch = {"input_ids": ids, "padding_mask": padding_mask,
                 "labels": torch.tensor([it.label for it in items], dtype=torch.long)}
        if items[0].segment_ids is not None:
            batch["segment_ids"], _ = pad([it.segment_ids or [] for it in items], 0, to=self.pad_to)
        return batch

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["labels"].shape[0])

    def logits(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        head = model.heads[self.head]
        hidden = model(batch["input_ids"], batch.get("padding_mask"), batch.get("segment_ids"),
                       first_only=head.reads_first_only)  # (B, T, D), or (B, 1, D) when pooled on [CLS]
        return head(hidden, batch.get("padding_mask"))  # (B, C)

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch).float(), batch["labels"], reduction="sum")

    def new_metrics(self) -> ClassifyMetrics:
        return ClassifyMetrics(self)


class ClassifyMetrics:
    """Accumulates a confusion matrix batch by batch; keeps no logits."""

    def __init__(self, task: Any) -> None:  # any task with labels and logits(model, batch) -> (B, C)
        self.task = task
        n = len(task.labels)
        self.confusion = torch.zeros(n, n, dtype=torch.long)  # rows: true label, columns: predicted
        self.loss = 0.0

    @torch.no_grad()
    def update(self, model: Model, batch: dict[str, torch.Tensor]) -> None:
        self.add(self.task.logits(model, batch), batch["labels"])

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count one batch: logits (B, C), gold label ids (B,)."""
        logits = logits.float()
        self.loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        n = len(self.task.labels)
        index = (labels * n + logits.argmax(-1)).cpu()  # (B,) cell of the confusion matrix
        self.confusion += torch.bincount(index, minlength=n * n).view(n, n)

    def reduce(self, sum_tensor: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the counts of all processes (each evaluated its own share of the data)."""
        self.confusion = sum_tensor(self.confusion)
        self.loss = float(sum_tensor(torch.tensor([self.loss], dtype=torch.float64)))

    def compute(self) -> dict[str, float]:
        from lmcraft.metrics.classification import confusion_summary

        summary = confusion_summary(self.confusion.numpy(), self.task.labels)
        total = max(int(self.confusion.sum()), 1)
        return {"accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"], "loss": self.loss / total}
