"""The fine-tuning stage for classification: labelled files → best checkpoint on dev → test report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from lmcraft.config import FinetuneConfig, to_dict
from lmcraft.data.errors import DataError
from lmcraft.data.readers import FORMATS, Example, Fields, check_labels, read_examples
from lmcraft.evaluate.report import evaluate_examples
from lmcraft.model.builtin import resolve_model_dir
from lmcraft.model.convert import pretrained_pooler
from lmcraft.model.heads import Model
from lmcraft.model.io import count_parameters, load_model_dir, save_model_dir
from lmcraft.model.transformer import TransformerConfig
from lmcraft.runcard import write_run_card
from lmcraft.tasks.classify import Classify
from lmcraft.tokenizer import TextTokenizer
from lmcraft.train.loop import train


def find_split(directory: Path, split: str, *, required: bool) -> Path | None:
    """``directory/split.{jsonl,json,csv,tsv}``; exactly one must exist when ``required``."""
    found = [directory / f"{split}{ext}" for ext in FORMATS if (directory / f"{split}{ext}").exists()]
    if len(found) > 1:
        raise DataError(directory, f"several {split} files: {', '.join(p.name for p in found)}; keep one")
    if not found and required:
        raise DataError(directory, f"no {split} file ({split}.jsonl, {split}.csv or {split}.tsv)")
    return found[0] if found else None


def load_splits(cfg: FinetuneConfig) -> tuple[dict[str, list[Example]], dict[str, Path], list[str]]:
    """Read train / dev (/ test) and check that dev and test use only labels that training saw."""
    if not cfg.data:
        raise ValueError("fine-tuning needs labelled data: give --data DIR with train and dev files")
    directory = Path(cfg.data)
    fields = Fields(text=cfg.text_field, label=cfg.label_field, pair=cfg.pair_field or None)
    paths = {s: find_split(directory, s, required=s != "test") for s in ("train", "dev", "test")}
    files = {s: p for s, p in paths.items() if p is not None}
    examples = {s: read_examples(p, fields) for s, p in files.items()}
    labels = sorted({ex.label for ex in examples["train"]})  # type: ignore[type-var]
    if len(labels) < 2:
        raise DataError(files["train"], f"training data has {len(labels)} distinct label(s); need at least 2",
                        field=cfg.label_field)
    for split in ("dev", "test"):
        if split in examples:
            check_labels(files[split], examples[split], labels, cfg.label_field)
    return examples, files, labels


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune (or train from scratch) a classifier; evaluate the best checkpoint on test."""
    start = time.perf_counter()
    examples, files, labels = load_splits(cfg)
    parent_card = None
    torch.manual_seed(cfg.train.seed)
    pooler = None
    if cfg.init:
        model, tokenizer, _ = load_model_dir(cfg.init, heads=False)
        card = resolve_model_dir(cfg.init) / "run_card.json"
        parent_card = json.loads(card.read_text(encoding="utf-8")) if card.exists() else None
        max_len = min(model.cfg.max_tokens, cfg.model.max_len)
        if cfg.random_init:  # the same architecture and tokenizer, fresh weights
            model = Model(model.cfg, {})
        else:
            pooler = pretrained_pooler(resolve_model_dir(cfg.init))
    else:
        if not cfg.tokenizer:
            raise ValueError("training from scratch needs --tokenizer DIR (or start from a model with --init)")
        tokenizer = TextTokenizer.load(cfg.tokenizer)
        arch = TransformerConfig.from_size(
            cfg.model.size, tokenizer.vocab_size, max_len=cfg.model.max_len, norm_first=cfg.model.norm_first,
            position=cfg.model.position, dropout=cfg.model.dropout, pad_id=tokenizer.pad_id,
        )
        model = Model(arch, {})
        max_len = cfg.model.max_len
    pooling = cfg.pooling if cfg.pooling != "auto" else ("pooler" if pooler is not None else "cls")
    model.input_tokens = max_len  # prediction later cuts inputs where training did
    task = Classify(labels, tokenizer.pad_id, metric=cfg.metric, pooling=pooling)
    model.add_head(task.head, task.head_spec())
    if pooling == "pooler" and pooler is not None:  # start from the checkpoint's pretrained pooler
        model.heads[task.head].pooler.load_state_dict(pooler)
    train_items = task.encode(tokenizer, examples["train"], max_len)
    dev_items = task.encode(tokenizer, examples["dev"], max_len)
    prepare_s = time.perf_counter() - start
    start = "from " + cfg.init if cfg.init and not cfg.random_init else "from scratch"
    print(f"finetune: {len(train_items):,} train / {len(dev_items):,} dev examples, labels {labels}; "
          f"{start}, {count_parameters(model) / 1e6:.1f}M parameters")

    out = Path(cfg.out)
    result = train(model, task, train_items, dev_items, cfg.train, run_dir=out,
                   lengths=[len(it.ids) for it in train_items],
                   save_best=lambda path, state: save_model_dir(path, model, tokenizer, state=state,
                                                                extra={"stage": "finetune"}))
    if not result.is_main:  # other processes of a distributed run stop here; rank 0 tests and writes
        return {"stage": "finetune", "rank": "worker"}
    summary: dict[str, Any] = {
        "stage": "finetune", "model_dir": str(out / "best"), "steps": result.steps, "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "dev": {k: result.best_metrics[k] for k in ("accuracy", "macro_f1", "loss")},
        "wall_time_s": {"prepare": prepare_s, "train": result.seconds},
    }
    if "test" in examples:
        t0 = time.perf_counter()
        best, best_tokenizer, _ = load_model_dir(out / "best")  # test on the best checkpoint, not the last
        summary["test"] = evaluate_examples(best, best_tokenizer, examples["test"],
                                            predictions=out / "test_predictions.jsonl", progress=cfg.train.progress)
        summary["wall_time_s"]["test"] = time.perf_counter() - t0
    write_run_card(out / "best", stage="finetune", config=to_dict(cfg), data=list(files.values()),
                   seed=cfg.train.seed, wall_time_s=summary["wall_time_s"],
                   metrics={k: summary[k] for k in ("dev", "test") if k in summary}, parent=parent_card)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary
