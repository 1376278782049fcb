"""Entity-level precision, recall and F1 from counts, as seqeval counts them: an entity is right when its type
and both edges are, so the counts are of whole entities (true positives, predicted, gold)."""

from __future__ import annotations


def precision_recall_f1(tp: float, predicted: float, gold: float) -> dict[str, float]:
    """{precision, recall, f1} of ``tp`` right entities among ``predicted`` ones and ``gold`` ones; 0 where a
    denominator is 0."""
    precision = tp / predicted if predicted else 0.0
    recall = tp / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
