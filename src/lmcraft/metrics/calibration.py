"""Calibration of a classifier's probabilities: expected calibration error, the reliability diagram's bins,
and temperature scaling.

- ECE (Guo et al. 2017, "On Calibration of Modern Neural Networks"): the examples are put into 15
  equal-width bins of their top probability (confidence); ECE is the sum over bins of the bin's share of
  examples times |accuracy - mean confidence| in it.
- Temperature scaling (same paper): one scalar T > 0 divides the logits, softmax(z / T), fitted to minimise
  the negative log-likelihood of held-out (dev) labels. The argmax, hence accuracy, does not change. It is
  fitted from log-probabilities: log softmax(z) differs from z by a constant per row, so softmax(log p / T)
  = softmax(z / T). The search is a bounded scalar minimisation over log T (NLL is smooth in log T).
"""

from __future__ import annotations

import numpy as np

N_BINS = 15
T_RANGE = (0.05, 20.0)  # temperatures the fit considers


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> list[dict[str, float]]:
    """Per equal-width bin of confidence ((0, 1/n], ... ]): its count, accuracy and mean confidence."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                     "accuracy": float(correct[mask].mean()) if count else 0.0,
                     "confidence": float(confidence[mask].mean()) if count else 0.0})
    return bins


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE of probabilities (n, C) against gold ids (n,), with ``n_bins`` equal-width bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == gold
    n = len(gold)
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"])
                     for b in reliability_bins(confidence, correct, n_bins) if b["count"]))


def softmax(log_probs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(log p / T), rows (n, C)."""
    z = log_probs / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(log_probs: np.ndarray, gold: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the gold labels under softmax(log p / T)."""
    z = log_probs / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(gold)), gold]))


def fit_temperature(log_probs: np.ndarray, gold: np.ndarray) -> float:
    """The T in ``T_RANGE`` minimising the NLL of ``gold`` under softmax(log_probs / T)."""
    from scipy.optimize import minimize_scalar

    log_probs = np.maximum(np.asarray(log_probs, dtype=np.float64), -1e4)  # log 0 of a saturated softmax
    result = minimize_scalar(lambda log_t: nll(log_probs, gold, float(np.exp(log_t))),
                             bounds=tuple(np.log(T_RANGE)), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(result.x))
