"""The multi-task stage: one backbone, a head per task, batches that mix the tasks (``tasks/multitask.py``),
the best checkpoint by the mean (or one task's) dev metric, and every task's test report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lmcraft.finetune import load_splits, start_model
from lmcraft.inference.predictor import Predictor
from lmcraft.model.io import count_parameters, save_model_dir
from lmcraft.stage import finish_stage, run_summary
from lmcraft.stage_options import FinetuneConfig, MultitaskConfig, options_for
from lmcraft.tasks.multitask import MultiTask
from lmcraft.tasks.registry import TASKS, task_class
from lmcraft.train.loop import train


def parse_task(spec: str) -> tuple[str, str, str]:
    """'sentiment=classify:data/x' -> ('sentiment', 'classify', 'data/x')."""
    name, _, rest = spec.partition("=")
    kind, _, directory = rest.partition(":")
    if not (name and kind and directory):
        raise ValueError(f"task {spec!r} is not of the form NAME=TASK:DIR (e.g. ner=tag:data/peoples-daily-ner)")
    task = task_class(kind)  # an unknown task is an error that lists the known ones
    if not task.shares_batches:
        usable = ", ".join(name for name, t in TASKS.items() if t.shares_batches)
        raise ValueError(f"multi-task learning takes the tasks {usable}; {kind} is not supported yet")
    return name, kind, directory


def run_multitask(cfg: MultitaskConfig) -> dict[str, Any]:
    began = time.perf_counter()
    specs = [parse_task(s) for s in cfg.tasks]
    model, tokenizer, pretrained, parent_card = start_model(cfg.start, cfg.model, decoder=False, generates=False,
                                                            seed=cfg.train.seed)
    max_len = model.input_tokens
    named, examples, files = [], [], []
    for name, kind, directory in specs:
        task_cfg = FinetuneConfig(task=kind, data=directory, fields=cfg.fields)
        split_examples, split_files = load_splits(task_cfg)
        if cfg.max_train_examples > 0:
            split_examples["train"] = split_examples["train"][: cfg.max_train_examples]
        task_cls = task_class(kind)
        task = task_cls.for_data(split_examples, split_files, tokenizer, options_for(cfg.task_options, task_cls),
                                 metric="", fields=cfg.fields)
        named.append((name, task))
        examples.append(split_examples)
        files.append(split_files)
    multi = MultiTask(named, sampling=cfg.sampling, temperature=cfg.temperature, select=cfg.select)
    for _, task in named:
        task.attach(model, pretrained)
    train_items = [it for k in range(len(named)) for it in multi.encode(k, tokenizer, examples[k]["train"], max_len)]
    dev_items = [it for k in range(len(named)) for it in multi.encode(k, tokenizer, examples[k]["dev"], max_len)]
    multi.set_train_items(train_items)
    shares = ", ".join(f"{n} {s:.0%}" for n, s in zip(multi.names, multi.shares(), strict=True))
    print(f"multitask: {len(train_items):,} train / {len(dev_items):,} dev items; batches: {shares}; "
          f"{count_parameters(model) / 1e6:.1f}M parameters")
    prepare_s = time.perf_counter() - began

    out = Path(cfg.out)
    result = train(model, multi, train_items, dev_items, cfg.train, run_dir=out,
                   lengths=[len(it.item.ids) for it in train_items],
                   save_best=lambda path, state: save_model_dir(path, model, tokenizer, state=state,
                                                                extra={"stage": "multitask"}),
                   started=began)
    if not result.is_main:
        return {"stage": "multitask", "rank": "worker"}
    summary = run_summary("multitask", out, result, prepare_s)
    summary.update(tasks={name: kind for name, kind, _ in specs},
                   shares=dict(zip(multi.names, multi.shares(), strict=True)), test={})
    t0 = time.perf_counter()
    for k, (name, _) in enumerate(named):
        if "test" in examples[k]:
            best = Predictor(out / "best", head=name, compiled=False)
            summary["test"][name] = best.evaluate(examples[k]["test"], progress=cfg.train.progress,
                                                  predictions=out / f"test_predictions.{name}.jsonl")
    summary["wall_time_s"]["test"] = time.perf_counter() - t0
    return finish_stage(out, summary, config=cfg, data=[p for f in files for p in f.values()], seed=cfg.train.seed,
                        parent=parent_card)
