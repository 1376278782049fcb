"""The multi-task stage: one backbone, a head per task, batches that mix the tasks (``tasks/multitask.py``),
the best checkpoint by the mean (or one task's) dev metric, and every task's test report."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from lmcraft.config import FinetuneConfig, MultitaskConfig, to_dict
from lmcraft.finetune import evaluate_test, load_splits, start_model
from lmcraft.model.io import count_parameters, load_model_dir, save_model_dir
from lmcraft.runcard import write_run_card
from lmcraft.tasks.classify.task import Classify
from lmcraft.tasks.kinds import task_kind
from lmcraft.tasks.multitask import MultiTask
from lmcraft.train.loop import train


def parse_task(spec: str) -> tuple[str, str, str]:
    """'sentiment=classify:data/x' -> ('sentiment', 'classify', 'data/x')."""
    name, _, rest = spec.partition("=")
    kind, _, directory = rest.partition(":")
    if not (name and kind and directory):
        raise ValueError(f"task {spec!r} is not of the form NAME=TASK:DIR (e.g. ner=tag:data/peoples-daily-ner)")
    task_kind(kind)  # an unknown task is an error that lists the known ones
    if kind == "qa":
        raise ValueError("multi-task learning takes classify, tag and relate tasks; qa is not supported yet")
    return name, kind, directory


def run_multitask(cfg: MultitaskConfig) -> dict[str, Any]:
    start = time.perf_counter()
    specs = [parse_task(s) for s in cfg.tasks]
    base = FinetuneConfig(out=cfg.out, init=cfg.init, random_init=cfg.random_init, tokenizer=cfg.tokenizer,
                          crf=cfg.crf, model=cfg.model, train=cfg.train, baseline=False)
    model, tokenizer, max_len, pooler, parent_card = start_model(base)
    named, examples, files = [], [], []
    for name, kind, directory in specs:
        task_cfg = replace(base, task=kind, data=directory)
        split_examples, split_files = load_splits(task_cfg)
        if cfg.max_train_examples > 0:
            split_examples["train"] = split_examples["train"][: cfg.max_train_examples]
        task = task_kind(kind).build(split_examples, split_files, task_cfg, tokenizer)
        if isinstance(task, Classify):
            task.pooling = "pooler" if pooler is not None else "cls"
        named.append((name, task))
        examples.append(split_examples)
        files.append(split_files)
    multi = MultiTask(named, sampling=cfg.sampling, temperature=cfg.temperature, select=cfg.select)
    for name, task in named:
        model.add_head(name, task.head_spec())
        if isinstance(task, Classify) and pooler is not None:
            model.heads[name].pooler.load_state_dict(pooler)
    train_items = [it for k in range(len(named)) for it in multi.encode(k, tokenizer, examples[k]["train"], max_len)]
    dev_items = [it for k in range(len(named)) for it in multi.encode(k, tokenizer, examples[k]["dev"], max_len)]
    multi.set_train_items(train_items)
    shares = ", ".join(f"{n} {s:.0%}" for n, s in zip(multi.names, multi.shares(), strict=True))
    print(f"multitask: {len(train_items):,} train / {len(dev_items):,} dev items; batches: {shares}; "
          f"{count_parameters(model) / 1e6:.1f}M parameters")
    prepare_s = time.perf_counter() - start

    out = Path(cfg.out)
    result = train(model, multi, train_items, dev_items, cfg.train, run_dir=out,
                   lengths=[len(it.item.ids) for it in train_items],
                   save_best=lambda path, state: save_model_dir(path, model, tokenizer, state=state,
                                                                extra={"stage": "multitask"}))
    if not result.is_main:
        return {"stage": "multitask", "rank": "worker"}
    summary: dict[str, Any] = {
        "stage": "multitask", "model_dir": str(out / "best"), "steps": result.steps, "best_step": result.best_step,
        "tasks": {name: kind for name, kind, _ in specs}, "shares": dict(zip(multi.names, multi.shares(), strict=True)),
        "dev": {k: v for k, v in result.best_metrics.items() if k not in ("step", "split", "best", "elapsed_s")},
        "wall_time_s": {"prepare": prepare_s, "train": result.seconds}, "test": {},
    }
    best, best_tokenizer, _ = load_model_dir(out / "best")
    t0 = time.perf_counter()
    for k, (name, task) in enumerate(named):
        if "test" in examples[k]:
            summary["test"][name] = evaluate_test(best, best_tokenizer, task, examples[k]["test"], cfg=base,
                                                  max_len=max_len, predictions=out / f"test_predictions.{name}.jsonl")
    summary["wall_time_s"]["test"] = time.perf_counter() - t0
    write_run_card(out / "best", stage="multitask", config=to_dict(cfg), data=[p for f in files for p in f.values()],
                   seed=cfg.train.seed, wall_time_s=summary["wall_time_s"],
                   metrics={"dev": summary["dev"], "test": summary["test"]}, parent=parent_card)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary
