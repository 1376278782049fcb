"""The runs of a learning curve: for every number of labels and seed, a random subset of the training split
(the same for every model), the pretrained model and the from-scratch one fine-tuned on it, and the task's
classic baseline fitted on it. Every run keeps its best dev checkpoint (the whole dev split selects) and is
scored on the whole test split. A run whose result is there already is not run again, so an interrupted
curve continues where it stopped."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from lmcraft.config import to_dict
from lmcraft.curve.options import CurveConfig
from lmcraft.curve.plot import write_plot, write_table
from lmcraft.finetune import load_splits, run_finetune, take_train
from lmcraft.fsutil import write_json
from lmcraft.stage_options import FinetuneConfig, InitOptions
from lmcraft.tasks.registry import task_class


def _size(size: str, available: int) -> int:
    n = available if size == "all" else int(size)
    if n > available:
        raise ValueError(f"--sizes asks for {n:,} labels, but the train split holds {available:,}")
    return n


def curve_metric(task: Any, chosen: str) -> str:
    """The test metric the curve plots: --metric, else the one that selects the task's checkpoints when a test
    report shows it (classify: accuracy; tag: entity F1), else the first the report shows (seq2seq: BLEU)."""
    return chosen or (task.metric if task.metric in task.summary_metrics else task.summary_metrics[0])


def fine_tune_config(cfg: CurveConfig, model: str, n: int, seed: int, run_dir: Path) -> FinetuneConfig:
    """The fine-tuning of ``model`` on ``n`` labels drawn with ``seed``: at least ``min_steps`` steps, about six
    dev evaluations, the scratch model at its own learning rate."""
    base = cfg.finetune
    train = replace(base.train, seed=seed)
    steps = train.max_steps or math.ceil(train.epochs * math.ceil(n / (train.batch_size * train.grad_accum)))
    if not train.budget and steps < cfg.min_steps:
        train = replace(train, max_steps=cfg.min_steps)
        steps = cfg.min_steps
    train = replace(train, eval_every=min(train.eval_every, max(10, steps // 6)))
    start = base.start
    if model == "scratch":
        start = InitOptions(init=base.start.init, random_init=True)
        train = replace(train, lr=cfg.scratch_lr or train.lr)
    return replace(base, start=start, train=train, out=str(run_dir), max_train_examples=n, train_sample_seed=seed,
                   baseline=False)


def _same_settings(cfg: CurveConfig, path: Path) -> None:
    """Write the settings every run of the curve shares, or refuse a rerun with others: the runs already done
    would be averaged with runs of another kind. The points (sizes, seeds, models) may change."""
    settings = json.loads(json.dumps({"finetune": to_dict(cfg.finetune), "min_steps": cfg.min_steps,
                                      "scratch_lr": cfg.scratch_lr}))
    for volatile in ("progress", "tensorboard", "resume"):  # how a run shows itself, not what it learns
        settings["finetune"]["train"].pop(volatile, None)
    if path.exists():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(_diff(before, settings))
        if changed:
            raise ValueError(f"{path.parent} holds a curve made with other settings ({', '.join(changed)}); "
                             "use another --out, or delete it to start again")
        return
    write_json(path, settings)


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if a != b else []


def _mean_std(values: list[float]) -> dict[str, Any]:
    return {"values": values, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def run_curve(cfg: CurveConfig) -> dict[str, Any]:
    if set(cfg.models) & {"pretrained", "scratch"} and not cfg.finetune.start.init:
        raise ValueError("the pretrained and scratch models need --init MODEL_DIR (the pretrained encoder; "
                         "scratch takes its architecture and tokenizer)")
    task = task_class(cfg.finetune.task)
    metric = curve_metric(task, cfg.finetune.metric)
    if metric not in task.summary_metrics:
        raise ValueError(f"--metric {metric}: a {cfg.finetune.task} test report gives "
                         f"{', '.join(task.summary_metrics)}")
    splits, files = load_splits(cfg.finetune)
    if "test" not in splits:
        raise ValueError(f"{cfg.finetune.data}: a learning curve scores every model on a test split; none found")
    sizes = list(dict.fromkeys(_size(s, len(splits["train"])) for s in cfg.sizes))  # "all" may equal a number
    seeds = [int(s) for s in cfg.seeds]
    out = Path(cfg.out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    _same_settings(cfg, out / "curve_settings.json")
    scores: dict[str, dict[int, list[float]]] = {m: {n: [] for n in sizes} for m in cfg.models}
    names = {"pretrained": "pretrained + fine-tuned", "scratch": "from scratch", "baseline": "classic baseline"}
    total, done = len(sizes) * len(seeds) * len(cfg.models), 0
    for n in sizes:
        for seed in seeds:
            for model in cfg.models:
                done += 1
                result_file = runs / f"{model}-{n}-seed{seed}.json"
                if result_file.exists():
                    result = json.loads(result_file.read_text(encoding="utf-8"))
                else:
                    print(f"\n== curve [{done}/{total}] {model}, {n:,} labels, seed {seed} ==", flush=True)
                    result = _run_one(cfg, task, splits, files, model, n, seed, runs / f"{model}-{n}-seed{seed}")
                    write_json(result_file, result)
                scores[model][n].append(result["test"][metric])
                print(f"curve [{done}/{total}] {model}, {n:,} labels, seed {seed}: test {metric} "
                      f"{result['test'][metric]:.4f}", flush=True)
    summary = {"task": cfg.finetune.task, "metric": metric, "data": cfg.finetune.data,
               "init": cfg.finetune.start.init, "sizes": sizes, "seeds": seeds, "train_size": len(splits["train"]),
               "names": {m: names[m] for m in cfg.models},
               "models": {m: {str(n): _mean_std(v) for n, v in by_n.items()} for m, by_n in scores.items()}}
    write_json(out / "curve.json", summary)
    write_table(summary, out / "curve.md")
    write_plot(summary, out / "curve.png")
    return summary


def _run_one(cfg: CurveConfig, task: Any, splits: dict[str, list], files: dict[str, Path], model: str, n: int,
             seed: int, run_dir: Path) -> dict[str, Any]:
    if model == "baseline":
        subset = {**splits, "train": take_train(splits["train"], n, seed)}
        result = task.baseline(subset, files)
        return {"name": result["name"], "test": result["test"]}
    summary = run_finetune(fine_tune_config(cfg, model, n, seed, run_dir))
    return {"name": model, "test": summary["test"], "dev": summary.get("dev", {}), "steps": summary["steps"],
            "best_step": summary["best_step"]}
