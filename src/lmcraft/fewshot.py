"""Few-shot learning: head fine-tuning against prompt-based fine-tuning at k examples per class.

For every k and seed, k training and k dev examples per class are drawn from the full splits (true
few-shot: model selection may only use the small dev set, as in LM-BFF); both methods start from the same
pretrained model, train the same number of steps, keep their best dev checkpoint and are tested on the
whole test split. The report gives mean ± standard deviation over the seeds.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lmcraft.config import to_dict
from lmcraft.data.readers import Example
from lmcraft.finetune import load_splits
from lmcraft.model.io import load_model_dir
from lmcraft.stage_options import FewshotConfig, FinetuneConfig
from lmcraft.tasks.classify.prompt import PromptClassify, parse_verbalizer
from lmcraft.tasks.classify.task import Classify
from lmcraft.train.distributed import Distributed, TaskModule
from lmcraft.train.loop import evaluate, train

METHODS = ("head", "prompt")


def sample_per_class(examples: Sequence[Example], labels: Sequence[str], k: int, seed: int) -> list[Example]:
    """k examples of every label, drawn with ``seed`` (the same draw on every machine)."""
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels:
        pool = [ex for ex in examples if ex.label == label]
        if len(pool) < k:
            raise ValueError(f"label {label!r} has {len(pool)} examples; k={k} needs at least {k}")
        chosen += [pool[i] for i in torch.randperm(len(pool), generator=g)[:k].tolist()]
    return chosen


def run_one(cfg: FewshotConfig, method: str, labels: list[str], train_set: list[Example], dev_set: list[Example],
            test_set: list[Example], seed: int, run_dir: Path) -> dict[str, float]:
    """Train one method on one draw; test accuracy and macro-F1 of its best dev checkpoint."""
    torch.manual_seed(seed)
    model, tokenizer, _ = load_model_dir(cfg.init, heads=method == "prompt")
    max_len = min(cfg.max_len, model.cfg.max_tokens)
    task: Any
    if method == "prompt":
        if "mlm" not in model.head_specs:
            raise ValueError(f"{cfg.init} has no masked-LM head; prompt-based fine-tuning needs one (pretrain with "
                             "`lmcraft pretrain`)")
        model.heads = torch.nn.ModuleDict({"mlm": model.heads["mlm"]})  # other heads would idle
        task = PromptClassify(labels, parse_verbalizer(cfg.verbalizer), cfg.template, tokenizer.pad_id)
    else:
        task = Classify(labels, tokenizer.pad_id, pooling=cfg.classify.pooling)
        task.attach(model, {})
    train_items = task.encode(tokenizer, train_set, max_len)
    best: dict[str, torch.Tensor] = {}
    train_cfg = type(cfg.train)(**{**to_dict(cfg.train), "seed": seed, "progress": False, "tensorboard": False})
    train(model, task, train_items, task.encode(tokenizer, dev_set, max_len), train_cfg, run_dir=run_dir,
          save_best=lambda path, state: best.update({k: v.clone() for k, v in state.items()}))
    model.load_state_dict(best)
    metrics = evaluate(TaskModule(model, task), task, task.encode(tokenizer, test_set, max_len), train_cfg,
                       Distributed(), desc="test")
    shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints of a few-shot run are not worth keeping
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def run_fewshot(cfg: FewshotConfig) -> dict[str, Any]:
    if not cfg.init:
        raise ValueError("few-shot learning starts from a pretrained model: give --init MODEL_DIR")
    unknown = sorted(set(cfg.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    shots, seeds = [int(k) for k in cfg.shots], [int(s) for s in cfg.seeds]
    finetune_cfg = FinetuneConfig(data=cfg.data, fields=cfg.fields)
    examples, files = load_splits(finetune_cfg)
    if "test" not in examples:
        raise ValueError(f"{cfg.data}: few-shot results are test results; the directory needs a test file")
    labels = Classify.for_data(examples, files, load_model_dir(cfg.init)[1], cfg.classify, metric="",
                               fields=cfg.fields).labels
    parse_verbalizer(cfg.verbalizer)  # a malformed verbalizer fails before any training
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    start = time.perf_counter()
    bar = tqdm(total=len(shots) * len(seeds) * len(cfg.methods), desc="few-shot runs",
               disable=None if cfg.train.progress else True)
    for k in shots:
        for seed in seeds:
            train_set = sample_per_class(examples["train"], labels, k, seed)
            dev_set = sample_per_class(examples["dev"], labels, k, seed + 1000)
            for method in cfg.methods:
                metrics = run_one(cfg, method, labels, train_set, dev_set, examples["test"], seed,
                                  out / f"run-k{k}-s{seed}-{method}")
                runs.append({"k": k, "seed": seed, "method": method, **metrics})
                bar.update(1)
                bar.write(f"k={k} seed={seed} {method}: test accuracy {metrics['accuracy']:.4f}")
    bar.close()
    table = summarise(runs, shots, list(cfg.methods))
    summary = {"config": to_dict(cfg), "labels": labels, "runs": runs, "table": table,
               "n_test": len(examples["test"]), "wall_time_s": round(time.perf_counter() - start, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    report = format_fewshot(summary)
    (out / "report.md").write_text(report + "\n", encoding="utf-8")
    print("\n" + report)
    return summary


def summarise(runs: list[dict[str, Any]], shots: list[int], methods: list[str]) -> list[dict[str, Any]]:
    rows = []
    for k in shots:
        row: dict[str, Any] = {"k": k}
        for method in methods:
            values = [r["accuracy"] for r in runs if r["k"] == k and r["method"] == method]
            row[method] = {"mean": statistics.fmean(values),
                           "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
        rows.append(row)
    return rows


def format_fewshot(summary: dict[str, Any]) -> str:
    methods = summary["config"]["methods"]
    names = {"head": "head fine-tuning", "prompt": "prompt-based (PET)"}
    lines = [f"# Few-shot test accuracy (mean ± std over {len(summary['config']['seeds'])} seeds; "
             f"n_test = {summary['n_test']})", "",
             "| k per class | " + " | ".join(names[m] for m in methods) + " |", "|---:|" + "---:|" * len(methods)]
    for row in summary["table"]:
        cells = [f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}" for m in methods]
        lines.append(f"| {row['k']} | " + " | ".join(cells) + " |")
    lines += ["", f"template: `{summary['config']['template']}`, verbalizer: `{summary['config']['verbalizer']}`, "
                  f"model: {summary['config']['init']}; wall time {summary['wall_time_s']:.0f} s"]
    return "\n".join(lines)
