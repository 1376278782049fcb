"""Sequence-to-sequence fine-tuning: translation, headline generation (and, in ``chat.py``, dialogue).

A generation task is an input format and a layout. The format is the task class: ``Seq2Seq`` reads
(source, target) pairs, ``Chat`` (``chat.py``) conversations written with role tokens. Each turns an example
into prompt and target token ids, and says what generation starts from and what the test report compares.
The layout (``layouts.py``) is where those ids go: one causal sequence (``decoder``) or an encoder and a
decoder head (``encoder-decoder``); it is chosen once, from the ``layout`` option or the saved head's kind.

Both layouts are trained with teacher forcing (the model reads the reference's earlier tokens, not its
own guesses) and a cross-entropy with label smoothing ε (Szegedy et al. 2016: the target distribution
puts 1 - ε on the reference token and spreads ε over the vocabulary, which keeps a small model from
growing over-confident on a small corpus). The loss falls on the target tokens and the [SEP] that ends
them only; the source is given, not learnt.

The dev metric is the target tokens' loss (cheap: no decoding). At test time the model decodes with beam
search and a length penalty (``model/beam.py``), writing exactly the source's placeholders
(``keep_placeholders.py``), and the outputs are scored with BLEU, chrF and ROUGE (``metrics/generation.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lmcraft.data.readers import Fields
from lmcraft.data.seq2seq import Pair, read_pairs
from lmcraft.model.heads import Model
from lmcraft.objectives.mlm import IGNORE, MLMMetrics
from lmcraft.tasks.contract import HeadSpec, Splits, Task, labelled_text
from lmcraft.tasks.seq2seq.keep_placeholders import KeepPlaceholders, marked_tokens
from lmcraft.tasks.seq2seq.layouts import LAYOUT_OF_HEAD, GenItem, Layout, Search, end_target, layout_class
from lmcraft.tasks.seq2seq.memory import TranslationMemory
from lmcraft.tasks.seq2seq.options import GenerationOptions
from lmcraft.tokenizer import TextTokenizer

__all__ = ["GenItem", "Seq2Seq"]


@dataclass
class Seq2Seq(Task):
    """Source → target pairs, in the layout named ``layout``."""

    name: ClassVar[str] = "seq2seq"
    description: ClassVar[str] = "source text → target text (translation, summaries, headlines)"
    extensions: ClassVar[tuple[str, ...]] = (".jsonl", ".tsv")
    summary_metrics: ClassVar[tuple[str, ...]] = ("bleu", "chrf")
    Options: ClassVar[type] = GenerationOptions
    options_section: ClassVar[str] = "generation"
    generates: ClassVar[bool] = True
    shares_batches: ClassVar[bool] = False  # a decoder backbone; multi-task learning trains encoders
    scores_placeholders: ClassVar[bool] = True  # outputs should keep their source's placeholders (%s, {0})

    pad_id: int
    eos_id: int  # the [SEP] that ends a target
    bos_id: int  # the [CLS] that starts the encoder-decoder's target
    layout: str = "decoder"  # "decoder" or "encoder-decoder" (``layouts.py``)
    label_smoothing: float = 0.1
    max_target_tokens: int = 64  # longer references are cut in training; generation stops here
    num_beams: int = 4
    length_penalty: float = 1.0
    no_repeat_ngram: int = 0  # beam search never writes the same n-gram twice (0: no constraint)
    keep_placeholders: bool = True  # beam search writes exactly the source's placeholders (``keep_placeholders.py``)
    decoder_layers: int = 0  # encoder-decoder: the decoder's depth (0: as deep as the encoder)
    head: str = ""  # the head it trains: the layout's head kind ("lm" or "decoder")
    metric: str = "loss"
    greater_is_better: bool = False
    # its nearest target is appended to every source (``memory.py``); not in repr: it holds the training pairs
    memory: TranslationMemory | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        layout = layout_class(self.layout)
        self.strategy: Layout = layout.build(self.pad_id, self.eos_id, self.bos_id, decoder_layers=self.decoder_layers)
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label smoothing must be in [0, 1), not {self.label_smoothing}")
        self.head = self.head or layout.head_kind
        if self.metric != "loss":
            raise ValueError(f"{self.name} selects the best checkpoint on the dev loss, not {self.metric!r}")

    # -- data ------------------------------------------------------------------------------------------------

    @classmethod
    def read(cls, path: Path, fields: Fields, *, labelled: bool = True) -> list[Any]:
        return read_pairs(path, source_field=fields.source_field, target_field=fields.target_field,
                          encoding=fields.encoding)

    @classmethod
    def texts(cls, examples: Sequence[Pair]) -> list[str]:
        return [t for ex in examples for t in (ex.source, ex.target)]

    @classmethod
    def for_data(cls, splits: Splits, files: dict[str, Path], tokenizer: TextTokenizer, options: GenerationOptions,
                 *, metric: str, fields: Fields) -> Seq2Seq:
        memory = TranslationMemory([(p.source, p.target) for p in splits["train"]]) if options.memory else None
        return cls._with_options(tokenizer, options, metric, layout=options.layout, memory=memory)

    @classmethod
    def _with_options(cls, tokenizer: TextTokenizer, options: GenerationOptions, metric: str,
                      **settings: Any) -> Seq2Seq:
        return cls(tokenizer.pad_id, tokenizer.sep_id, tokenizer.cls_id, label_smoothing=options.label_smoothing,
                   max_target_tokens=options.max_target_tokens, num_beams=options.num_beams,
                   length_penalty=options.length_penalty, no_repeat_ngram=options.no_repeat_ngram,
                   keep_placeholders=options.keep_placeholders, decoder_layers=options.decoder_layers,
                   metric=metric or "loss", **settings)

    @classmethod
    def wants_decoder(cls, options: GenerationOptions) -> bool:
        return layout_class(options.layout).causal

    @classmethod
    def continues_head(cls, options: GenerationOptions) -> str | None:
        return layout_class(options.layout).head_kind

    @classmethod
    def parse_input(cls, value: str | dict[str, Any], fields: Fields, line: int = 0) -> Any:
        target = value.get(fields.target_field) if isinstance(value, dict) else None
        return Pair(labelled_text(value, fields.source_field), "" if target is None else str(target), line)

    def attach(self, model: Model, pretrained: dict[str, dict[str, torch.Tensor]]) -> None:
        """A pretrained head of the right kind (a decoder's language-model head, the decoder head of span
        corruption) keeps its weights and its shape and records the task; otherwise a new head is built."""
        old = model.head_specs.get(self.head)
        if old is not None and old.get("kind") == self.head_spec().kind:
            shape = {k: old[k] for k in ("tied", "n_layer") if k in old}
            kept = {k: v for k, v in old.items() if k != "memory"}  # the memory is this task's, or none
            model.head_specs[self.head] = {**kept, **self.head_spec().to_json(), **shape}
        else:
            super().attach(model, pretrained)

    @staticmethod
    def baseline(splits: Splits, files: dict[str, Path]) -> dict[str, Any]:
        """Headline data (its manifest says ``"kind": "headline"``) gets the lead baseline, other pairs copying
        the source; both get the translation memory (the nearest training source's target)."""
        from lmcraft.tasks.seq2seq.baseline import baseline_report

        manifest = files["train"].parent / "manifest.json"
        kind = json.loads(manifest.read_text(encoding="utf-8")).get("kind") if manifest.exists() else None
        kind = "headline" if kind == "headline" else "translation"
        first = "the article's first characters (lead)" if kind == "headline" else "copying the source"
        return {"name": f"{first}; the nearest training source's target (translation memory)",
                "test": flat_report(baseline_report(splits["train"], splits["test"], kind=kind))}

    # -- the saved head ----------------------------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: HeadSpec, pad_id: int) -> Seq2Seq:
        return cls(pad_id, **cls._saved_settings(spec))

    @staticmethod
    def _saved_settings(spec: HeadSpec) -> dict[str, Any]:
        """The constructor's arguments (but ``pad_id``) from a saved spec; the layout from the head's kind."""
        s = spec.settings
        return {"eos_id": int(s["eos_id"]), "bos_id": int(s["bos_id"]), "layout": LAYOUT_OF_HEAD[spec.kind],
                "label_smoothing": float(s["label_smoothing"]), "max_target_tokens": int(s["max_target_tokens"]),
                "num_beams": int(s["num_beams"]), "length_penalty": float(s["length_penalty"]),
                "no_repeat_ngram": int(s.get("no_repeat_ngram", 0)),
                "keep_placeholders": bool(s.get("keep_placeholders", True)),  # on in specs older than it
                "decoder_layers": int(s.get("n_layer", 0)),
                "memory": TranslationMemory.from_json(s["memory"]) if "memory" in s else None}

    def head_spec(self) -> HeadSpec:
        spec: dict[str, Any] = {
            "eos_id": self.eos_id, "bos_id": self.bos_id, "label_smoothing": self.label_smoothing,
            "max_target_tokens": self.max_target_tokens, "num_beams": self.num_beams,
            "length_penalty": self.length_penalty, "no_repeat_ngram": self.no_repeat_ngram, **self.strategy.spec()}
        if self.scores_placeholders:  # chat heads do not save it
            spec["keep_placeholders"] = self.keep_placeholders
        if self.memory is not None:
            spec["memory"] = self.memory.to_json()  # the pairs themselves: a model directory stands alone
        return HeadSpec(self.strategy.head_kind, self.name, spec)

    # -- the input format: pairs (``Chat`` overrides these for conversations) ---------------------------------

    def _inputs(self, sources: list[str], targets: list[str] | None = None) -> list[str]:
        """What the model reads: the sources, each with its memory target when the task has a memory (a
        training pair, given with its ``targets``, never retrieves itself)."""
        return sources if self.memory is None else self.memory.inputs(sources, targets)

    def encode(self, tokenizer: TextTokenizer, examples: Sequence[Any], max_len: int) -> list[GenItem]:
        texts = self._inputs([ex.source for ex in examples], [ex.target for ex in examples])
        sources = tokenizer.encode(texts, max_len=None, special_tokens=False)
        targets = tokenizer.encode([ex.target for ex in examples], max_len=None, special_tokens=False)
        return [self.strategy.item(src, end_target(tgt, self.max_target_tokens, max_len, self.eos_id), max_len)
                for src, tgt in zip(sources, targets, strict=True)]

    def prompt_ids(self, tokenizer: TextTokenizer, prompts: Sequence[Any], max_len: int) -> list[list[int]]:
        """What generation starts from: each source, cut to leave room for ``max_target_tokens`` new tokens."""
        rows = tokenizer.encode(self._inputs(list(prompts)), max_len=None, special_tokens=False)
        return [self.strategy.prompt(r, max_len, self._prompt_room(max_len)) for r in rows]

    def _prompt_room(self, max_len: int) -> int:
        return max(max_len - self.max_target_tokens, 8)

    def _longest_output(self, rows: list[list[int]]) -> int:
        """New tokens a batch may write: ``max_target_tokens`` (+ the end token), and at most twice the longest
        source plus 10, so that a model that has not learnt to stop yet does not run every hypothesis to the
        limit (a translation is rarely more than twice as long as its source)."""
        return min(self.max_target_tokens + 1, 2 * max(len(r) for r in rows) + 10)

    def prompts_and_references(self, examples: Sequence[Any]) -> tuple[list[Any], list[str], list[str]]:
        """(what generation starts from, the reference, a readable source) per test case."""
        return [ex.source for ex in examples], [ex.target for ex in examples], [ex.source for ex in examples]

    def prediction_inputs(self, examples: Sequence[Any]) -> tuple[list[Any], list[str]]:
        """(what generation starts from, a readable source) per example to predict."""
        return [ex.source for ex in examples], [ex.source for ex in examples]

    # -- training ----------------------------------------------------------------------------------------

    def collate(self, items: Sequence[GenItem], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return self.strategy.collate(items)

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def n_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return self.strategy.n_tokens(batch)

    def _logits(self, model: Model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, V) at the N positions with a target, and those targets (N,)."""
        return self.strategy.logits(model, self.head, batch)

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, targets = self._logits(model, batch)
        return F.cross_entropy(logits.float(), targets, reduction="sum", label_smoothing=self.label_smoothing)

    def new_metrics(self) -> MLMMetrics:
        return MLMMetrics(self)  # loss (without smoothing), perplexity and accuracy of the target tokens

    # -- generation --------------------------------------------------------------------------------------

    def generate(self, model: Model, tokenizer: TextTokenizer, prompts: Sequence[Any], *, max_len: int,
                 batch_size: int = 32, num_beams: int | None = None, progress: bool = False) -> list[str]:
        """Beam-search outputs for sources (str) or conversations (lists of turns ending with a user turn)."""
        model.eval()
        rows = self.prompt_ids(tokenizer, prompts, max_len)
        marked = marked_tokens(tokenizer) if self.scores_placeholders and self.keep_placeholders else None
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch
        out: list[str] = [""] * len(rows)
        for start in tqdm(range(0, len(order), batch_size), desc="generate", leave=False,
                          disable=None if progress else True):
            chunk = order[start : start + batch_size]
            batch = [rows[i] for i in chunk]
            search = Search(num_beams or self.num_beams, self._longest_output(batch), self.length_penalty,
                            self.no_repeat_ngram)
            constraint = None if marked is None else \
                KeepPlaceholders([prompts[i] for i in chunk], tokenizer.decode_text, marked)
            for i, ids in zip(chunk, self.strategy.decode(model, self.head, batch, search, constraint), strict=True):
                out[i] = tokenizer.decode_text(ids)
        return out

    def predict(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[Any], *, max_len: int,
                batch_size: int = 32, progress: bool = False) -> list[dict[str, Any]]:
        """{"source", "output"} per example; a conversation is answered after its last turn."""
        prompts, shown = self.prediction_inputs(examples)
        outputs = self.generate(model, tokenizer, prompts, max_len=max_len, batch_size=batch_size, progress=progress)
        return [{"source": s, "output": o} for s, o in zip(shown, outputs, strict=True)]

    def test_report(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[Any], *, max_len: int,
                    batch_size: int = 32, progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The target tokens' loss (``target_*``), then the generation metrics of every test case, and one record
        per case (source, reference, output)."""
        from lmcraft.metrics.generation import generation_report
        from lmcraft.tasks.contract import streaming_metrics

        loss = streaming_metrics(self, model, self.encode(tokenizer, examples, max_len), batch_size)
        prompts, references, sources = self.prompts_and_references(examples)
        outputs = self.generate(model, tokenizer, prompts, max_len=max_len, batch_size=batch_size, progress=progress)
        report = generation_report(outputs, references, sources if self.scores_placeholders else None)
        records = [{"source": s, "reference": r, "output": o} for s, r, o in zip(sources, references, outputs,
                                                                               strict=True)]
        return {**{f"target_{k}": v for k, v in loss.items()}, **report, "n": len(records)}, records


def flat_report(report: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A baseline report {baseline: {metric: value}} as {"baseline/metric": value}."""
    return {f"{name}/{metric}": value for name, scores in report.items() for metric, value in scores.items()
            if metric not in ("n", "chinese")}
