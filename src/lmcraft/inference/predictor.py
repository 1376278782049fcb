"""``Predictor(model_dir)``: one object that loads any model directory and answers ``predict(inputs)``.

It finds the task of the model's head in the registry (a multi-task model: the head asked for, else the
first task head), and runs it as asked: int8-quantized linear layers, a backbone compiled with
``torch.compile``, or the ahead-of-time package that ``lmcraft compile`` built (native code: only when
asked, or when this user built it on this machine; see ``inference/compiled.py``). ``lmcraft predict``,
``lmcraft evaluate``, the fine-tuning stage's test report and ``lmcraft chat`` go through it; so does the
HTTP server.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from lmcraft.data.readers import Fields, write_jsonl
from lmcraft.fsutil import write_json
from lmcraft.model.heads import Model
from lmcraft.model.io import load_model_dir
from lmcraft.tasks.contract import ClassScores, Task
from lmcraft.tasks.registry import task_from_spec, task_of_head
from lmcraft.tokenizer import TextTokenizer

CALIBRATION = "calibration.json"  # beside config.json: {head: {"temperature": T, ...}}


def read_calibration(model_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The calibration a model directory holds (``lmcraft report --dev``), {} without one."""
    path = Path(model_dir) / CALIBRATION
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_calibration(model_dir: str | Path, head: str, entry: dict[str, Any]) -> Path:
    """Store ``entry`` (with its ``temperature``) for ``head`` in the model directory's calibration.json,
    atomically; the other heads' entries stay."""
    path = Path(model_dir) / CALIBRATION
    write_json(path, {**read_calibration(model_dir), head: entry})
    return path


def task_heads(model: Model) -> list[str]:
    """The heads of ``model`` that a task trained, in the order config.json lists them."""
    return [name for name, spec in model.head_specs.items() if task_of_head(spec) is not None]


def task_for(model: Model, head: str | None = None) -> Task:
    """The task of ``model``'s head ``head`` (default: its first task head)."""
    names = [head] if head else task_heads(model)
    if not names or names[0] not in model.head_specs:
        raise ValueError(f"this model has no task head{' ' + repr(head) if head else ''} (heads: "
                         f"{sorted(model.head_specs) or 'none'}); fine-tune it first with `lmcraft finetune`")
    return task_from_spec(model.head_specs[names[0]], model.cfg.pad_id, names[0])


class Predictor:
    """A model directory ready to predict.

    Args:
        model_dir: an lmcraft or Hugging Face model directory (or a loaded ``(model, tokenizer)`` pair).
        head: which task head, when the model has several.
        int8: quantize the linear layers to int8 (dynamic quantization, CPU).
        bf16: keep an encoder's weights in bf16 (fast where the CPU or GPU computes bf16 natively: AMX,
            AVX512-BF16, Arm BF16; slow elsewhere). Probabilities move by about 1e-2; generating models stay
            fp32 (ignored for them), and so does int8.
        compile: compile the backbone with ``torch.compile`` (encoders).
        compiled: the ahead-of-time package of ``lmcraft compile`` (native code): False (the default) never
            loads one; True loads it when it matches the weights; "trusted" loads it when it matches and
            this user built it on this machine (its hash is in ``~/.config/lmcraft/trusted-packages.json``).
        settings: task settings to replace (``num_beams``, ``no_repeat_ngram``, ``keep_placeholders`` of a
            generation task).
        fields: which fields of an input object hold the text, the pair, the source…
        require_task: refuse a model without a task head (a pretrained encoder or decoder); without it such a
            model can still ``embed`` texts (encoders) or generate (``model/generate.py``), not ``predict``.
    """

    def __init__(self, model_dir: str | Path | tuple[Model, TextTokenizer], *, head: str | None = None,
                 int8: bool = False, bf16: bool = False, compile: bool = False,
                 compiled: bool | Literal["trusted"] = False, settings: dict[str, Any] | None = None,
                 fields: Fields | None = None, require_task: bool = True) -> None:
        if isinstance(model_dir, tuple):
            self.model, self.tokenizer = model_dir
            self.model_dir: Path | None = None
        else:
            self.model, self.tokenizer, _ = load_model_dir(model_dir)
            self.model_dir = Path(model_dir)
        self.task = task_for(self.model, head) if require_task or head or task_heads(self.model) else None
        self.fields = fields or Fields()
        self.temperature = self._calibrate()
        if settings and self.task is not None:
            known = {f.name for f in dataclasses.fields(self.task)}  # type: ignore[arg-type]
            unknown = sorted(set(settings) - known)
            if unknown:
                raise ValueError(f"a {self.task.name} model has no setting {', '.join(unknown)}")
            for name, value in settings.items():
                setattr(self.task, name, value)
        if int8:
            from lmcraft.model.quantize import int8_dynamic

            self.model = int8_dynamic(self.model)
        generates = self.model.cfg.causal or (self.task is not None and self.task.generates)
        self.bf16 = bf16 and not int8 and not generates
        if self.bf16:
            self.model.to(torch.bfloat16)
        if compile:
            if self.model.cfg.causal or (self.task is not None and self.task.generates):
                raise ValueError("--compile speeds up encoders (classify, tag, relate, qa); a generating model "
                                 "decodes step by step with its cache and is not compiled")
            self.model.compile_backbone()
        self.model.eval()
        self.compiled = self._compiled(trusted_only=compiled == "trusted") \
            if compiled and not (int8 or compile or self.bf16) else None

    def _calibrate(self) -> float | None:
        """Apply the temperature that ``lmcraft report --dev`` stored for this head in calibration.json."""
        if self.model_dir is None or self.task is None:
            return None
        calibration = read_calibration(self.model_dir).get(self.task.head)
        if calibration is None:
            return None
        self.task.set_temperature(float(calibration["temperature"]))
        return float(calibration["temperature"])

    def class_log_probs(self, examples: Sequence[Any], *, batch_size: int = 64) -> ClassScores | None:
        """Uncalibrated log-probabilities, gold classes and texts when the head scores a fixed set of classes."""
        return self._task().class_log_probs(self.model, self.tokenizer, examples, max_len=self.max_len,
                                            batch_size=batch_size, **self._extra())

    def test_records(self, examples: Sequence[Any], *, batch_size: int = 64,
                     progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(the task's test metrics, one record per example: gold and predicted) on labelled ``examples``."""
        return self._task().test_report(self.model, self.tokenizer, examples, max_len=self.max_len,
                                        batch_size=batch_size, progress=progress, **self._extra())

    def _compiled(self, *, trusted_only: bool) -> Callable[[dict[str, torch.Tensor]], torch.Tensor] | None:
        if self.task is None or not self.task.compilable or self.model_dir is None:
            return None
        from lmcraft.inference.compiled import load_compiled

        package = load_compiled(self.model_dir, self.task.head, trusted_only=trusted_only)
        if package is not None:
            print(f"using the compiled package of head {self.task.head!r} (lmcraft compile)", file=sys.stderr)
        return package

    @property
    def max_len(self) -> int:
        return self.model.input_tokens

    def _task(self) -> Task:
        if self.task is None:
            raise ValueError(f"{self.model_dir or 'this model'} has no task head (heads: "
                             f"{sorted(self.model.head_specs) or 'none'}): it can embed texts or generate, not "
                             "predict; fine-tune it first with `lmcraft finetune`")
        return self.task

    def _extra(self) -> dict[str, Any]:
        return {"compiled": self.compiled} if self.compiled is not None else {}

    def examples(self, inputs: Sequence[str | dict[str, Any]]) -> list[Any]:
        """Inputs (texts, or objects in the task's file format) as the task's examples."""
        return [self._task().parse_input(value, self.fields, line) for line, value in enumerate(inputs, 1)]

    def read(self, path: str | Path, *, labelled: bool = True) -> list[Any]:
        """The examples of a file in the task's format; labelled ones are checked against the model."""
        examples = self._task().read(Path(path), self.fields, labelled=labelled)
        if labelled:
            self._task().check(Path(path), examples, self.fields)
        return examples

    def predict(self, inputs: Sequence[str | dict[str, Any]], *, batch_size: int = 64,
                progress: bool = False) -> list[dict[str, Any]]:
        """One JSON-ready answer per input, in order (the JSON that ``lmcraft predict`` prints)."""
        return self.predict_examples(self.examples(inputs), batch_size=batch_size, progress=progress)

    def predict_examples(self, examples: Sequence[Any], *, batch_size: int = 64,
                         progress: bool = False) -> list[dict[str, Any]]:
        return self._task().predict(self.model, self.tokenizer, examples, max_len=self.max_len,
                                    batch_size=batch_size, progress=progress, **self._extra())

    def evaluate(self, examples: Sequence[Any], *, predictions: str | Path | None = None, batch_size: int = 64,
                 progress: bool = False) -> dict[str, Any]:
        """The task's test metrics on labelled ``examples``; every prediction written to ``predictions``."""
        metrics, records = self.test_records(examples, batch_size=batch_size, progress=progress)
        if predictions is not None:
            write_jsonl(predictions, records)
        return metrics

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], *, batch_size: int = 64) -> list[list[float]]:
        """One unit-length vector per text: the mean of the encoder's final states over the text's tokens (how
        sentence-embedding models such as all-MiniLM-L6-v2 were trained to be read)."""
        if self.model.cfg.causal:
            raise ValueError("embeddings come from encoders; this model is a decoder")
        from lmcraft.data.batching import pad

        ids = self.tokenizer.encode(list(texts), max_len=self.max_len)
        out: list[list[float]] = []
        for first in range(0, len(ids), batch_size):
            batch, mask = pad(ids[first : first + batch_size], self.tokenizer.pad_id)  # (B, T) each
            hidden = self.model(batch, mask).float()  # (B, T, D)
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, D)
            out += torch.nn.functional.normalize(mean, dim=-1).tolist()
        return out
