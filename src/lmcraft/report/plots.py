"""The report's figures as base64 PNG, to sit inline in the HTML (no files beside it, no network)."""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a label in a script the font lacks draws as boxes, not an error
        warnings.simplefilter("ignore")
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def confusion_png(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * n, 1.0 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    top = max(max(row) for row in matrix) or 1
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center",
                    color="white" if matrix[i][j] > top / 2 else "black", fontsize=9)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _png(fig)


def reliability_png(curves: dict[str, list[dict[str, float]]]) -> str:
    """Accuracy against confidence per bin, one line per calibration; the diagonal is perfect calibration."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for name, bins in curves.items():
        used = [b for b in bins if b["count"]]
        ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], marker="o", label=name)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def intervals_png(rows: Sequence[tuple[str, dict[str, float]]]) -> str:
    """A forest plot: each (name, {value, low, high}) as a point with its interval."""
    fig, ax = plt.subplots(figsize=(5, 0.5 + 0.35 * len(rows)))
    for y, (_, r) in enumerate(rows):
        ax.errorbar(r["value"], y, xerr=[[r["value"] - r["low"]], [r["high"] - r["value"]]], fmt="o", capsize=3)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("value with 95% bootstrap interval")
    return _png(fig)
