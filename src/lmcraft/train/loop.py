"""The one training loop, used by every objective and task.

It knows nothing task-specific. A task (or objective) supplies:
- ``collate(items, generator) -> batch`` (a dict of tensors),
- ``n_targets(batch)`` (how many targets the batch's loss sums over),
- ``loss_sum(model, batch)`` (the loss summed over those targets),
- ``new_metrics()`` (an object with ``update(model, batch)`` and ``compute() -> dict``),
- ``metric`` and ``greater_is_better`` (what picks the best checkpoint).

Gradient accumulation divides every micro-batch's summed loss by the number of targets in the *whole*
accumulated batch, so that k micro-batches give the gradient of one big batch, also when micro-batches
hold different numbers of targets (masked tokens, sequences of different lengths).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lmcraft.config import TrainConfig
from lmcraft.data.batching import epoch_batches
from lmcraft.model.heads import Model
from lmcraft.train.early_stopping import EarlyStopping
from lmcraft.train.optim import build_optimizer, build_schedule


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive steps with a NaN or infinite loss."""


@dataclass
class TrainResult:
    steps: int  # optimiser steps taken
    best_step: int | None  # step of the best dev evaluation
    best_metrics: dict[str, float]  # dev metrics at that step
    stopped_early: bool  # True when the patience ran out
    seconds: float  # wall time of the loop
    history: list[dict[str, Any]] = field(default_factory=list)  # every dev evaluation


def total_steps(cfg: TrainConfig, n_examples: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = math.ceil(n_examples / (cfg.batch_size * cfg.grad_accum))
    return max(1, math.ceil(cfg.epochs * per_epoch))


def autocast(cfg: TrainConfig) -> Any:
    return torch.autocast("cpu", dtype=torch.bfloat16) if cfg.bf16 else nullcontext()


@torch.no_grad()
def evaluate(model: Model, task: Any, items: Sequence[Any], cfg: TrainConfig, *, desc: str = "eval") -> dict:
    """Metrics of ``task`` over ``items``, batch by batch. Random parts of collation (MLM masking) use a
    fixed seed, so that evaluations at different steps see the same inputs."""
    was_training = model.training
    model.eval()
    metrics = task.new_metrics()
    generator = torch.Generator().manual_seed(cfg.seed + 12345)
    for idx in tqdm(epoch_batches(len(items), cfg.eval_batch_size, seed=0, epoch=0, shuffle=False),
                    desc=desc, leave=False, disable=None if cfg.progress else True):
        with autocast(cfg):
            metrics.update(model, task.collate([items[i] for i in idx], generator))
    model.train(was_training)
    return metrics.compute()


def _log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def train(
    model: Model,
    task: Any,
    train_items: Sequence[Any],
    dev_items: Sequence[Any],
    cfg: TrainConfig,
    *,
    run_dir: str | Path,
    save_best: Callable[[Path], None],
    lengths: Sequence[int] | None = None,
) -> TrainResult:
    """Train ``model`` on ``task``; evaluate on ``dev_items`` every ``cfg.eval_every`` steps; save the
    best model with ``save_best(run_dir / "best")``; stop early when the dev metric stops improving.

    ``lengths`` (one per training item) turns on length-bucketed batches.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "metrics.jsonl"
    torch.manual_seed(cfg.seed)  # dropout
    generator = torch.Generator().manual_seed(cfg.seed)  # random parts of collation
    steps_total = total_steps(cfg, len(train_items))
    warmup = int(cfg.warmup_ratio * steps_total)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = build_schedule(optimizer, warmup=warmup, total=steps_total)
    stopper = EarlyStopping(cfg.patience, greater_is_better=task.greater_is_better)
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    step = epoch = bad_steps = 0
    tokens_seen = 0
    stopped_early = out_of_time = False
    model.train()
    bar = tqdm(total=steps_total, desc="train", disable=None if cfg.progress else True, dynamic_ncols=True)

    def run_eval() -> bool:
        metrics = evaluate(model, task, dev_items, cfg, desc="dev")
        improved = stopper.update(metrics[task.metric], step)
        if improved:
            save_best(run_dir / "best")
        record = {"step": step, "split": "dev", **metrics, "best": improved,
                  "elapsed_s": round(time.perf_counter() - start, 2)}
        history.append(record)
        _log(log_path, record)
        bar.write(f"step {step}: dev {task.metric}={metrics[task.metric]:.4f}" + (" (best)" if improved else ""))
        return stopper.should_stop

    while step < steps_total and not (stopped_early or out_of_time):
        batches = epoch_batches(len(train_items), cfg.batch_size, seed=cfg.seed, epoch=epoch, lengths=lengths)
        for first in range(0, len(batches), cfg.grad_accum):
            micro = [task.collate([train_items[i] for i in idx], generator)
                     for idx in batches[first : first + cfg.grad_accum]]
            n_targets = sum(task.n_targets(b) for b in micro)
            if n_targets == 0:
                continue
            loss_value = 0.0
            for batch in micro:
                with autocast(cfg):
                    loss = task.loss_sum(model, batch) / n_targets
                loss.backward()
                loss_value += float(loss.detach())
                real = batch.get("padding_mask")
                tokens_seen += int(real.sum()) if real is not None else batch["input_ids"].numel()
            if not math.isfinite(loss_value):
                optimizer.zero_grad(set_to_none=True)
                bad_steps += 1
                _log(log_path, {"step": step, "split": "train", "skipped": "non-finite loss"})
                if bad_steps >= cfg.max_bad_steps:
                    raise NonFiniteLossError(
                        f"{bad_steps} steps in a row had a non-finite loss (last: {loss_value}); "
                        f"lower the learning rate (now {cfg.lr}) or turn off bf16"
                    )
                continue
            bad_steps = 0
            if cfg.clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - start
            bar.update(1)
            if step % cfg.log_every == 0 or step == 1:
                lr = schedule.get_last_lr()[0]
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_seen / elapsed:,.0f}")
                _log(log_path, {"step": step, "split": "train", "loss": loss_value, "lr": lr,
                                "tokens_per_s": tokens_seen / elapsed, "elapsed_s": round(elapsed, 2)})
            out_of_time = cfg.max_minutes > 0 and elapsed > cfg.max_minutes * 60
            if step % cfg.eval_every == 0 or step == steps_total or out_of_time:
                stopped_early = run_eval()
            if step >= steps_total or stopped_early or out_of_time:
                break
        epoch += 1
    bar.close()
    if stopper.best_step is None:  # fewer steps than one evaluation interval: evaluate once at the end
        run_eval()
    best = next((h for h in history if h["step"] == stopper.best_step and h["best"]), history[-1])
    return TrainResult(steps=step, best_step=stopper.best_step, best_metrics=best,
                       stopped_early=stopped_early, seconds=time.perf_counter() - start, history=history)
