"""Sequence classification, single texts or text pairs: a linear head on the [CLS] state (or the mean of
the states, or BERT's pooler)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lmcraft.data.batching import pad
from lmcraft.data.errors import DataError
from lmcraft.data.readers import Example, Fields, check_labels, read_examples
from lmcraft.model.heads import Model
from lmcraft.tasks.classify.options import ClassifyOptions
from lmcraft.tasks.contract import Batch, ClassScores, HeadSpec, Splits, Task, labelled_text
from lmcraft.tokenizer import TextTokenizer

Probabilities = Callable[[Batch], torch.Tensor]  # a batch -> (B, C) probabilities (a compiled package)


@dataclass
class Encoded:
    """One tokenized example."""

    ids: list[int]
    segment_ids: list[int] | None
    label: int  # -1 when unlabelled


@dataclass
class Classify(Task):
    """The classification task: encoding, batches, loss, metrics and decoding."""

    name: ClassVar[str] = "classify"
    description: ClassVar[str] = "sequence classification of single texts or pairs"
    extensions: ClassVar[tuple[str, ...]] = (".jsonl", ".json", ".csv", ".tsv")
    summary_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")
    Options: ClassVar[type] = ClassifyOptions
    options_section: ClassVar[str] = "classify"
    head_kinds: ClassVar[tuple[str, ...]] = ("classify",)
    compilable: ClassVar[bool] = True
    # what the head reads is worth searching; auto is BERT's pretrained pooler where the model has one
    search_space: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "task_options.classify.pooling": {"type": "categorical", "choices": ["auto", "cls", "mean"]}}

    labels: list[str]  # index -> label name; the order of the classifier's outputs
    pad_id: int
    head: str = "classify"
    metric: str = "accuracy"  # dev metric that picks the best checkpoint: accuracy or macro_f1
    pooling: str = "cls"  # what the head reads: the first token's state ("cls") or the mean ("mean")
    greater_is_better: bool = True
    pad_to: int = 0  # pad every batch to this many tokens; 0: to its longest text (the plain path of benchmarks)
    temperature: float = 1.0  # probabilities are softmax(logits / T); set from calibration.json, not the head

    def __post_init__(self) -> None:
        if self.pooling not in ("auto", "cls", "mean", "pooler"):
            raise ValueError(f"pooling must be auto, cls, mean or pooler, not {self.pooling!r}")
        if self.metric not in ("accuracy", "macro_f1"):
            raise ValueError(f"classification selects on 'accuracy' or 'macro_f1', not {self.metric!r}")
        self.label_ids = {name: i for i, name in enumerate(self.labels)}

    # -- data ------------------------------------------------------------------------------------------------

    @classmethod
    def read(cls, path: Path, fields: Fields, *, labelled: bool = True) -> list[Example]:
        return read_examples(path, fields, labelled=labelled)

    @classmethod
    def texts(cls, examples: Sequence[Example]) -> list[str]:
        return [t for ex in examples for t in (ex.text, ex.pair) if t is not None]

    @classmethod
    def for_data(cls, splits: Splits, files: dict[str, Path], tokenizer: TextTokenizer, options: ClassifyOptions, *,
                 metric: str, fields: Fields) -> Classify:
        labels = sorted({ex.label for ex in splits["train"]})
        if len(labels) < 2:
            raise DataError(files["train"], f"training data has {len(labels)} distinct label(s); need at least 2",
                            field=fields.label_field)
        task = cls(labels, tokenizer.pad_id, metric=metric or "accuracy", pooling=options.pooling)
        for split in ("dev", "test"):
            if split in splits:
                task.check(files[split], splits[split], fields)
        return task

    def check(self, path: Path, examples: Sequence[Any], fields: Fields) -> None:
        check_labels(path, examples, self.labels, fields.label_field)

    @classmethod
    def parse_input(cls, value: str | dict[str, Any], fields: Fields, line: int = 0) -> Example:
        pair = value.get(fields.pair_field) if isinstance(value, dict) and fields.pair_field else None
        label = value.get(fields.label_field) if isinstance(value, dict) else None
        return Example(labelled_text(value, fields.text_field), None if label is None else str(label),
                       None if pair is None else str(pair), line)

    # -- the saved head ----------------------------------------------------------------------------------------

    def head_spec(self) -> HeadSpec:
        return HeadSpec("classify", self.name, {"n_labels": len(self.labels), "labels": list(self.labels),
                                                "pooling": self.pooling})

    @classmethod
    def from_spec(cls, spec: HeadSpec, pad_id: int) -> Classify:
        return cls(list(spec.settings["labels"]), pad_id, pooling=str(spec.settings.get("pooling", "cls")))

    def attach(self, model: Model, pretrained: dict[str, dict[str, torch.Tensor]]) -> None:
        """Add the head; ``pooling="auto"`` reads BERT's pooler when the checkpoint has a pretrained one (which
        then starts the head's pooler), else the first token."""
        if self.pooling == "auto":
            self.pooling = "pooler" if "pooler" in pretrained else "cls"
        super().attach(model, pretrained)
        if self.pooling == "pooler" and "pooler" in pretrained:
            model.heads[self.head].pooler.load_state_dict(pretrained["pooler"])

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

    # -- use -------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def probabilities(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[Example], *, max_len: int,
                      batch_size: int = 128, progress: bool = False, chunk_batches: int = 16,
                      compiled: Probabilities | None = None,
                      log: bool = False) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Yields (indices, probabilities (n, C)) chunk by chunk, in the order of ``examples``: softmax(logits /
        T), or its log with ``log``.

        A chunk of ``chunk_batches`` batches is tokenized in one parallel call, its examples sorted by length
        so that each batch pads little, and its results put back in order: memory stays bounded by the chunk
        while most of the padding disappears. ``compiled`` (an ahead-of-time package, ``lmcraft compile``)
        computes the probabilities of a batch in place of the model.
        """
        if model.training:  # eval() walks every module: a tenth of a millisecond, per call of a one-text server
            model.eval()
        chunk = batch_size * chunk_batches
        bar = tqdm(total=len(examples), desc="predict", leave=False, disable=None) if progress else None
        for start in range(0, len(examples), chunk):
            idx = list(range(start, min(start + chunk, len(examples))))
            items = self.encode(tokenizer, [examples[i] for i in idx], max_len)
            order = sorted(range(len(items)), key=lambda j: len(items[j].ids))
            probs = torch.empty(len(items), len(self.labels))
            for first in range(0, len(order), batch_size):
                rows = order[first : first + batch_size]
                batch = self.collate([items[j] for j in rows])
                probs[rows] = self._scores(model, batch, compiled, log=log)
            if bar is not None:
                bar.update(len(idx))
            yield idx, probs
        if bar is not None:
            bar.close()

    def _scores(self, model: Model, batch: Batch, compiled: Probabilities | None, *, log: bool) -> torch.Tensor:
        """softmax(logits / T) of a batch, or its log, (B, C). A compiled package returns softmax(logits), whose
        log differs from the logits by a constant per row, so dividing its log by T is the same scaling."""
        if compiled is not None:
            probs = compiled(batch)
            if self.temperature == 1.0 and not log:
                return probs
            logits = probs.clamp_min(1e-30).log()
        else:
            logits = self.logits(model, batch).float()
        logits = logits / self.temperature if self.temperature != 1.0 else logits
        return logits.log_softmax(-1) if log else logits.softmax(-1)

    def class_logits(self, model: Model, batch: Batch) -> torch.Tensor:
        return self.logits(model, batch)

    def set_temperature(self, temperature: float) -> None:
        if not temperature > 0:
            raise ValueError(f"a temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def class_log_probs(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[Example], *, max_len: int,
                        batch_size: int = 128, compiled: Probabilities | None = None,
                        **extra: Any) -> ClassScores:
        """log softmax(logits) (n, C) at T = 1, whatever temperature is set; the gold labels and texts."""
        temperature, self.temperature = self.temperature, 1.0
        try:
            out = torch.empty(len(examples), len(self.labels))
            for idx, log_probs in self.probabilities(model, tokenizer, examples, max_len=max_len,
                                                     batch_size=batch_size, compiled=compiled, log=True):
                out[idx] = log_probs
        finally:
            self.temperature = temperature
        return ClassScores(list(self.labels), out, [ex.label for ex in examples], [ex.text for ex in examples])

    def predict(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[Example], *, max_len: int,
                batch_size: int = 128, progress: bool = False,
                compiled: Probabilities | None = None) -> list[dict[str, Any]]:
        """{"text", "label", "probabilities"} per example (and "pair" for pairs)."""
        out: list[dict[str, Any]] = [{} for _ in examples]
        for idx, probs in self.probabilities(model, tokenizer, examples, max_len=max_len, batch_size=batch_size,
                                             progress=progress, compiled=compiled):
            for i, row in zip(idx, probs.tolist(), strict=True):
                best = max(range(len(self.labels)), key=row.__getitem__)
                pair = {"pair": examples[i].pair} if examples[i].pair is not None else {}
                out[i] = {"text": examples[i].text, **pair, "label": self.labels[best],
                          "probabilities": {name: round(p, 4) for name, p in zip(self.labels, row, strict=True)}}
        return out

    def test_report(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[Example], *, max_len: int,
                    batch_size: int = 128, progress: bool = False,
                    compiled: Probabilities | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Accuracy, macro-F1, per-class precision / recall and the confusion matrix; a record per example
        (text, gold label, predicted label and its probability)."""
        from lmcraft.metrics.classification import confusion_summary

        n = len(self.labels)
        confusion = np.zeros((n, n), dtype=np.int64)  # rows: true label, columns: predicted
        records: list[dict[str, Any]] = [{} for _ in examples]
        for idx, probs in self.probabilities(model, tokenizer, examples, max_len=max_len, batch_size=batch_size,
                                             progress=progress, compiled=compiled):
            for i, row in zip(idx, probs.tolist(), strict=True):
                p = max(range(n), key=row.__getitem__)
                confusion[self.label_ids[examples[i].label], p] += 1  # type: ignore[index]
                records[i] = {"text": examples[i].text, "label": examples[i].label, "predicted": self.labels[p],
                              "probability": round(row[p], 5)}
        return confusion_summary(confusion, self.labels), records

    @staticmethod
    def baseline(splits: Splits, files: dict[str, Path]) -> dict[str, Any]:
        from lmcraft.tasks.classify.baseline import tfidf_baseline

        return tfidf_baseline(splits["train"], splits["dev"], splits["test"])


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
