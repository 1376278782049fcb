"""Metrics on slices of the data: by text length (quartiles of the characters) and by any field of the data
file. An average hides the slice where the model fails; the worst slice with enough examples is named."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmcraft.metrics.bootstrap import accuracy, bootstrap_interval, resamples
from lmcraft.report.scored import Scored

MIN_SLICE = 20  # slices smaller than this are shown but never called the worst: their intervals are too wide
MAX_VALUES = 12  # a field with more distinct values keeps its most frequent ones, the rest as "(other)"


def length_buckets(texts: Sequence[str]) -> list[str]:
    """Each text's bucket by character length: the quartiles of this file."""
    lengths = np.array([len(t) for t in texts])
    edges = np.unique(np.percentile(lengths, [25, 50, 75]).round().astype(int))
    names, low = [], 0
    for edge in edges:
        names.append(f"{low}–{edge} chars")
        low = edge + 1
    names.append(f"≥ {low} chars")
    return [names[int(np.searchsorted(edges, n, side="left"))] for n in lengths]


def _groups(values: Sequence[str]) -> list[str]:
    keep = {v for v, _ in Counter(values).most_common(MAX_VALUES)}
    return [v if v in keep else "(other)" for v in values]


def slice_table(scored: Scored, values: Sequence[str], *, n_boot: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    values = np.array(values, dtype=object)
    for value in sorted(set(values.tolist()), key=str):
        idx = np.flatnonzero(values == value)
        gold, pred = scored.gold[idx], scored.pred[idx]
        interval = bootstrap_interval(accuracy, gold, pred, draws=resamples(len(idx), n_boot, seed))
        rows.append({"value": str(value), "n": len(idx), "accuracy": interval.to_json()})
    return rows


def slices(scored: Scored, fields: dict[str, Sequence[str]], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """{slice name: rows} for text length and each field in ``fields`` (one value per example), and the worst."""
    tables = {"text length": slice_table(scored, length_buckets(scored.texts), n_boot=n_boot, seed=seed)}
    for name, values in fields.items():
        tables[name] = slice_table(scored, _groups([str(v) for v in values]), n_boot=n_boot, seed=seed)
    candidates = [(row["accuracy"]["value"], name, row) for name, rows in tables.items() for row in rows
                  if row["n"] >= MIN_SLICE]
    worst = None
    if candidates:
        value, name, row = min(candidates, key=lambda c: c[0])
        worst = {"slice": name, "value": row["value"], "n": row["n"], "accuracy": value,
                 "overall_accuracy": float(scored.correct.mean())}
        row["worst"] = True
    return {"tables": tables, "worst": worst, "min_slice": MIN_SLICE}
