"""Printable reports of test metrics: the full classification report (per-class precision / recall and the
confusion matrix) or one metric a line."""

from __future__ import annotations

from typing import Any

from lmcraft.metrics.classification import format_confusion

TABLES = ("per_class", "confusion_matrix")  # parts of a classification report that are not single numbers


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


def format_test(metrics: dict[str, Any], *, brief: bool = False) -> str:
    """A test report: the full classification report when the metrics hold its tables (unless ``brief``),
    else one number a line."""
    if not brief and all(key in metrics for key in TABLES):
        return format_report(metrics)
    return format_metrics({k: v for k, v in metrics.items() if k not in TABLES})
