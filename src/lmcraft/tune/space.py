"""The search space of ``lmcraft tune``, as data: a mapping from a dotted option path of ``FinetuneConfig``
(``train.lr``, ``task_options.classify.pooling``) to a dimension:

    {"type": "float", "low": 1e-5, "high": 1e-3, "log": true}   # optuna's suggest_float
    {"type": "int", "low": 4, "high": 16, "step": 4}             # suggest_int
    {"type": "categorical", "choices": [8, 16, 32]}              # suggest_categorical

The shared dimensions are ``SHARED`` below; a task adds its own through its ``search_space`` attribute
(found through the registry, never by name). A ``--space FILE.yaml`` in the same format replaces
dimensions, fixes one with a plain value (``train.epochs: 2``) or removes one with ``null``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lmcraft.config import from_dict, to_dict
from lmcraft.stage_options import FinetuneConfig
from lmcraft.tasks.contract import Task

Dimension = Mapping[str, Any]

# Why these ranges: fine-tuning learning rates that work span about two decades (BERT's paper tried 2e-5 to
# 5e-5 for a large model; small models and classifiers trained from scratch want 1e-4 and more), so the rate
# is searched on a log scale. A few epochs, a short warm-up, light weight decay and dropout are the usual
# recipe; the search tells how much of each this data wants.
SHARED: dict[str, Dimension] = {
    "train.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "train.batch_size": {"type": "categorical", "choices": [8, 16, 32]},
    "train.epochs": {"type": "float", "low": 1.0, "high": 5.0, "step": 1.0},
    "train.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
    "train.weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.3},
}
# With --lora-rank: the adapters' rank, and the higher rates that adapters want.
LORA: dict[str, Dimension] = {
    "lora.lora_rank": {"type": "categorical", "choices": [4, 8, 16]},
    "train.lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
}
KINDS = {"float": ("low", "high"), "int": ("low", "high"), "categorical": ("choices",)}


def load_space(path: str | Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a search space is a mapping from option paths to dimensions")
    return data


def search_space(task: type[Task], base: FinetuneConfig, override: Mapping[str, Any] | None = None
                 ) -> tuple[dict[str, Dimension], dict[str, Any]]:
    """(dimensions to search, fixed values) for fine-tuning ``task`` from ``base``. Dimensions that cannot act
    are left out: the epochs when ``--max-steps`` sets the length, dropout when ``--init`` brings a model with
    its own."""
    space: dict[str, Any] = {**SHARED, **task.search_space}
    if base.lora.lora_rank > 0:
        space.update(LORA)
    if base.train.max_steps > 0:
        del space["train.epochs"]
    if base.start.init:
        del space["model.dropout"]
    space.update(override or {})
    dims, fixed = {}, {}
    for key, value in space.items():
        _check_path(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            dims[key] = _checked(key, value)
        else:
            fixed[key] = value
    return dims, fixed


def _check_path(key: str) -> None:
    node: Any = to_dict(FinetuneConfig())
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"search space: {key!r} is not an option of fine-tuning (e.g. train.lr, "
                             "task_options.classify.pooling)")
        node = node[part]


def _checked(key: str, dim: Mapping[str, Any]) -> Dimension:
    kind = dim.get("type")
    if kind not in KINDS or any(k not in dim for k in KINDS[kind]):
        raise ValueError(f"search space: {key}: a dimension is {{type: float|int, low, high[, log, step]}} or "
                         f"{{type: categorical, choices}}, got {dict(dim)}")
    return dim


def suggest(trial: Any, dims: Mapping[str, Dimension]) -> dict[str, Any]:
    """One value per dimension, drawn by ``trial`` (an optuna Trial)."""
    params: dict[str, Any] = {}
    for key, d in dims.items():
        if d["type"] == "categorical":
            params[key] = trial.suggest_categorical(key, list(d["choices"]))
        elif d["type"] == "int":
            params[key] = trial.suggest_int(key, int(d["low"]), int(d["high"]), step=int(d.get("step", 1)),
                                            log=bool(d.get("log", False)))
        else:
            params[key] = trial.suggest_float(key, float(d["low"]), float(d["high"]), step=d.get("step"),
                                              log=bool(d.get("log", False)))
    return params


def configure(base: FinetuneConfig, values: Mapping[str, Any], **top: Any) -> FinetuneConfig:
    """``base`` with ``values`` (dotted paths) and ``top`` (train.seed=..., out=...) set; checked as a recipe is."""
    tree = to_dict(base)
    for key, value in {**values, **top}.items():
        node = tree
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return from_dict(FinetuneConfig, tree)
