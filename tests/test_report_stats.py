"""The statistics of ``lmcraft report``: bootstrap intervals cover, paired tests detect a real lead, the
temperature fit finds the NLL minimum, and a calibrated Predictor keeps its labels."""

from __future__ import annotations

import numpy as np

from lmcraft.metrics.bootstrap import (
    accuracy,
    bootstrap_interval,
    macro_f1,
    mcnemar_exact,
    paired_bootstrap,
    resamples,
)
from lmcraft.metrics.calibration import expected_calibration_error, fit_temperature, nll, softmax


def test_the_95_percent_interval_covers_the_true_accuracy_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for rep in range(200):
        correct = rng.random(300) < 0.8
        gold = np.zeros(300, dtype=int)
        pred = np.where(correct, 0, 1)
        interval = bootstrap_interval(accuracy, gold, pred, draws=resamples(300, 1000, seed=rep))
        covered += interval.low <= 0.8 <= interval.high
    assert 0.92 <= covered / 200 <= 0.98


def test_macro_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 4, 500), rng.integers(0, 3, 500)
    assert abs(macro_f1(gold, pred) - f1_score(gold, pred, average="macro", zero_division=0)) < 1e-12


def test_paired_tests_see_a_real_lead_and_not_a_coin_flip() -> None:
    rng = np.random.default_rng(0)
    gold = np.zeros(1000, dtype=int)
    strong = np.where(rng.random(1000) < 0.85, 0, 1)
    weak = np.where(rng.random(1000) < 0.75, 0, 1)
    lead = paired_bootstrap(accuracy, gold, strong, weak)
    assert lead["difference"] > 0.05 and lead["low"] > 0 and lead["p_value"] < 0.01
    assert mcnemar_exact(strong == gold, weak == gold)["p_value"] < 0.001
    twin = np.where(rng.random(1000) < 0.85, 0, 1)
    assert mcnemar_exact(strong == gold, twin == gold)["p_value"] > 0.05 or \
        paired_bootstrap(accuracy, gold, strong, twin)["low"] < 0


def test_the_fitted_temperature_is_the_grid_minimum_and_keeps_the_argmax() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(2000, 3)) * 2
    gold = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])  # labels drawn from the true probabilities
    log_probs = np.log(softmax(3 * true_logits))  # a model three times too confident
    t = fit_temperature(log_probs, gold)
    step = 0.01
    grid = np.arange(0.05, 10, step)
    best = grid[np.argmin([nll(log_probs, gold, g) for g in grid])]
    assert abs(t - best) <= step and 2.5 < t < 3.5
    before, after = softmax(log_probs), softmax(log_probs, t)
    assert (before.argmax(1) == after.argmax(1)).all()
    assert expected_calibration_error(after, gold) < expected_calibration_error(before, gold)
