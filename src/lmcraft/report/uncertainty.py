"""Every metric with a 95% percentile-bootstrap interval; other models compared on the same examples.

A difference between two models is "significant" here when the paired bootstrap interval of the
difference excludes 0 (and, for accuracy, McNemar's exact test gives p < 0.05): a lead that resampling
the test set can flip is a lead the test set does not establish.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from lmcraft.metrics.bootstrap import Metric, accuracy, bootstrap_interval, macro_f1, mcnemar_exact, paired_bootstrap
from lmcraft.report.scored import Scored

ALPHA = 0.05


def metrics_of(n_classes: int) -> dict[str, Metric]:
    return {"accuracy": accuracy, "macro_f1": partial(macro_f1, n_classes=n_classes)}


def intervals(scored: Scored, draws: np.ndarray) -> dict[str, dict[str, float]]:
    """{metric: {value, low, high}} on all of ``scored``; ``draws`` are the resampled indices."""
    return {name: bootstrap_interval(metric, scored.gold, scored.pred, draws=draws).to_json()
            for name, metric in metrics_of(len(scored.labels)).items()}


def compare(scored: Scored, name: str, other: Scored, other_name: str, draws: np.ndarray) -> dict[str, Any]:
    """``scored`` (the model reported on) against ``other`` on the same examples."""
    if other.labels != scored.labels or len(other) != len(scored):
        raise ValueError(f"{other_name} cannot be compared with {name}: its classes {other.labels} or its "
                         f"{len(other)} examples differ from {scored.labels} and {len(scored)}")
    paired = {metric_name: paired_bootstrap(metric, scored.gold, scored.pred, other.pred, draws=draws)
              for metric_name, metric in metrics_of(len(scored.labels)).items()}
    mcnemar = mcnemar_exact(scored.correct, other.correct)
    verdicts = {}
    for metric_name, d in paired.items():
        significant = (d["low"] > 0 or d["high"] < 0) and (metric_name != "accuracy" or mcnemar["p_value"] < ALPHA)
        if d["difference"] == 0:
            verdicts[metric_name] = "a tie"
        else:
            leader = name if d["difference"] > 0 else other_name
            verdicts[metric_name] = (f"{leader} leads by {abs(d['difference']):.4f}: "
                                     + ("significant" if significant else "not significant") + " at the 5% level")
        d["significant"] = bool(significant)
    return {"model": other_name, "metrics": intervals(other, draws), "paired": paired, "mcnemar": mcnemar,
            "verdicts": verdicts}
