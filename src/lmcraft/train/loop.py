"""The one training loop, used by every objective and task.

It knows nothing task-specific. A task (or objective) supplies:
- ``collate(items, generator) -> batch`` (a dict of tensors),
- ``n_targets(batch)`` (how many targets the batch's loss sums over),
- ``loss_sum(model, batch)`` (the loss summed over those targets),
- ``new_metrics()`` (an object with ``update(model, batch)``, ``compute() -> dict`` and, for several
  processes, ``reduce(sum_tensor)``),
- ``metric`` and ``greater_is_better`` (what picks the best checkpoint),
- optionally ``epoch_batches(n, batch_size, seed=, epoch=, lengths=)`` and ``split_batch(indices, items)``,
  when the task decides which items may share a batch (multi-task learning: one task per batch).

Gradient accumulation divides every micro-batch's summed loss by the number of targets in the *whole*
accumulated batch (over all processes), so that k micro-batches on n processes give the gradient of one
batch k·n times as large, also when micro-batches hold different numbers of targets (masked tokens,
sequences of different lengths).

Exact resume: the data order of an epoch is a function of (seed, epoch), so a checkpoint stores the epoch
and the position within it, next to the weights, optimizer, schedule and RNG states (train/checkpoint.py).
A resumed run takes the same steps, bit for bit on CPU, as one that never stopped.

What keeps a run's directory trustworthy: a lock held while training (a second run into it stops at once);
staging folders of a crashed run removed at start; checkpoints verified (SHA-256 per file, finite
weights) before resuming, and the options and data compared with the run's own (train/identity.py);
SIGTERM saves a checkpoint as Ctrl-C does; a full disk stops with one line naming the intact checkpoint.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lmcraft.config import TrainConfig, budget_seconds, to_dict
from lmcraft.data.batching import epoch_batches
from lmcraft.fsutil import is_disk_full
from lmcraft.model.heads import Model
from lmcraft.train.checkpoint import (
    Checkpoint,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_states,
    model_state,
    non_finite,
    optimizer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from lmcraft.train.distributed import Distributed
from lmcraft.train.early_stopping import EarlyStopping
from lmcraft.train.errors import DiskFullError, NonFiniteLossError, ResumeMismatchError, TrainingError
from lmcraft.train.guards import Interrupt, hold_run_dir, mount_point
from lmcraft.train.identity import differences, run_identity
from lmcraft.train.optim import TimeBudget, build_optimizer, build_schedule
from lmcraft.train.precision import autocast, dtype_name, use_bf16
from lmcraft.train.runlog import RunLog

SaveBest = Callable[[Path, dict[str, torch.Tensor]], None]
OnEval = Callable[[int, dict[str, Any]], bool]  # (step, dev metrics) -> True to stop the run there


@dataclass
class TrainResult:
    steps: int  # optimiser steps taken
    best_step: int | None  # step of the best dev evaluation
    best_metrics: dict[str, float]  # dev metrics at that step
    stopped_early: bool  # True when the patience ran out (or ``on_eval`` asked to stop)
    seconds: float  # wall time of the loop (over all sessions of a resumed run)
    history: list[dict[str, Any]] = field(default_factory=list)  # every dev evaluation
    is_main: bool = True  # False on processes other than rank 0, which write nothing
    dtype: str = "fp32"  # what the matrix products ran in: "bf16" or "fp32" (bf16=auto resolved)
    final_lr: float = 0.0  # the learning rate the schedule had reached when the run ended


@dataclass
class LoopState:
    """What a checkpoint stores besides tensors."""

    step: int = 0
    epoch: int = 0
    next_batch: int = 0  # index of the next global batch within this epoch's order
    bad_steps: int = 0  # consecutive steps skipped for a non-finite loss
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    budget_s: float = 0.0  # training seconds of a run with a time budget, fixed by its first session
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


UNBOUNDED = 2**62  # the step count of a run that a time budget ends
BUDGET_TAIL = 0.05  # share of a stage's time budget kept for the saving after training (the test: evals_after)


def total_steps(cfg: TrainConfig, n_examples: int, world: int = 1) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    if cfg.budget:
        return UNBOUNDED
    per_epoch = math.ceil(n_examples / (cfg.batch_size * world * cfg.grad_accum))
    return max(1, math.ceil(cfg.epochs * per_epoch))


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(module: torch.nn.Module, task: Any, items: Sequence[Any], cfg: TrainConfig, dist: Distributed,
             *, bf16: bool = False, desc: str = "eval") -> dict:
    """Metrics of ``task`` over ``items``, accumulated batch by batch (each process takes every n-th item,
    then the counts are summed). Random parts of collation (MLM masking) use a fixed seed, so that
    evaluations at different steps see the same inputs."""
    was_training = module.training
    module.eval()
    metrics = task.new_metrics()
    generator = torch.Generator().manual_seed(cfg.seed + 12345)
    mine = list(range(dist.rank, len(items), dist.world))
    batches = [mine[i : i + cfg.eval_batch_size] for i in range(0, len(mine), cfg.eval_batch_size)]
    if hasattr(task, "split_batch"):  # a multi-task batch must hold one task's items
        batches = [part for b in batches for part in task.split_batch(b, items)]
    n_batches = dist.max(len(batches))  # FSDP gathers weights in every forward: all ranks run as many
    for k in tqdm(range(n_batches), desc=desc, leave=False, disable=None if cfg.progress and dist.is_main else True):
        real = k < len(batches)
        batch = to_device(task.collate([items[i] for i in (batches[k] if real else [0])], generator), dist.device)
        with autocast(bf16, dist.device):
            module(batch, metrics if real else task.new_metrics())
    if dist.active:
        metrics.reduce(dist.sum_tensor)
    module.train(was_training)
    return metrics.compute()


def _usable(ckpt: Checkpoint) -> None:
    """Raise if the loop cannot continue from ``ckpt`` (its state lacks what the loop reads back)."""
    LoopState(**ckpt.state["loop"])
    EarlyStopping(**ckpt.state["stopper"])
    if missing := [k for k in ("optimizer", "schedule", "rng") if k not in ckpt.trainer]:
        raise ValueError(f"trainer.pt lacks {', '.join(missing)}")


def _check_resumable(ckpt: Checkpoint, identity: dict[str, Any], cfg: TrainConfig, dist: Distributed) -> None:
    """Stop unless the resumed run is the run that wrote ``ckpt``: same processes, options and data."""
    saved = ckpt.state
    if saved["world_size"] != dist.world:
        raise ResumeMismatchError(f"{ckpt.path}: the run started on {saved['world_size']} process(es); resume it on "
                                  f"as many (now {dist.world})")
    changed = differences(saved["run"], identity)
    if not changed:
        return
    what = "; ".join(f"cannot resume with {c}" for c in changed)
    if not cfg.resume_anyway:
        raise ResumeMismatchError(f"{ckpt.path}: {what}. Resuming would not continue the same run; pass "
                                  "--resume-anyway to continue from it all the same")
    if dist.is_main:
        print(f"lmcraft: resuming anyway (--resume-anyway) although: {what}", file=sys.stderr)


def train(
    model: Model,
    task: Any,
    train_items: Sequence[Any],
    dev_items: Sequence[Any],
    cfg: TrainConfig,
    *,
    run_dir: str | Path,
    save_best: SaveBest,
    lengths: Sequence[int] | None = None,
    on_eval: OnEval | None = None,
    started: float | None = None,
    evals_after: float = 1.0,
) -> TrainResult:
    """Train ``model`` on ``task``; evaluate on ``dev_items`` every ``cfg.eval_every`` steps; save the
    best model with ``save_best(run_dir / "best", state_dict)``; stop early when the dev metric stops
    improving; write resumable checkpoints to ``run_dir / "checkpoints"``.

    ``lengths`` (one per training item) turns on length-bucketed batches when ``cfg.length_buckets``;
    otherwise batches are shuffled, and the model skips their padding (``model/transformer.py``). Under
    ``torchrun`` the batches are shared out among the processes (``cfg.batch_size`` is per process).
    The run directory is locked while training: a second run into it stops at once. ``on_eval(step,
    metrics)``, called after every dev evaluation, may stop the run there by returning True (the tuner
    prunes weak trials so); the run then ends as an early stop does, best model and checkpoint written.

    With ``cfg.budget`` the run's length is time: the stage began at ``started`` (``time.perf_counter()``;
    default now), the loop gets what is left of the budget less a ``BUDGET_TAIL`` share for the test and the
    saving after it, and the learning rate follows the share of those seconds spent (``TimeBudget``), reaching
    zero as they run out. A resumed budgeted run continues that clock from its checkpoint: it takes the steps
    its time allows, so unlike a run counted in steps it is not the same, bit for bit, as one that never
    stopped. Once a dev evaluation has been timed, the training seconds also leave room for ``evals_after``
    such evaluations (the last one, and the stage's test split counted in dev evaluations), so that the stage
    as a whole keeps to its budget.
    """
    run_dir = Path(run_dir)
    dist = Distributed.from_env(cfg.distributed)
    with hold_run_dir(run_dir, dist):
        return _train(model, task, train_items, dev_items, cfg, run_dir=run_dir, save_best=save_best,
                      lengths=lengths, dist=dist, on_eval=on_eval,
                      started=time.perf_counter() if started is None else started, evals_after=evals_after)


def _train(
    model: Model,
    task: Any,
    train_items: Sequence[Any],
    dev_items: Sequence[Any],
    cfg: TrainConfig,
    *,
    run_dir: Path,
    save_best: SaveBest,
    lengths: Sequence[int] | None,
    dist: Distributed,
    on_eval: OnEval | None = None,
    started: float,
    evals_after: float = 1.0,
) -> TrainResult:
    sharded = dist.active and dist.mode == "fsdp"
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + dist.rank)  # dropout
    generator = torch.Generator().manual_seed(cfg.seed + dist.rank)  # random parts of collation
    module = dist.wrap(model, task)
    if cfg.compile:
        model.compile_backbone()
    bf16 = use_bf16(cfg.bf16, dist.device)
    identity = run_identity(cfg, dtype=dtype_name(bf16), world=dist.world, items=train_items)
    global_batch = cfg.batch_size * dist.world
    steps_total = total_steps(cfg, len(train_items), dist.world)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    budget = TimeBudget(1.0, warmup=cfg.warmup_ratio) if cfg.budget else None
    schedule = budget.schedule(optimizer) if budget is not None else \
        build_schedule(optimizer, warmup=int(cfg.warmup_ratio * steps_total), total=steps_total)
    stopper = EarlyStopping(cfg.patience, greater_is_better=task.greater_is_better)
    st = LoopState()

    ckpt = latest_checkpoint(run_dir, accept=_usable) if cfg.resume else None
    if cfg.resume and ckpt is None and list_checkpoints(run_dir):
        raise TrainingError(f"none of the checkpoints in {run_dir / 'checkpoints'} can be resumed (see above); "
                            "move them away to start afresh")
    if ckpt is not None:
        _check_resumable(ckpt, identity, cfg, dist)
        load_states(model, optimizer, ckpt, sharded)
        schedule.load_state_dict(ckpt.trainer["schedule"])
        if cfg.resume_anyway and schedule.base_lrs[0] != cfg.lr:  # the new peak learning rate from here on
            schedule.base_lrs = [cfg.lr] * len(schedule.base_lrs)
            for group, rule in zip(optimizer.param_groups, schedule.lr_lambdas, strict=True):
                group["initial_lr"], group["lr"] = cfg.lr, cfg.lr * rule(schedule.last_epoch)
        set_rng_state(ckpt.trainer["rng"][dist.rank], generator)
        stopper = EarlyStopping(**ckpt.state["stopper"])
        st = LoopState(**ckpt.state["loop"])
        if dist.is_main:
            of = f"a {cfg.budget} budget" if steps_total == UNBOUNDED else steps_total
            print(f"resuming from {ckpt.path} (step {st.step} of {of})", file=sys.stderr)
    elif cfg.resume and dist.is_main:
        print(f"no checkpoint in {run_dir / 'checkpoints'}; starting from the beginning", file=sys.stderr)
    if ckpt is None and dist.is_main and list_checkpoints(run_dir):
        print(f"starting afresh: deleting the old checkpoints in {run_dir / 'checkpoints'}", file=sys.stderr)
        shutil.rmtree(run_dir / "checkpoints")
    log = RunLog(run_dir, enabled=dist.is_main, tensorboard=cfg.tensorboard,
                 resume_step=st.step if ckpt is not None else None)
    session_start = time.perf_counter()
    start = session_start - st.elapsed_s
    if budget is not None:
        if st.budget_s == 0:  # the first session fixes the training seconds: what the stage has left, less a tail
            left = budget_seconds(cfg.budget) - (session_start - started)
            st.budget_s = max(left * (1 - BUDGET_TAIL), 1.0)
        budget.seconds, budget.begin = st.budget_s, start
    session_tokens = 0
    last_saved = st.step if ckpt is not None else -1
    model.train()
    bar = tqdm(total=None if steps_total == UNBOUNDED else steps_total, initial=st.step, desc="train",
               dynamic_ncols=True, disable=None if cfg.progress and dist.is_main else True)

    def snapshot() -> Path | None:
        """A checkpoint of the state between two steps (every rank takes part; rank 0 writes). None when
        the weights are not all finite: such a state is not written, lest a resume pick it."""
        nonlocal last_saved
        st.elapsed_s = time.perf_counter() - start
        weights = model_state(model, sharded)
        trainer = {"optimizer": optimizer_state(model, optimizer, sharded), "schedule": schedule.state_dict(),
                   "rng": dist.gather(rng_state(generator))}
        path, full = None, None
        if dist.is_main and (bad := non_finite(weights)):
            print(f"lmcraft: not saving step {st.step}: non-finite weights in {len(bad)} tensor(s), e.g. {bad[0]}",
                  file=sys.stderr)
        elif dist.is_main:
            state = {"loop": asdict(st), "stopper": asdict(stopper), "world_size": dist.world,
                     "config": to_dict(cfg), "run": identity}
            try:
                path = save_checkpoint(run_dir, st.step, model=weights, trainer=trainer, state=state,
                                       keep=cfg.keep_checkpoints, best_step=stopper.best_step)
            except Exception as e:
                if not is_disk_full(e):
                    raise
                previous = list_checkpoints(run_dir)
                full = DiskFullError(
                    f"no space left on {mount_point(run_dir)} while writing checkpoint "
                    f"{checkpoint_dir(run_dir, st.step)}; the previous checkpoint "
                    f"{previous[-1][1] if previous else '(none)'} is intact. Free some space and continue with "
                    "--resume")
        if dist.max(int(full is not None)):  # every rank stops, not only the one that wrote
            raise full or DiskFullError(f"rank 0 ran out of space writing a checkpoint in {run_dir}")
        last_saved = st.step
        return path

    def run_eval() -> None:
        eval_began = time.perf_counter()
        metrics = evaluate(module, task, dev_items, cfg, dist, bf16=bf16, desc="dev")
        if budget is not None:  # what follows the loop needs time too: leave it, from this evaluation's
            budget.seconds = max(st.budget_s - evals_after * (time.perf_counter() - eval_began), 1.0)
        improved = stopper.update(metrics[task.metric], st.step)
        if improved:
            weights = model_state(model, sharded)
            if dist.is_main:
                try:
                    save_best(run_dir / "best", weights)
                except Exception as e:
                    if not is_disk_full(e):
                        raise
                    raise DiskFullError(f"no space left on {mount_point(run_dir)} while writing the best model "
                                        f"{run_dir / 'best'}; the previous best model there is intact") from None
        record = {"step": st.step, "split": "dev", **metrics, "best": improved,
                  "elapsed_s": round(time.perf_counter() - start, 2)}
        st.history.append(record)
        log.write(record)
        if dist.is_main:
            bar.write(f"step {st.step}: dev {task.metric}={metrics[task.metric]:.4f}" + (" (best)" if improved else ""))
        st.stopped_early = stopper.should_stop
        if on_eval is not None and dist.max(int(bool(on_eval(st.step, record)))) > 0:
            st.stopped_early = True

    def one_step(group: list[list[int]]) -> bool:
        """Forward and backward over the micro-batches of one step, then the update. False when the step
        was skipped (no targets, or a non-finite loss)."""
        nonlocal session_tokens
        shards = [dist.shard(idx) for idx in group]
        micro = [(task.collate([train_items[i] for i in idx], generator), real) for idx, real in shards]
        local_targets = sum(task.n_targets(b) for b, real in micro if real)
        count_tokens = getattr(task, "n_tokens", _tokens)  # an encoder-decoder counts both of its inputs
        local_tokens = sum(count_tokens(b) for b, real in micro if real)
        n_targets, tokens = dist.sum([local_targets, local_tokens])
        if n_targets == 0:
            return False
        local_loss = 0.0
        for k, (batch, real) in enumerate(micro):
            with dist.no_sync(module, sync=k == len(micro) - 1):
                with autocast(bf16, dist.device):
                    loss = module(to_device(batch, dist.device)) / (n_targets / dist.world)
                    if not real:
                        loss = loss * 0.0
                loss.backward()
            local_loss += float(loss.detach())
        loss_value = dist.sum([local_loss])[0] / dist.world
        grad_norm = math.nan
        if math.isfinite(loss_value):  # clip (or, with clip 0, multiply by 1): NaN gradients must not step
            # sparse feature tables (SGD, train/optim.py) are left out: a linear table needs no clipping, and
            # its large gradient would shrink the encoder's
            dense = [p for p in model.parameters() if p.grad is None or not p.grad.is_sparse]
            norm = torch.nn.utils.clip_grad_norm_(dense, cfg.clip if cfg.clip > 0 else math.inf)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # DTensor under FSDP
        if not math.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            st.bad_steps += 1
            what = "loss" if not math.isfinite(loss_value) else "gradient"
            log.write({"step": st.step, "split": "train", "skipped": f"non-finite {what}"})
            if st.bad_steps >= cfg.max_bad_steps:
                path = snapshot()
                if path is None and dist.is_main:  # the weights themselves are not finite: name an older state
                    good = latest_checkpoint(run_dir)
                    path = good.path if good is not None else None
                raise NonFiniteLossError(
                    f"{st.bad_steps} steps in a row had a non-finite {what} (last loss: {loss_value}); lower the "
                    f"learning rate (now {cfg.lr}) or turn off bf16 (--bf16 off). The last good state is in "
                    f"{path or '(no checkpoint with finite weights)'}"
                )
            return False
        st.bad_steps = 0
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        st.step += 1
        st.tokens_seen += int(tokens)
        session_tokens += int(tokens)
        bar.update(1)
        if st.step % cfg.log_every == 0 or st.step == 1:
            lr = schedule.get_last_lr()[0]
            speed = session_tokens / max(time.perf_counter() - session_start, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{speed:,.0f}")
            log.write({"step": st.step, "split": "train", "loss": loss_value, "lr": lr, "tokens_per_s": speed,
                       "elapsed_s": round(time.perf_counter() - start, 2)})
        return True

    out_of_time = False
    with Interrupt() as interrupt:
        while st.step < steps_total and not (st.stopped_early or out_of_time):
            order = getattr(task, "epoch_batches", epoch_batches)  # a multi-task run samples its own mix
            batches = order(len(train_items), global_batch, seed=cfg.seed, epoch=st.epoch,
                            lengths=lengths if cfg.length_buckets else None)
            while st.next_batch < len(batches):
                group = batches[st.next_batch : st.next_batch + cfg.grad_accum]
                st.next_batch += len(group)
                if not one_step(group):
                    continue
                out_of_time = cfg.max_minutes > 0 and time.perf_counter() - start > cfg.max_minutes * 60
                out_of_time = out_of_time or (budget is not None and budget.spent)
                out_of_time = dist.max(int(out_of_time)) > 0  # every rank stops at the same step
                finished = st.step >= steps_total or out_of_time
                if st.step % cfg.eval_every == 0 or finished:
                    run_eval()
                    finished = finished or st.stopped_early
                due = st.step % cfg.save_every == 0 if cfg.save_every else st.step % cfg.eval_every == 0
                stop_now = dist.max(int(interrupt.requested)) > 0
                if due or finished or stop_now:
                    snapshot()
                if stop_now:
                    bar.close()
                    log.close()
                    raise KeyboardInterrupt(f"interrupted at step {st.step}; the checkpoint is in "
                                            f"{run_dir / 'checkpoints'}; continue with --resume")
                if finished:
                    break
            else:
                st.epoch += 1
                st.next_batch = 0
    bar.close()
    if stopper.best_step is None:  # fewer steps than one evaluation interval: evaluate once at the end
        run_eval()
    if last_saved != st.step:
        snapshot()
    log.close()
    best = next((h for h in st.history if h["step"] == stopper.best_step and h["best"]), st.history[-1])
    return TrainResult(steps=st.step, best_step=stopper.best_step, best_metrics=best,
                       stopped_early=st.stopped_early, seconds=time.perf_counter() - start, history=st.history,
                       is_main=dist.is_main, dtype=dtype_name(bf16), final_lr=schedule.get_last_lr()[0])


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    real = batch.get("padding_mask")
    return int(real.sum()) if real is not None else batch["input_ids"].numel()
