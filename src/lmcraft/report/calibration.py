"""Calibration: does a confidence of 0.9 mean right nine times in ten?

ECE with 15 equal-width bins and the reliability diagram (Guo et al. 2017), before and after temperature
scaling. With a dev file the report fits T there (never on the test file it reports on) and stores it in
the model directory's ``calibration.json``, which the ``Predictor`` applies from then on: ``lmcraft
predict``, ``evaluate`` and ``serve`` give softmax(logits / T). The argmax, hence accuracy, does not move.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from lmcraft.metrics.calibration import expected_calibration_error, fit_temperature, nll, reliability_bins
from lmcraft.report.scored import Scored


def summary(scored: Scored) -> dict[str, Any]:
    probs = scored.probs
    return {"temperature": scored.temperature, "ece": expected_calibration_error(probs, scored.gold),
            "nll": nll(scored.log_probs, scored.gold, scored.temperature), "accuracy": float(scored.correct.mean()),
            "bins": reliability_bins(probs.max(axis=1), scored.correct)}


def calibration(scored: Scored, dev: Scored | None = None, *, dev_path: str | Path = "") -> dict[str, Any]:
    """ECE before (T = 1) and after (the temperature fitted on ``dev``, else the one stored with the model)."""
    before = summary(replace(scored, temperature=1.0))
    out: dict[str, Any] = {"before": before}
    if dev is not None:
        t = fit_temperature(dev.log_probs, dev.gold)
        out["fit"] = {"temperature": t, "dev": str(dev_path), "n_dev": len(dev),
                      "dev_nll_before": nll(dev.log_probs, dev.gold, 1.0),
                      "dev_nll_after": nll(dev.log_probs, dev.gold, t)}
    else:
        t = scored.temperature
    if t != 1.0:
        out["after"] = summary(replace(scored, temperature=t))
    return out
