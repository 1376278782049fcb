"""Early stopping and best-checkpoint choice on a dev metric."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Tracks the best dev metric; ``should_stop`` after ``patience`` evaluations without improvement.

    ``patience`` 0 never stops early. An improvement must beat the best by more than ``min_delta``.
    """

    patience: int
    greater_is_better: bool = True
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0

    def update(self, value: float, step: int) -> bool:
        """Record one evaluation; True when it is the new best (the caller then saves ``best/``)."""
        if value != value:  # NaN never improves
            improved = False
        elif self.best is None:
            improved = True
        elif self.greater_is_better:
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience
