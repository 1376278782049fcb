"""The fine-tuning stage, for every task: labelled files → best checkpoint on dev → test report."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmcraft.config import FinetuneConfig, to_dict
from lmcraft.data.errors import DataError
from lmcraft.data.readers import FORMATS, write_jsonl
from lmcraft.evaluate.report import evaluate_examples
from lmcraft.model.builtin import resolve_model_dir
from lmcraft.model.convert import pretrained_pooler
from lmcraft.model.heads import Model
from lmcraft.model.io import count_parameters, load_model_dir, save_model_dir
from lmcraft.model.transformer import TransformerConfig
from lmcraft.runcard import write_run_card
from lmcraft.tasks.classify.task import Classify
from lmcraft.tasks.kinds import task_kind
from lmcraft.tokenizer import TextTokenizer
from lmcraft.train.distributed import Distributed, TaskModule
from lmcraft.train.loop import evaluate, train


def find_split(directory: Path, split: str, *, required: bool,
               extensions: Sequence[str] = tuple(FORMATS)) -> Path | None:
    """``directory/split.EXT`` for one of ``extensions``; exactly one must exist when ``required``."""
    found = [directory / f"{split}{ext}" for ext in extensions if (directory / f"{split}{ext}").exists()]
    if len(found) > 1:
        raise DataError(directory, f"several {split} files: {', '.join(p.name for p in found)}; keep one")
    if not found and required:
        names = ", ".join(f"{split}{ext}" for ext in extensions)
        raise DataError(directory, f"no {split} file (looked for {names})")
    return found[0] if found else None


def load_splits(cfg: FinetuneConfig) -> tuple[dict[str, list[Any]], dict[str, Path]]:
    """Read train / dev (/ test) with the reader of ``cfg.task``."""
    if not cfg.data:
        raise ValueError("fine-tuning needs labelled data: give --data DIR with train and dev files")
    kind = task_kind(cfg.task)
    directory = Path(cfg.data)
    paths = {s: find_split(directory, s, required=s != "test", extensions=kind.extensions)
             for s in ("train", "dev", "test")}
    files = {s: p for s, p in paths.items() if p is not None}
    return {s: kind.read(p, cfg) for s, p in files.items()}, files


def evaluate_test(model: Model, tokenizer: TextTokenizer, task: Any, examples: Sequence[Any], *,
                  predictions: Path | None, max_len: int, cfg: FinetuneConfig) -> dict[str, Any]:
    """Metrics of a fine-tuned model on labelled examples; every prediction written to ``predictions``."""
    if isinstance(task, Classify):  # the full report: per-class precision / recall and the confusion matrix
        return evaluate_examples(model, tokenizer, examples, predictions=predictions, progress=cfg.train.progress,
                                 head=task.head)
    items = task.encode(tokenizer, examples, max_len)
    metrics = evaluate(TaskModule(model, task), task, items, cfg.train, Distributed(), desc="test")
    if hasattr(task, "test_report"):  # generation: decode every test case, score the outputs
        generated, records = task.test_report(model, tokenizer, examples, max_len=max_len,
                                              progress=cfg.train.progress)
        if predictions is not None:
            write_jsonl(predictions, records)
        return {**{f"target_{k}": v for k, v in metrics.items()}, **generated, "n": len(records)}
    if predictions is not None:
        write_jsonl(predictions, task.prediction_records(model, tokenizer, examples, max_len))
    return {**metrics, "n": len(examples)}


def needs_decoder(cfg: FinetuneConfig) -> bool:
    """Whether the task trains a decoder-only (causal) model."""
    return cfg.task == "chat" or (cfg.task == "seq2seq" and cfg.layout == "decoder")


def start_model(cfg: FinetuneConfig) -> tuple[Model, TextTokenizer, int, dict | None, dict | None]:
    """The model fine-tuning starts from: --init's weights (or only its architecture with --random-init), or
    a fresh model of --size with --tokenizer. Returns (model without task heads, tokenizer, input length, the
    checkpoint's pretrained BERT pooler if any, the parent's run card if any). A decoder keeps its language-
    model head, which generation tasks fine-tune."""
    torch.manual_seed(cfg.train.seed)
    pooler = parent_card = None
    causal = needs_decoder(cfg)
    if cfg.init:
        model, tokenizer, _ = load_model_dir(cfg.init, heads=causal)
        if cfg.task in ("seq2seq", "chat") and model.cfg.causal != causal:
            want = "a decoder (causal LM)" if causal else "an encoder"
            raise ValueError(f"{cfg.init} is {'a decoder' if model.cfg.causal else 'an encoder'}, but --task "
                             f"{cfg.task}{' --layout ' + cfg.layout if cfg.task == 'seq2seq' else ''} needs {want}")
        for name in [n for n in model.head_specs if n != "lm"]:
            del model.heads[name], model.head_specs[name]
        card = resolve_model_dir(cfg.init) / "run_card.json"
        parent_card = json.loads(card.read_text(encoding="utf-8")) if card.exists() else None
        max_len = min(model.cfg.max_tokens, cfg.model.max_len)
        if cfg.random_init:  # the same architecture and tokenizer, fresh weights
            model = Model(model.cfg, {})
        elif not causal:
            pooler = pretrained_pooler(resolve_model_dir(cfg.init))
    else:
        if not cfg.tokenizer:
            raise ValueError("training from scratch needs --tokenizer DIR (or start from a model with --init)")
        tokenizer = TextTokenizer.load(cfg.tokenizer)
        arch = TransformerConfig.from_size(
            cfg.model.size, tokenizer.vocab_size, max_len=cfg.model.max_len, norm_first=cfg.model.norm_first,
            position=cfg.model.position, dropout=cfg.model.dropout, pad_id=tokenizer.pad_id, causal=causal,
        )
        model = Model(arch, {})
        max_len = cfg.model.max_len
    model.input_tokens = max_len  # prediction later cuts inputs where training did
    return model, tokenizer, max_len, pooler, parent_card


def _saver(model: Model, tokenizer: TextTokenizer) -> Any:
    def save_best(path: Path, state: dict[str, torch.Tensor]) -> None:
        save_model_dir(path, model, tokenizer, state=state, extra={"stage": "finetune"})
    return save_best


def _lora(model: Model, tokenizer: TextTokenizer, cfg: FinetuneConfig) -> Any:
    """Put low-rank adapters on ``model`` (everything else frozen, the new task head trained); the returned
    saver writes the best model with the adapters merged into their layers, so that it loads as a plain model."""
    from lmcraft.model.lora import LoraConfig, apply_lora, merged_state_dict, trainable_report

    options: dict[str, Any] = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha}
    if cfg.lora_targets:
        options["targets"] = list(cfg.lora_targets)
    adapted = apply_lora(model, LoraConfig(**options))
    report = trainable_report(model)
    print(f"LoRA rank {cfg.lora_rank} on {len(adapted)} layers: {report['trainable']:,} of {report['total']:,} "
          f"parameters trained ({report['trainable_percent']:.2f}%)")

    def save_best(path: Path, state: dict[str, torch.Tensor]) -> None:
        save_model_dir(path, model, tokenizer, state=merged_state_dict(model, state),
                       extra={"stage": "finetune", "lora": {**options, **report}})
    return save_best


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune (or train from scratch) a model for ``cfg.task``; evaluate the best checkpoint on test."""
    start = time.perf_counter()
    kind = task_kind(cfg.task)
    examples, files = load_splits(cfg)
    if cfg.max_train_examples > 0:
        examples["train"] = examples["train"][: cfg.max_train_examples]
    model, tokenizer, max_len, pooler, parent_card = start_model(cfg)
    if cfg.task == "chat":
        from lmcraft.model.vocab import add_special_tokens
        from lmcraft.tasks.seq2seq.task import ROLE_TOKENS

        added = add_special_tokens(model, tokenizer, list(ROLE_TOKENS.values()))
        if added:
            print(f"added the role tokens {added} to the tokenizer and the embeddings")
    task = kind.build(examples, files, cfg, tokenizer)
    if isinstance(task, Classify):
        task.pooling = cfg.pooling if cfg.pooling != "auto" else ("pooler" if pooler is not None else "cls")
    if task.head in model.heads:  # a decoder's own language-model head: keep its weights, record the task
        model.head_specs[task.head] = {**model.head_specs[task.head], **task.head_spec(),
                                       "tied": model.head_specs[task.head].get("tied", True)}
    else:
        model.add_head(task.head, task.head_spec())
    if isinstance(task, Classify) and task.pooling == "pooler" and pooler is not None:
        model.heads[task.head].pooler.load_state_dict(pooler)  # start from the checkpoint's pretrained pooler
    save_best = _saver(model, tokenizer)
    if cfg.lora_rank > 0:
        save_best = _lora(model, tokenizer, cfg)
    train_items = task.encode(tokenizer, examples["train"], max_len)
    dev_items = task.encode(tokenizer, examples["dev"], max_len)
    prepare_s = time.perf_counter() - start
    start = "from " + cfg.init if cfg.init and not cfg.random_init else "from scratch"
    labels = f", labels {task.labels}" if hasattr(task, "labels") else ""
    print(f"finetune ({cfg.task}): {len(train_items):,} train / {len(dev_items):,} dev items{labels}; "
          f"{start}, {count_parameters(model) / 1e6:.1f}M parameters")

    out = Path(cfg.out)
    result = train(model, task, train_items, dev_items, cfg.train, run_dir=out,
                   lengths=[len(it.ids) for it in train_items], save_best=save_best)
    if not result.is_main:  # other processes of a distributed run stop here; rank 0 tests and writes
        return {"stage": "finetune", "rank": "worker"}
    summary: dict[str, Any] = {
        "stage": "finetune", "model_dir": str(out / "best"), "steps": result.steps, "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "dev": {k: v for k, v in result.best_metrics.items() if k not in ("step", "split", "best", "elapsed_s")},
        "wall_time_s": {"prepare": prepare_s, "train": result.seconds},
    }
    if "test" in examples:
        t0 = time.perf_counter()
        best, best_tokenizer, _ = load_model_dir(out / "best")  # test on the best checkpoint, not the last
        summary["test"] = evaluate_test(best, best_tokenizer, task, examples["test"], cfg=cfg, max_len=max_len,
                                        predictions=out / "test_predictions.jsonl")
        summary["wall_time_s"]["test"] = time.perf_counter() - t0
    if cfg.baseline and "test" in examples:
        print(f"fitting the classic {cfg.task} baseline on the same split (skip with --no-baseline)", flush=True)
        t0 = time.perf_counter()
        summary["baseline"] = kind.baseline(examples, files)
        summary["wall_time_s"]["baseline"] = time.perf_counter() - t0
    write_run_card(out / "best", stage="finetune", config=to_dict(cfg), data=list(files.values()),
                   seed=cfg.train.seed, wall_time_s=summary["wall_time_s"],
                   metrics={k: summary[k] for k in ("dev", "test") if k in summary}, parent=parent_card)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary
