"""Typed configuration of every stage, shared by the command line and YAML recipes.

Each field carries its help text, so the dataclass *is* the ``--help`` of its subcommand and the
reference of its recipe section. ``from_dict`` rejects unknown keys with the key's name.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def opt(default: Any, help: str) -> Any:
    """A dataclass field with a default and a help text."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def budget_seconds(text: str, *, name: str = "--budget") -> float:
    """'90s', '30m', '2h', '1.5h' or a bare number of minutes → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"{name}: expected a time such as 90s, 30m or 2h, got {text!r}")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "": 60}[m.group(2)]


@dataclass
class TrainConfig:
    """Options of the training loop, the same for pretraining and fine-tuning."""

    lr: float = opt(5e-4, "peak learning rate of AdamW")
    weight_decay: float = opt(0.01, "AdamW weight decay (never applied to biases and LayerNorm)")
    batch_size: int = opt(32, "examples per micro-batch")
    grad_accum: int = opt(1, "micro-batches per optimiser step; the effective batch is their product")
    max_steps: int = opt(0, "optimiser steps to take; 0 means use --epochs")
    epochs: float = opt(3.0, "passes over the training data, when --max-steps is 0")
    warmup_ratio: float = opt(0.06, "share of the steps over which the learning rate rises linearly from 0")
    clip: float = opt(1.0, "clip the gradient norm to this (sparse feature tables, which train by SGD, are "
                           "left out); 0 turns clipping off")
    eval_every: int = opt(200, "evaluate on the dev set every this many steps (and at the end)")
    eval_batch_size: int = opt(128, "examples per evaluation batch")
    patience: int = opt(3, "stop after this many evaluations without a better dev metric; 0 never stops")
    max_minutes: float = opt(0.0, "stop (with a last evaluation) after this many minutes; 0 means no limit")
    budget: str = opt("", "a time for the whole stage (90s, 8m, 1h): the learning rate warms up over "
                          "--warmup-ratio of it and falls linearly to zero as it ends, and the stage stops then; "
                          "--epochs is ignored and --max-steps, if set, still caps the steps (docs/training.md)")
    seed: int = opt(0, "seed of initialisation, dropout, data order and masking")
    bf16: str = opt("auto", "bf16 autocast: auto (on where the GPU or CPU computes bf16 natively), on or off")
    max_bad_steps: int = opt(5, "stop with an error after this many non-finite losses in a row")
    log_every: int = opt(20, "write training loss and speed to metrics.jsonl every this many steps")
    progress: bool = opt(True, "show progress bars (on a terminal; never in redirected output)")
    resume: bool = opt(False, "continue from the newest whole checkpoint in the run directory, exactly")
    resume_anyway: bool = opt(False, "with --resume: continue even if the options that decide the run (lr, "
                                     "steps, batch, seed, ...) or the training data differ from the run's own")
    save_every: int = opt(0, "write a resumable checkpoint every this many steps; 0 means at every evaluation")
    keep_checkpoints: int = opt(2, "how many of the newest checkpoints to keep (the best one is kept as well)")
    distributed: str = opt("ddp", "under torchrun: ddp (a model copy per process) or fsdp (parameters sharded)")
    tensorboard: bool = opt(True, "also write TensorBoard event files to RUN/tensorboard")
    length_buckets: bool = opt(False, "batch texts of similar length together: about 1.2x faster fine-tuning than "
                                      "the default shuffled batches (whose padding is skipped anyway), but a point "
                                      "less accurate on the sentiment data (docs/performance.md)")
    compile: bool = opt(False, "compile the backbone with torch.compile (inductor, dynamic shapes; needs a C++ "
                               "compiler on CPU): the first steps wait tens of seconds for it, later ones run faster")

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "eval_every", "eval_batch_size", "log_every", "max_bad_steps",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if self.bf16 not in ("auto", "on", "off"):
            raise ValueError(f"bf16 must be auto, on or off, got {self.bf16!r}")
        if self.distributed not in ("ddp", "fsdp"):
            raise ValueError(f"distributed must be ddp or fsdp, got {self.distributed!r}")
        if self.save_every < 0:
            raise ValueError(f"save_every must be 0 or more, got {self.save_every}")
        if self.budget:
            budget_seconds(self.budget, name="budget")


@dataclass
class ModelOptions:
    """Architecture of a model trained from scratch (a pretrained model brings its own)."""

    size: str = opt("mini", "named size: tiny, mini, small or base")
    max_len: int = opt(128, "longest input in tokens; longer texts are truncated (at most the model's own limit)")
    norm_first: bool = opt(False, "pre-LN instead of the article's post-LN")
    position: str = opt("learned", "position encoding: learned, sinusoidal or rotary")
    dropout: float = opt(0.1, "dropout rate")


@dataclass
class TokenizerConfig:
    corpus: list[str] = opt([], "text files (one document a line), JSONL files with a 'text' field, or a seq2seq / "
                                "chat task's JSONL (both sides of every pair; every message)")
    out: str = opt("tokenizer", "directory to write tokenizer.json to")
    kind: str = opt("wordpiece", "wordpiece (BERT-style, one token per CJK character) or bpe (byte-level)")
    vocab_size: int = opt(8000, "vocabulary size, special tokens included")
    min_frequency: int = opt(2, "ignore pieces seen fewer times than this")
    lowercase: bool = opt(True, "lowercase before tokenizing (wordpiece only)")


@dataclass
class PretrainConfig:
    corpus: list[str] = opt([], "text files (one document a line), JSONL files with a 'text' field, or directories "
                                "of token shards written by `lmcraft data corpus` (mlm without --whole-word, clm)")
    tokenizer: str = opt("", "directory or file of tokenizer.json")
    out: str = opt("runs/pretrain", "run directory; the best model is written to OUT/best")
    dev_fraction: float = opt(0.02, "share of the packed blocks held out for dev MLM loss")
    objective: str = opt("mlm", "mlm (masked LM, an encoder), electra (replaced-token detection: a small generator "
                                "fills masked tokens, the encoder tells every token original or replaced; learns "
                                "from all tokens, not 15%%), clm (causal LM, a decoder; documents packed into "
                                "blocks without attending to each other) or span (T5 span corruption: the encoder "
                                "reads blocks with spans cut out, a decoder head writes them back after sentinel "
                                "tokens <extra_id_N>, added to the tokenizer; fine-tune it with --task seq2seq "
                                "--layout encoder-decoder)")
    mask_rate: float = opt(0.15, "share of tokens selected for MLM (span: the share cut out in spans)")
    sentence_task: str = opt("", "with mlm: also nsp (next-sentence prediction) or sop (sentence-order prediction) "
                                 "on sentence pairs cut from each corpus line (a document)")
    whole_word: bool = opt(False, "whole-word masking: mask all tokens of a word together (Chinese words from "
                                  "jieba, WordPiece ## pieces with their word); mask_rate is then the share of words")
    user_dict: str = opt("", "whole-word masking: a jieba user dictionary of domain words (one word a line)")
    init: str = opt("", "continue pretraining this model directory (lmcraft's or a Hugging Face BERT-style one) "
                        "instead of a new model; its tokenizer and architecture are used")
    add_words: str = opt("", "with --init: a file of domain words (one a line) to add to the tokenizer as whole "
                             "tokens; their embeddings start at the mean of their old pieces'")
    replay: list[str] = opt([], "general text to mix into a domain corpus (continued pretraining), against "
                                "forgetting; its held-out loss is reported next to the domain's")
    replay_ratio: float = opt(0.2, "with --replay: the share of training blocks taken from the general text (0: "
                                   "train on the domain only, but still report the general text's held-out loss)")
    embedding_init: str = opt("random", "how a new model's token embeddings start: random, or cooccurrence (PPMI-SVD "
                                        "vectors counted from the training blocks in seconds; a head start for short "
                                        "pretraining, docs/training.md)")
    model: ModelOptions = field(default_factory=ModelOptions)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, max_steps=1000))


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[f.name]


def from_dict(cls: type[T], values: dict[str, Any] | None, *, where: str = "") -> T:
    """Build a (nested) config dataclass from a mapping; unknown keys are an error naming the key."""
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where or 'top level'}: unknown option(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        kind = _field_type(cls, known[name])
        key = f"{where}.{name}" if where else name
        nested = dataclasses.is_dataclass(kind)
        kwargs[name] = from_dict(kind, value, where=key) if nested else _coerce(value, kind, key)  # type: ignore[arg-type]
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check a recipe value against its field's type; YAML reads '5e-4' as a string, so numbers written as
    strings are converted."""
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind in (int, float):
            if isinstance(value, bool):
                raise TypeError
            number = kind(value)
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise TypeError
            return number
        if kind is str:
            if isinstance(value, bool):  # YAML 1.1 reads a bare on / off / yes / no as a boolean
                return "on" if value else "off"
            if not isinstance(value, str | int | float):
                raise TypeError
            return str(value)
        if typing.get_origin(kind) is list:
            return [str(v) for v in (value if isinstance(value, list) else [value])]
    except (TypeError, ValueError):
        name = getattr(kind, "__name__", str(kind))
        raise ValueError(f"{key}: expected {name}, got {value!r}") from None
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


# ---------------------------------------------------------------------------------------------------------
# Command line: one flag per field, nested dataclasses flattened (their field names are all distinct).


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shadowing(cls: type, hints: dict[str, Any], shadowed: frozenset[str]) -> frozenset[str]:
    """The flag names a nested dataclass of ``cls`` may not take: those of ``cls``'s own plain fields (and of
    the levels above). A command's own option shadows a nested one of the same name (``lmcraft tune
    --budget`` is the study's; each trial's loop keeps its default), which keeps its default."""
    return shadowed | {f.name for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(hints[f.name])}


def add_arguments(parser: Any, cls: type, *, defaults: Any = None, root: Any = None,
                  skip: tuple[str, ...] = (), shadowed: frozenset[str] = frozenset()) -> None:
    """One flag per field of ``cls``; defaults come from ``defaults`` (an instance), else from ``cls()``. A
    nested dataclass becomes a group of ``--help`` (groups of the top-level ``root`` parser: argparse does not
    nest them); its fields named like one of an outer level are left out (``_shadowing``)."""
    hints = typing.get_type_hints(cls)
    defaults = cls() if defaults is None else defaults
    root = parser if root is None else root
    inner = _shadowing(cls, hints, shadowed)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name in shadowed:  # declared by the caller (a positional argument), or shadowed
            continue
        kind = hints[f.name]
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(kind):
            group = root.add_argument_group(f"{f.name} options")
            add_arguments(group, kind, defaults=default, root=root, shadowed=inner)  # type: ignore[arg-type]
            continue
        help_text = f.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        elif typing.get_origin(kind) is list:
            parser.add_argument(_flag(f.name), nargs="+", default=default, help=help_text)
        else:
            base = kind if not isinstance(kind, types.UnionType) else str
            parser.add_argument(_flag(f.name), type=base, default=default,
                                help=f"{help_text} (default: {default})")


def from_namespace(cls: type[T], ns: argparse.Namespace, *, shadowed: frozenset[str] = frozenset()) -> T:
    hints = typing.get_type_hints(cls)
    inner = _shadowing(cls, hints, shadowed)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in shadowed:  # no flag of its own on this command: the field's default
            continue
        kind = hints[f.name]
        kwargs[f.name] = from_namespace(kind, ns, shadowed=inner) if dataclasses.is_dataclass(kind) \
            else getattr(ns, f.name)
    return cls(**kwargs)
