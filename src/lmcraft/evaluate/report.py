"""Evaluate and use a saved classifier: streaming predictions, full metrics, a printable report."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lmcraft.data.readers import Example
from lmcraft.metrics.classification import confusion_summary, format_confusion
from lmcraft.model.heads import Model
from lmcraft.tasks.classify.task import Classify
from lmcraft.tokenizer import TextTokenizer


def classify_task(model: Model, head: str | None = None) -> Classify:
    """The classification task of ``model``'s head named ``head`` (default: its first classification head)."""
    names = [head] if head else [n for n, spec in model.head_specs.items() if spec.get("kind") == "classify"]
    spec = model.head_specs.get(names[0]) if names else None
    if spec is None or spec.get("kind") != "classify":
        raise ValueError(f"this model has no classification head{' ' + repr(head) if head else ''} (heads: "
                         f"{sorted(model.head_specs)}); fine-tune it first with `lmcraft finetune`")
    return Classify(list(spec["labels"]), pad_id=model.cfg.pad_id, head=names[0])  # type: ignore[arg-type]


@torch.inference_mode()
def predict_batches(
    model: Model, tokenizer: TextTokenizer, examples: Sequence[Example], *, batch_size: int = 128,
    progress: bool = True, chunk_batches: int = 16, head: str | None = None,
    compiled: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yields (indices, probabilities (n, C)) chunk by chunk, in the order of ``examples``.

    A chunk of ``chunk_batches`` batches is tokenized in one parallel call, its examples sorted by length
    so that each batch pads little, and its results put back in order: memory stays bounded by the chunk
    while most of the padding disappears. ``compiled`` (from ``lmcraft.serve.compiled.load_compiled``)
    computes the probabilities of a batch in place of the model.
    """
    task = classify_task(model, head)
    if model.training:  # eval() walks every module: a tenth of a millisecond, per call of a one-text server
        model.eval()
    chunk = batch_size * chunk_batches
    bar = tqdm(total=len(examples), desc="predict", leave=False, disable=None) if progress else None
    for start in range(0, len(examples), chunk):
        idx = list(range(start, min(start + chunk, len(examples))))
        items = task.encode(tokenizer, [examples[i] for i in idx], model.input_tokens)
        order = sorted(range(len(items)), key=lambda j: len(items[j].ids))
        probs = torch.empty(len(items), len(task.labels))
        for first in range(0, len(order), batch_size):
            rows = order[first : first + batch_size]
            batch = task.collate([items[j] for j in rows])
            probs[rows] = compiled(batch) if compiled is not None else task.logits(model, batch).float().softmax(-1)
        if bar is not None:
            bar.update(len(idx))
        yield idx, probs
    if bar is not None:
        bar.close()


def evaluate_examples(
    model: Model, tokenizer: TextTokenizer, examples: Sequence[Example], *, predictions: str | Path | None = None,
    batch_size: int = 128, progress: bool = True, head: str | None = None,
    compiled: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall and confusion matrix; predictions (if a path is given)
    are written line by line as they are made, and only the confusion counts are kept."""
    task = classify_task(model, head)
    n = len(task.labels)
    confusion = np.zeros((n, n), dtype=np.int64)  # rows: true label, columns: predicted
    out = None
    if predictions is not None:
        predictions = Path(predictions)
        out = predictions.with_name(predictions.name + ".tmp").open("w", encoding="utf-8")
    try:
        for idx, probs in predict_batches(model, tokenizer, examples, batch_size=batch_size, progress=progress,
                                          head=task.head, compiled=compiled):
            predicted = probs.argmax(-1).tolist()
            for i, p, row in zip(idx, predicted, probs.tolist(), strict=True):
                confusion[task.label_ids[examples[i].label], p] += 1  # type: ignore[index]
                if out is not None:
                    out.write(json.dumps({"text": examples[i].text, "label": examples[i].label,
                                          "predicted": task.labels[p], "probability": round(row[p], 5)},
                                         ensure_ascii=False) + "\n")
    finally:
        if out is not None:
            out.close()
    if predictions is not None:
        predictions.with_name(predictions.name + ".tmp").replace(predictions)
    return confusion_summary(confusion, task.labels)


def format_report(metrics: dict[str, Any]) -> str:
    lines = [f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   n={metrics['n']}", "",
             f"{'label':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<12}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>10}")
    lines += ["", format_confusion(metrics["confusion_matrix"])]
    return "\n".join(lines)


def format_metrics(metrics: dict[str, Any]) -> str:
    """One metric a line, for tasks whose report is a set of numbers (entity F1, micro-F1, EM)."""
    width = max(len(k) for k in metrics)
    return "\n".join(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}"
                     for k, v in metrics.items())
