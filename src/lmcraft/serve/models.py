"""The models a server holds: each a Predictor with its batchers, and what it can answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmcraft.inference.predictor import Predictor
from lmcraft.serve.batcher import DynamicBatcher
from lmcraft.serve.generation import GenerationRequest, decoding_key, run_generation
from lmcraft.serve.metrics import ServerMetrics
from lmcraft.serve.options import ServeConfig
from lmcraft.train.precision import use_bf16


def model_names(entries: list[str]) -> dict[str, Path]:
    """``NAME=DIR`` or ``DIR`` (named after the directory, or its parent when it is called ``best``)."""
    names: dict[str, Path] = {}
    for entry in entries:
        name, _, directory = entry.rpartition("=") if "=" in entry else ("", "", entry)
        path = Path(directory)
        name = name or (path.parent.name if path.name == "best" else path.name)
        if name in names:
            raise ValueError(f"two models are called {name!r}; name them with NAME=DIR")
        names[name] = path
    if not names:
        raise ValueError("give at least one model directory to serve")
    return names


@dataclass
class ServedModel:
    name: str
    predictor: Predictor
    capabilities: list[str] = field(default_factory=list)
    batcher: DynamicBatcher | None = None  # predictions and embeddings
    generator: DynamicBatcher | None = None  # completions and chat

    @classmethod
    def load(cls, name: str, directory: Path, cfg: ServeConfig) -> ServedModel:
        bf16 = use_bf16(cfg.bf16, torch.device("cpu"))  # the server runs on the CPU
        predictor = Predictor(directory, int8=cfg.int8, bf16=bf16, compiled=True if cfg.compiled else "trusted",
                              require_task=False)
        model, task = predictor.model, predictor.task
        capabilities = []
        if task is not None:
            capabilities.append("predict")
            if task.converses:
                capabilities.append("chat")
        if model.cfg.causal and "lm" in model.head_specs:
            capabilities.append("completions")
        if not model.cfg.causal:
            capabilities.append("embeddings")
        return cls(name, predictor, capabilities)

    def start(self, executor: ThreadPoolExecutor, cfg: ServeConfig, metrics: ServerMetrics) -> None:
        """The batchers, started on the running event loop."""
        def count(inputs: int, tokens: int) -> None:
            metrics.batch_size.labels(self.name).observe(inputs)
            metrics.batch_tokens.labels(self.name).observe(tokens)

        sizes = {"max_batch_size": cfg.max_batch_size, "max_batch_tokens": cfg.max_batch_tokens,
                 "max_wait_ms": cfg.max_wait_ms, "max_queue": cfg.max_queue, "on_batch": count}
        self.batcher = DynamicBatcher(self._run, executor, **sizes)
        self.batcher.start()
        if {"chat", "completions"} & set(self.capabilities):
            self.generator = DynamicBatcher(self._generate, executor, **sizes)
            self.generator.start()

    def _run(self, inputs: list[tuple[str, Any]]) -> list[Any]:
        """A batch of ("predict", example) or ("embed", text) inputs; each kind runs as one call."""
        answers: list[Any] = [None] * len(inputs)
        for kind in ("predict", "embed"):
            rows = [i for i, (k, _) in enumerate(inputs) if k == kind]
            if not rows:
                continue
            values = [inputs[i][1] for i in rows]
            done = self.predictor.predict_examples(values, batch_size=len(values)) if kind == "predict" else \
                self.predictor.embed(values, batch_size=len(values))
            for i, answer in zip(rows, done, strict=True):
                answers[i] = answer
        return answers

    def _generate(self, requests: list[GenerationRequest]) -> list[str]:
        return run_generation(self.predictor.model, self.predictor.tokenizer, requests)

    def generation_key(self, request: GenerationRequest) -> tuple:
        return decoding_key(request)

    def tokens(self, values: list[Any]) -> list[int]:
        """The length of each input in tokens (its text fields, for objects)."""
        texts = [v if isinstance(v, str) else " ".join(x for x in v.values() if isinstance(x, str))
                 if isinstance(v, dict) else str(v) for v in values]
        return self.predictor.tokenizer.lengths(texts)

    def describe(self) -> dict[str, Any]:
        task = self.predictor.task
        return {"id": self.name, "object": "model", "owned_by": "lmcraft",
                "task": task.name if task is not None else None, "capabilities": self.capabilities,
                "labels": getattr(task, "labels", None)}
