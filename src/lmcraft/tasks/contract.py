"""The contract every supervised task implements, and the saved description of its head.

A task is one object that knows how to turn its examples into tensors, which head it trains, its loss,
its streaming metrics and how to decode predictions. The training loop (``train/loop.py``), the fine-tuning
stage, the ``Predictor`` and the CLI use nothing else, so a new task is a new package under ``tasks/`` and
one line in ``tasks/registry.py``; no shared code names it.

What a task provides, in the order a fine-tuning run uses it:

- class attributes: ``name`` (the registry key and ``--task`` value), ``description``, ``extensions`` (the
  file types of its split files), ``Options`` (a dataclass of its own settings, or ``NoOptions``) and
  ``options_section`` (the recipe section and ``--help`` group that holds them; tasks may share one);
- ``read(path, fields)``: one split file → examples, every problem a ``DataError`` naming file and line;
- ``texts(examples)``: the text the model reads in them (a tokenizer trained from scratch learns from it);
- ``for_data(splits, files, tokenizer, options, metric)``: the task built from the training split (labels,
  tag sets), dev and test checked against it;
- ``head_spec() -> HeadSpec`` (saved in config.json) and ``from_spec(spec, pad_id)``, its inverse;
- ``encode``, ``collate``, ``n_targets``, ``loss_sum``, ``new_metrics``, ``metric``, ``greater_is_better``:
  what the training loop asks;
- ``parse_input(value)``: a text or a JSON object → an example to predict (labels optional);
- ``predict(model, tokenizer, examples, max_len=…)``: one JSON-ready dict per example, what
  ``lmcraft predict`` prints and the server answers;
- ``test_report(model, tokenizer, examples, max_len=…)``: (metrics, one record per example);
- optional: ``class_log_probs`` (a head that scores a fixed set of classes) and ``set_temperature``
  (temperature scaling of those scores, read by the ``Predictor`` from ``calibration.json``);
- ``baseline(splits, files)``: the classic model on the same split, ``{"name", "test"}``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from lmcraft.data.readers import Fields
from lmcraft.model.heads import Model
from lmcraft.tokenizer import TextTokenizer

Batch = dict[str, torch.Tensor]
Splits = dict[str, list[Any]]  # split name (train / dev / test) -> examples


@dataclass
class NoOptions:
    """A task without settings of its own."""


@dataclass(frozen=True, eq=False)
class HeadSpec(Mapping[str, Any]):
    """What rebuilds a task and its head from a model directory; config.json stores ``to_json()`` under the
    head's name. ``kind`` is the head module (``model/heads.py``), ``task`` the registered task that trained
    it, ``settings`` the task's own (labels, scheme, decoding…). It reads as the mapping ``to_json()``, so
    ``Model(cfg, {name: task.head_spec()})`` builds the head."""

    kind: str
    task: str
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "task": self.task, **self.settings}

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.settings) + 2

    @classmethod
    def from_json(cls, spec: dict[str, Any], task: str) -> HeadSpec:
        """``task`` names the task when the spec does not (model directories saved before it was stored)."""
        settings = {k: v for k, v in spec.items() if k not in ("kind", "task")}
        return cls(str(spec["kind"]), str(spec.get("task") or task), settings)


@dataclass
class ClassScores:
    """What a head that scores a fixed set of classes says about each example (``Task.class_log_probs``)."""

    labels: list[str]  # class names, in the order of the columns
    log_probs: torch.Tensor  # (n, C) uncalibrated log-probabilities, T = 1
    gold: list[str | None]  # each example's gold class (None when unlabelled)
    texts: list[str]  # each example's text, as a reader would show it


class Metrics(Protocol):
    """Streaming metrics: counts accumulated batch by batch, summed across processes, then computed."""

    def update(self, model: Model, batch: Batch) -> None: ...

    def reduce(self, sum_tensor: Callable[[torch.Tensor], torch.Tensor]) -> None: ...

    def compute(self) -> dict[str, float]: ...


class Task(abc.ABC):
    """The base of every supervised task (see the module docstring for the whole contract)."""

    name: ClassVar[str]
    description: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]]
    Options: ClassVar[type] = NoOptions
    options_section: ClassVar[str] = ""
    head_kinds: ClassVar[tuple[str, ...]] = ()  # head kinds saved without a task name that mean this task
    summary_metrics: ClassVar[tuple[str, ...]] = ()  # the test metrics a summary table shows, in order
    generates: ClassVar[bool] = False  # decodes token by token with a cache (``--compile`` does not apply)
    compilable: ClassVar[bool] = False  # ``lmcraft compile`` can build its head into a native package
    special_tokens: ClassVar[tuple[str, ...]] = ()  # tokens fine-tuning adds to the tokenizer and embeddings
    converses: ClassVar[bool] = False  # answers conversations (OpenAI-style chat: ``prompt_ids`` of turns)
    shares_batches: ClassVar[bool] = True  # may be one of several tasks on one backbone (``lmcraft multitask``)
    # the task's own dimensions of ``lmcraft tune``'s search space, keyed by the dotted option path
    # (``tune/space.py`` holds the shared ones and the format)
    search_space: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    head: str
    metric: str
    greater_is_better: bool

    # -- data ------------------------------------------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def read(cls, path: Path, fields: Fields, *, labelled: bool = True) -> list[Any]:
        """The examples of one file; problems are ``DataError``s naming the file, line and field."""

    @classmethod
    def texts(cls, examples: Sequence[Any]) -> list[str]:
        """The text the model reads in ``examples``, for training a tokenizer: by default their ``text``."""
        return [ex.text for ex in examples]

    @classmethod
    @abc.abstractmethod
    def for_data(cls, splits: Splits, files: dict[str, Path], tokenizer: TextTokenizer, options: Any, *,
                 metric: str, fields: Fields) -> Task:
        """The task that the training split defines (labels, tag sets), with dev and test checked against it."""

    @classmethod
    @abc.abstractmethod
    def parse_input(cls, value: str | dict[str, Any], fields: Fields, line: int = 0) -> Any:
        """One input to predict: a bare text, or a JSON object in the task's file format (labels optional)."""

    def check(self, path: Path, examples: Sequence[Any], fields: Fields) -> None:  # noqa: B027 (optional hook)
        """Raise a ``DataError`` when labelled ``examples`` of ``path`` hold what this model cannot score."""

    # -- the saved head ----------------------------------------------------------------------------------------

    @abc.abstractmethod
    def head_spec(self) -> HeadSpec: ...

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, spec: HeadSpec, pad_id: int) -> Task: ...

    @classmethod
    def wants_decoder(cls, options: Any) -> bool:
        """Whether the task trains a causal (decoder-only) backbone with these options."""
        return False

    @classmethod
    def continues_head(cls, options: Any) -> str | None:
        """The pretrained head of the initial model that this task goes on training (a decoder's ``lm``, the
        ``decoder`` of span-corruption pretraining), or None: a new head on the backbone alone."""
        return None

    def attach(self, model: Model, pretrained: dict[str, dict[str, torch.Tensor]]) -> None:
        """Put this task's head on ``model``. ``pretrained`` holds parts of the initial checkpoint that a head
        may start from (BERT's ``pooler``)."""
        model.add_head(self.head, self.head_spec().to_json())

    # -- training --------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def encode(self, tokenizer: TextTokenizer, examples: Sequence[Any], max_len: int) -> list[Any]: ...

    @abc.abstractmethod
    def collate(self, items: Sequence[Any], generator: torch.Generator | None = None) -> Batch: ...

    @abc.abstractmethod
    def n_targets(self, batch: Batch) -> int: ...

    @abc.abstractmethod
    def loss_sum(self, model: Model, batch: Batch) -> torch.Tensor: ...

    @abc.abstractmethod
    def new_metrics(self) -> Metrics: ...

    # -- use -------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def predict(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[Any], *, max_len: int,
                batch_size: int = 64, progress: bool = False) -> list[dict[str, Any]]:
        """One JSON-ready dict per example, in order."""

    def test_report(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[Any], *, max_len: int,
                    batch_size: int = 64, progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(metrics, one record per example): by default the streaming metrics of the labelled examples and
        the predictions."""
        metrics = streaming_metrics(self, model, self.encode(tokenizer, examples, max_len), batch_size)
        records = self.predict(model, tokenizer, examples, max_len=max_len, batch_size=batch_size,
                               progress=progress)
        return {**metrics, "n": len(examples)}, records

    def class_log_probs(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[Any], *, max_len: int,
                        batch_size: int = 64, **extra: Any) -> ClassScores | None:
        """Class names, uncalibrated log-probabilities (n, C), gold classes and texts for a head that scores a
        fixed set of classes, else None (the default). ``lmcraft report`` asks it for intervals, errors,
        calibration, slices and invariance tests."""
        return None

    def class_batches(self, tokenizer: TextTokenizer, examples: Sequence[Any], max_len: int) -> list[Batch]:
        """One batch of one example each (the task's own collate), for attributions; heads that score classes."""
        return [self.collate(self.encode(tokenizer, [example], max_len)) for example in examples]

    def class_logits(self, model: Model, batch: Batch) -> torch.Tensor:
        """(B, C) class logits of a batch of ``collate``, differentiable (integrated gradients ask for it); a
        head that scores no classes refuses."""
        raise ValueError(f"a {self.name} head scores no classes")

    def set_temperature(self, temperature: float) -> None:
        """Divide the logits by ``temperature`` in every probability this task gives (temperature scaling,
        ``calibration.json``); a task whose head scores no classes refuses."""
        raise ValueError(f"a {self.name} head gives no class probabilities to calibrate")

    @staticmethod
    @abc.abstractmethod
    def baseline(splits: Splits, files: dict[str, Path]) -> dict[str, Any]:
        """The classic model fitted on train (chosen on dev) and scored on test: ``{"name", "test"}``."""


@torch.inference_mode()
def streaming_metrics(task: Task, model: Model, items: Sequence[Any], batch_size: int) -> dict[str, float]:
    """The task's metrics over ``items`` in one process, in batches."""
    was_training = model.training
    model.eval()
    metrics = task.new_metrics()
    for first in range(0, len(items), batch_size):
        metrics.update(model, task.collate(items[first : first + batch_size]))
    model.train(was_training)
    return metrics.compute()


def labelled_text(value: str | dict[str, Any], key: str) -> str:
    """The text of a prediction input: ``value`` itself, or its field ``key``; a clear error otherwise."""
    if isinstance(value, str):
        return value
    text = value.get(key) if isinstance(value, dict) else None
    if not isinstance(text, str):
        raise ValueError(f"an input must be a text or an object with a text field {key!r}, got {value!r:.80}")
    return text
