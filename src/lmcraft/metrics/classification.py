"""Classification metrics through scikit-learn: accuracy, macro-F1, per-class precision / recall / F1,
and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """All metrics for integer label ids ``y_true`` / ``y_pred``; ``labels`` names the ids."""
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {"labels": list(labels),
                             "matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist()},
        "n": len(y_true),
    }


def confusion_summary(confusion: np.ndarray, labels: Sequence[str]) -> dict:
    """The same metrics from an accumulated confusion matrix (rows true, columns predicted)."""
    n = len(labels)
    pairs = np.arange(n * n)
    counts = confusion.reshape(-1)
    y_true = np.repeat(pairs // n, counts)
    y_pred = np.repeat(pairs % n, counts)
    if len(y_true) == 0:
        return {"accuracy": 0.0, "macro_f1": 0.0, "per_class": {}, "confusion_matrix": {}, "n": 0}
    return classification_metrics(y_true, y_pred, labels)


def format_confusion(matrix: dict) -> str:
    """A small text table of a confusion matrix (rows: true label, columns: predicted)."""
    labels, rows = matrix["labels"], matrix["matrix"]
    width = max(6, *(len(x) for x in labels)) + 2
    lines = ["true\\pred".ljust(width) + "".join(x.rjust(width) for x in labels)]
    for name, row in zip(labels, rows, strict=True):
        lines.append(name.ljust(width) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)
