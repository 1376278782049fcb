"""A model's predictions on a labelled file as arrays: what every section of the report reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lmcraft.inference.predictor import Predictor
from lmcraft.metrics.calibration import softmax


@dataclass
class Scored:
    """Class scores of n examples: gold ids, log-probabilities at T = 1, texts, and the temperature applied."""

    labels: list[str]  # class names, the columns of log_probs
    log_probs: np.ndarray  # (n, C), uncalibrated
    gold: np.ndarray  # (n,) class ids
    texts: list[str]
    temperature: float = 1.0  # the calibration the probabilities use (1: none)

    @property
    def probs(self) -> np.ndarray:
        """softmax(log p / T), (n, C)."""
        return softmax(self.log_probs, self.temperature)

    @property
    def pred(self) -> np.ndarray:
        return self.log_probs.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.gold

    def __len__(self) -> int:
        return len(self.gold)


def score(predictor: Predictor, examples: list[Any], *, batch_size: int = 64) -> Scored | None:
    """The class scores of labelled ``examples``, or None when the model's head scores no fixed set of classes."""
    scores = predictor.class_log_probs(examples, batch_size=batch_size)
    if scores is None:
        return None
    ids = {name: i for i, name in enumerate(scores.labels)}
    unlabelled = [i for i, g in enumerate(scores.gold) if g is None]
    if unlabelled:
        raise ValueError(f"{len(unlabelled)} examples have no label (the first is example {unlabelled[0] + 1}); "
                         "a report needs a labelled file")
    return Scored(list(scores.labels), scores.log_probs.double().numpy(),
                  np.array([ids[str(g)] for g in scores.gold]), list(scores.texts),
                  predictor.temperature or 1.0)


def from_labels(path: str, reference: Scored) -> Scored:
    """The labels in ``path`` (JSONL, ``{"label": ...}`` a line, one per example of ``reference``, in order) as a
    Scored whose probabilities are one-hot: enough for accuracy, F1 and the paired tests, not for calibration."""
    from lmcraft.data.readers import records

    index = {name: i for i, name in enumerate(reference.labels)}
    predicted = []
    for line, record in records(path, "utf-8"):
        label = record.get("label")
        if str(label) not in index:
            raise ValueError(f"{path}:{line}: field 'label': {label!r} is not one of the model's classes "
                             f"{reference.labels}")
        predicted.append(index[str(label)])
    if len(predicted) != len(reference):
        raise ValueError(f"{path}: {len(predicted)} predictions for {len(reference)} examples; one a line, in order")
    log_probs = np.full((len(predicted), len(reference.labels)), -1e9)
    log_probs[np.arange(len(predicted)), predicted] = 0.0
    return Scored(reference.labels, log_probs, reference.gold, reference.texts)
