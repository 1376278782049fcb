"""AdamW with no weight decay on biases and norms, and the linear warmup-then-decay schedule."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (Linear and embedding weights); leave biases and LayerNorm gains alone, since
    shrinking them towards zero is no regulariser (as in BERT)."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_norm = isinstance(module, nn.LayerNorm | nn.RMSNorm)
            (no_decay if is_norm or name == "bias" or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # foreach updates every parameter tensor in a few fused kernels instead of one loop per tensor.
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                             foreach=True)


def warmup_linear(step: int, *, warmup: int, total: int) -> float:
    """Multiplier of the peak learning rate: 0 → 1 over ``warmup`` steps, then 1 → 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def build_schedule(optimizer: torch.optim.Optimizer, *, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_linear(s, warmup=warmup, total=total))
