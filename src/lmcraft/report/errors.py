"""Where the model goes wrong: the confusion matrix, per-class precision / recall / F1 with intervals, and
the mistakes it was surest of (the first place to look for label noise or a systematic blind spot)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lmcraft.metrics.bootstrap import bootstrap_interval
from lmcraft.metrics.classification import classification_metrics
from lmcraft.report.scored import Scored


def _recall_of(label: int):  # recall of one class as a metric of (gold, pred)
    def recall(gold: np.ndarray, pred: np.ndarray) -> float:
        mask = gold == label
        return float(np.mean(pred[mask] == label)) if mask.any() else 0.0
    return recall


def errors(scored: Scored, draws: np.ndarray, n_errors: int = 10) -> dict[str, Any]:
    summary = classification_metrics(scored.gold, scored.pred, scored.labels)
    for i, name in enumerate(scored.labels):
        interval = bootstrap_interval(_recall_of(i), scored.gold, scored.pred, draws=draws[:200])
        summary["per_class"][name]["recall_interval"] = [interval.low, interval.high]
    probs = scored.probs
    confidence = probs.max(axis=1)
    wrong = np.flatnonzero(~scored.correct)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:n_errors]
    mistakes = [{"index": int(i), "text": scored.texts[i], "gold": scored.labels[scored.gold[i]],
                 "predicted": scored.labels[scored.pred[i]], "confidence": float(confidence[i]),
                 "gold_probability": float(probs[i, scored.gold[i]])} for i in worst]
    return {"per_class": summary["per_class"], "confusion_matrix": summary["confusion_matrix"],
            "n_errors": len(wrong), "confident_mistakes": mistakes}
