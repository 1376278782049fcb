"""The fine-tuning stage, for every registered task: labelled files → best checkpoint on dev → test report.

The stage knows tasks only through their contract (``tasks/contract.py``): the task's reader reads the
splits, ``for_data`` builds the task from the training split, ``attach`` puts its head on the model, the
training loop trains it, and the ``Predictor`` tests the best checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from lmcraft.config import ModelOptions
from lmcraft.data.errors import DataError
from lmcraft.data.readers import FORMATS
from lmcraft.inference.predictor import Predictor
from lmcraft.model.builtin import resolve_model_dir
from lmcraft.model.convert import pretrained_pooler
from lmcraft.model.heads import Model
from lmcraft.model.io import count_parameters, load_model_dir, save_model_dir
from lmcraft.model.transformer import TransformerConfig
from lmcraft.stage import finish_stage, run_summary
from lmcraft.stage_options import FinetuneConfig, InitOptions, LoraOptions, options_for
from lmcraft.tasks.contract import Splits, Task
from lmcraft.tasks.registry import task_class
from lmcraft.tokenizer import TextTokenizer, recommended_kind, train_tokenizer
from lmcraft.train.doctor import Checkup
from lmcraft.train.loop import OnEval, train

T = TypeVar("T")


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


def take_train(examples: list[T], n: int, seed: int = -1) -> list[T]:
    """The training examples a run learns from: all (``n`` 0), the first ``n``, or with ``seed`` >= 0 ``n`` drawn
    at random with it (torch's seeded permutation: the same draw on every machine), kept in file order. The
    draws of one seed are nested: the first ``n`` of the same permutation, so 200 lie within 1,000."""
    if n <= 0 or n >= len(examples):
        return list(examples)
    if seed < 0:
        return examples[:n]
    chosen = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))[:n]
    return [examples[i] for i in sorted(chosen.tolist())]


def load_splits(cfg: FinetuneConfig) -> tuple[Splits, dict[str, Path]]:
    """Read train / dev (/ test) with the reader of ``cfg.task``."""
    if not cfg.data:
        raise ValueError("fine-tuning needs labelled data: give --data DIR with train and dev files")
    task = task_class(cfg.task)
    directory = Path(cfg.data)
    paths = {s: find_split(directory, s, required=s != "test", extensions=task.extensions)
             for s in ("train", "dev", "test")}
    files = {s: p for s, p in paths.items() if p is not None}
    return {s: task.read(p, cfg.fields) for s, p in files.items()}, files


def start_model(start: InitOptions, model_options: ModelOptions, *, decoder: bool, generates: bool, seed: int,
                keep_head: str | None = None) -> tuple[Model, TextTokenizer, dict[str, dict[str, torch.Tensor]],
                                                       dict | None]:
    """The model fine-tuning starts from: --init's weights (or only its architecture with --random-init), or
    a fresh model of --size with --tokenizer. Returns (model without task heads, tokenizer, parts of the
    checkpoint that a head may start from (BERT's pretrained ``pooler``), the parent's run card if any). The
    head ``keep_head`` of the initial model stays (a decoder's ``lm``, a span-pretrained ``decoder``): the
    task goes on training it."""
    torch.manual_seed(seed)
    pretrained: dict[str, dict[str, torch.Tensor]] = {}
    parent_card = None
    if start.init:
        model, tokenizer, _ = load_model_dir(start.init, heads=keep_head is not None)
        if generates and model.cfg.causal != decoder:
            want = "a decoder (causal LM)" if decoder else "an encoder"
            raise ValueError(f"{start.init} is {'a decoder' if model.cfg.causal else 'an encoder'}, but this task "
                             f"and layout need {want}")
        for name in [n for n in model.head_specs if n != keep_head]:
            del model.heads[name], model.head_specs[name]
        card = resolve_model_dir(start.init) / "run_card.json"
        parent_card = json.loads(card.read_text(encoding="utf-8")) if card.exists() else None
        max_len = min(model.cfg.max_tokens, model_options.max_len)
        if start.random_init:  # the same architecture and tokenizer, fresh weights
            model = Model(model.cfg, {})
        elif not decoder:
            pooler = pretrained_pooler(resolve_model_dir(start.init))
            if pooler is not None:
                pretrained["pooler"] = pooler
    else:
        if not start.tokenizer:
            raise ValueError("training from scratch needs --tokenizer DIR (or start from a model with --init)")
        tokenizer = TextTokenizer.load(start.tokenizer)
        model = Model(TransformerConfig.for_new_model(model_options, tokenizer.vocab_size, tokenizer.pad_id,
                                                      causal=decoder), {})
        max_len = model_options.max_len
    model.input_tokens = max_len  # prediction later cuts inputs where training did
    return model, tokenizer, pretrained, parent_card


def tokenizer_from_data(texts: list[str], out: Path, *, vocab_size: int = 8000) -> Path:
    """A tokenizer learnt from ``texts`` (WordPiece for Chinese-heavy text, byte-level BPE otherwise), saved
    under ``out``: what a model trained from scratch without ``--tokenizer`` reads with."""
    kind = recommended_kind(texts)
    tokenizer = train_tokenizer(texts, kind=kind, vocab_size=vocab_size)
    TextTokenizer(tokenizer).save(out / "tokenizer")
    print(f"no --tokenizer given: trained a {kind} tokenizer ({tokenizer.get_vocab_size():,} tokens) on the "
          f"{len(texts):,} training texts, saved to {out / 'tokenizer'}")
    return out / "tokenizer"


def _saver(model: Model, tokenizer: TextTokenizer) -> Any:
    def save_best(path: Path, state: dict[str, torch.Tensor]) -> None:
        save_model_dir(path, model, tokenizer, state=state, extra={"stage": "finetune"})
    return save_best


def _lora(model: Model, tokenizer: TextTokenizer, lora: LoraOptions) -> Any:
    """Put low-rank adapters on ``model`` (everything else frozen, the new task head trained); the returned
    saver writes the best model with the adapters merged into their layers, so that it loads as a plain model."""
    from lmcraft.model.lora import LoraConfig, apply_lora, merged_state_dict, trainable_report

    options: dict[str, Any] = {"rank": lora.lora_rank, "alpha": lora.lora_alpha}
    if lora.lora_targets:
        options["targets"] = list(lora.lora_targets)
    adapted = apply_lora(model, LoraConfig(**options))
    report = trainable_report(model)
    print(f"LoRA rank {lora.lora_rank} on {len(adapted)} layers: {report['trainable']:,} of {report['total']:,} "
          f"parameters trained ({report['trainable_percent']:.2f}%)")

    def save_best(path: Path, state: dict[str, torch.Tensor]) -> None:
        save_model_dir(path, model, tokenizer, state=merged_state_dict(model, state),
                       extra={"stage": "finetune", "lora": {**options, **report}})
    return save_best


def add_task_tokens(model: Model, tokenizer: TextTokenizer, task: type[Task]) -> None:
    """The special tokens a task needs (chat's role tokens), added to the tokenizer and the embeddings."""
    if task.special_tokens:
        from lmcraft.model.vocab import add_special_tokens

        added = add_special_tokens(model, tokenizer, list(task.special_tokens))
        if added:
            print(f"added the tokens {added} to the tokenizer and the embeddings")


def label_counts(examples: Sequence[Any]) -> dict[str, int]:
    """Training examples per label, for tasks whose examples carry one label each (empty otherwise)."""
    counts: dict[str, int] = {}
    for ex in examples:
        label = getattr(ex, "label", None)
        if not isinstance(label, str):
            return {}
        counts[label] = counts.get(label, 0) + 1
    return counts


def run_finetune(cfg: FinetuneConfig, *, on_eval: OnEval | None = None) -> dict[str, Any]:
    """Fine-tune (or train from scratch) a model for ``cfg.task``; evaluate the best checkpoint on test.
    ``on_eval(step, dev_metrics)`` is called after each dev evaluation; True stops the run there (the
    tuner's pruning)."""
    began = time.perf_counter()
    task_cls = task_class(cfg.task)
    options = options_for(cfg.task_options, task_cls)
    splits, files = load_splits(cfg)
    splits["train"] = take_train(splits["train"], cfg.max_train_examples, cfg.train_sample_seed)
    if not cfg.start.init and not cfg.start.tokenizer:  # the run card then names the tokenizer it trained
        trained = tokenizer_from_data(task_cls.texts(splits["train"]), Path(cfg.out))
        cfg = replace(cfg, start=replace(cfg.start, tokenizer=str(trained)))
    model, tokenizer, pretrained, parent_card = start_model(
        cfg.start, cfg.model, decoder=task_cls.wants_decoder(options), generates=task_cls.generates,
        seed=cfg.train.seed, keep_head=task_cls.continues_head(options))
    max_len = model.input_tokens
    add_task_tokens(model, tokenizer, task_cls)
    task = task_cls.for_data(splits, files, tokenizer, options, metric=cfg.metric, fields=cfg.fields)
    task.attach(model, pretrained)
    save_best = _lora(model, tokenizer, cfg.lora) if cfg.lora.lora_rank > 0 else _saver(model, tokenizer)
    train_items = task.encode(tokenizer, splits["train"], max_len)
    dev_items = task.encode(tokenizer, splits["dev"], max_len)
    prepare_s = time.perf_counter() - began
    origin = "from " + cfg.start.init if cfg.start.init and not cfg.start.random_init else "from scratch"
    labels = f", labels {task.labels}" if hasattr(task, "labels") else ""
    print(f"finetune ({cfg.task}): {len(train_items):,} train / {len(dev_items):,} dev items{labels}; "
          f"{origin}, {count_parameters(model) / 1e6:.1f}M parameters")

    out = Path(cfg.out)
    result = train(model, task, train_items, dev_items, cfg.train, run_dir=out,
                   lengths=[len(it.ids) for it in train_items], save_best=save_best, on_eval=on_eval,
                   started=began, evals_after=1 + len(splits.get("test", [])) / max(len(splits["dev"]), 1))
    if not result.is_main:  # other processes of a distributed run stop here; rank 0 tests and writes
        return {"stage": "finetune", "rank": "worker"}
    summary = run_summary("finetune", out, result, prepare_s)
    if "test" in splits:
        t0 = time.perf_counter()
        best = Predictor(out / "best", head=task.head, compiled=False)  # test the best checkpoint, not the last
        summary["test"] = best.evaluate(splits["test"], predictions=out / "test_predictions.jsonl",
                                        progress=cfg.train.progress)
        summary["wall_time_s"]["test"] = time.perf_counter() - t0
        if cfg.baseline:
            print(f"fitting the classic {cfg.task} baseline on the same split (skip with --no-baseline)", flush=True)
            t0 = time.perf_counter()
            summary["baseline"] = task_cls.baseline(splits, files)
            summary["wall_time_s"]["baseline"] = time.perf_counter() - t0
    checkup = Checkup("finetune", task.metric, task.greater_is_better, cfg.train, dev_size=len(splits["dev"]),
                      label_counts=label_counts(splits["train"]))
    return finish_stage(out, summary, config=cfg, data=list(files.values()), seed=cfg.train.seed,
                        parent=parent_card, checkup=checkup)
