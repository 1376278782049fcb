"""AdamW with no weight decay on biases and norms (plain SGD for sparse feature tables), and the linear
warmup-then-decay schedule, counted in steps or, for a run with a time budget, in seconds."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (Linear and embedding weights); leave biases and LayerNorm gains alone, since
    shrinking them towards zero is no regulariser (as in BERT). The parameters of a module that carries an
    ``sgd_lr`` attribute (a sparse feature table, model/ngrams.py) get a group of their own, trained by plain
    SGD without decay."""
    decay, no_decay = [], []
    sgd: list[dict] = []
    seen: set[int] = set()
    for module in model.modules():
        sgd_lr = getattr(module, "sgd_lr", None)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if sgd_lr is not None:
                sgd.append({"params": [p], "weight_decay": 0.0, "sgd_lr": float(sgd_lr)})
                continue
            is_norm = isinstance(module, nn.LayerNorm | nn.RMSNorm)
            (no_decay if is_norm or name == "bias" or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}, *sgd]


class AdamWAndSGD(torch.optim.AdamW):
    """AdamW, except for the parameter groups with an ``sgd_lr``: those take a plain SGD step,
    ``p -= sgd_lr * (lr / initial_lr) * grad``, so they follow the same schedule as the rest. Their gradients
    may be sparse (AdamW takes none). One optimiser, so checkpoints, resumption and the schedule stay as they
    are; SGD keeps no state."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if closure is not None:
            raise ValueError("AdamWAndSGD takes no closure: compute the loss and gradients before step()")
        for group in self.param_groups:
            if "sgd_lr" not in group:
                continue
            peak = group.get("initial_lr", group["lr"])  # set by the schedule; the peak learning rate
            rate = group["sgd_lr"] * (group["lr"] / peak if peak > 0 else 0.0)
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-rate)
                    p.grad = None  # done: AdamW's step below skips a parameter without a gradient
        return super().step()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A checkpoint's state, except the SGD rates: those stay the model's (a resumed run may change
        tag.ngram_lr), as the rest of a group's settings stay the checkpoint's."""
        rates = [group.get("sgd_lr") for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, rate in zip(self.param_groups, rates, strict=True):
            if rate is not None:
                group["sgd_lr"] = rate


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # foreach updates every parameter tensor in a few fused kernels instead of one loop per tensor.
    return AdamWAndSGD(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=True)


def warmup_linear(step: int, *, warmup: int, total: int) -> float:
    """Multiplier of the peak learning rate: 0 → 1 over ``warmup`` steps, then 1 → 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def build_schedule(optimizer: torch.optim.Optimizer, *, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_linear(s, warmup=warmup, total=total))


def warmup_linear_share(share: float, *, warmup: float) -> float:
    """Multiplier of the peak learning rate at ``share`` (0 … 1) of a run: 0 → 1 over the first ``warmup``,
    then 1 → 0 at the end (and 0 after it)."""
    if share < warmup:
        return share / warmup
    return max(0.0, (1.0 - share) / (1.0 - warmup))


class TimeBudget:
    """The clock of a run with a time budget (Li et al. 2020, budgeted training): the learning rate follows
    the share of the training seconds spent rather than of the steps taken, so that it reaches zero when the
    time runs out, however fast the machine is. ``begin`` is the loop's start (less the seconds of earlier
    sessions of a resumed run); ``last_share`` is the share read at the latest schedule step."""

    def __init__(self, seconds: float, *, warmup: float) -> None:
        self.seconds, self.warmup = seconds, warmup
        self.begin = time.perf_counter()
        self.last_share = 0.0

    def share(self) -> float:
        return (time.perf_counter() - self.begin) / self.seconds

    def factor(self, _step: int) -> float:
        self.last_share = self.share()
        return warmup_linear_share(self.last_share, warmup=self.warmup)

    @property
    def spent(self) -> bool:
        """True once a schedule step found the time up (the learning rate it set is then zero)."""
        return self.last_share >= 1.0

    def schedule(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)
