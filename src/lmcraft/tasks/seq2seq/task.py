"""Sequence-to-sequence fine-tuning and dialogue: translation, headline generation, chat.

Two layouts, both trained with teacher forcing (the model reads the reference's earlier tokens, not its
own guesses) and a cross-entropy with label smoothing ε (Szegedy et al. 2016: the target distribution
puts 1 - ε on the reference token and spreads ε over the vocabulary, which keeps a small model from
growing over-confident on a small corpus):

- ``decoder`` (decoder-only, GPT-style): source and target in one sequence, ``source [SEP] target [SEP]``.
  The loss is on the target tokens and the [SEP] that ends them only; the source is given, not learnt.
- ``encoder-decoder`` (the article's full Transformer): the encoder (the backbone) reads
  ``[CLS] source [SEP]``; the decoder (a ``decoder`` head) reads ``[CLS] target`` and predicts
  ``target [SEP]``, attending to the encoder's states.

Dialogue is the decoder layout with several prompt and target segments. A conversation is written with
role tokens,

    <|system|> …  <|user|> …  <|assistant|> … [SEP]  <|user|> …  <|assistant|> … [SEP]

and the loss falls on the assistant's words (and the [SEP] after each) only: the model learns to answer,
not to imitate the user.

The dev metric is the target tokens' loss (cheap: no decoding). At test time the model decodes with beam
search and a length penalty (``model/beam.py``), and the outputs are scored with BLEU, chrF and ROUGE
(``evaluate/generation_metrics.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lmcraft.data.batching import pad
from lmcraft.data.chat import Conversation, Turn, read_chat_jsonl
from lmcraft.data.readers import Fields
from lmcraft.data.seq2seq import Pair, read_pairs
from lmcraft.model.beam import beam_decode
from lmcraft.model.generate import left_pad
from lmcraft.model.heads import Model
from lmcraft.objectives.mlm import IGNORE, MLMMetrics
from lmcraft.tasks.contract import HeadSpec, Splits, Task, labelled_text
from lmcraft.tasks.seq2seq.options import GenerationOptions
from lmcraft.tokenizer import TextTokenizer

LAYOUTS = ("decoder", "encoder-decoder")
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}

@dataclass
class GenItem:
    """One training sequence."""

    ids: list[int]  # decoder: the whole sequence; encoder-decoder: the source
    targets: list[bool] | None = None  # decoder: True at the tokens the loss predicts (from their prefix)
    target: list[int] | None = None  # encoder-decoder: the target's tokens, ending with [SEP]


@dataclass
class Seq2Seq(Task):
    """Pairs (``task="seq2seq"``) or conversations (``task="chat"``) in one of the two layouts."""

    name: ClassVar[str] = "seq2seq"
    description: ClassVar[str] = "source text → target text (translation, summaries, headlines)"
    extensions: ClassVar[tuple[str, ...]] = (".jsonl", ".tsv")
    summary_metrics: ClassVar[tuple[str, ...]] = ("bleu", "chrf")
    Options: ClassVar[type] = GenerationOptions
    options_section: ClassVar[str] = "generation"
    generates: ClassVar[bool] = True

    pad_id: int
    eos_id: int  # the [SEP] that ends a target
    bos_id: int  # the [CLS] that starts the encoder-decoder's target
    layout: str = "decoder"
    task: str = "seq2seq"  # or "chat"
    label_smoothing: float = 0.1
    max_target_tokens: int = 64  # longer references are cut in training; generation stops here
    num_beams: int = 4
    length_penalty: float = 1.0
    no_repeat_ngram: int = 0  # beam search never writes the same n-gram twice (0: no constraint)
    decoder_layers: int = 0  # encoder-decoder: the decoder's depth (0: as deep as the encoder)
    role_ids: dict[str, int] | None = None  # chat: token id of each role token
    head: str = ""  # the head it trains: "lm" (decoder) or "decoder" (encoder-decoder)
    metric: str = "loss"
    greater_is_better: bool = False

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if self.task == "chat" and (self.layout != "decoder" or not self.role_ids):
            raise ValueError("chat needs the decoder layout and the role tokens")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label smoothing must be in [0, 1), not {self.label_smoothing}")
        self.head = self.head or ("lm" if self.layout == "decoder" else "decoder")
        if self.metric != "loss":
            raise ValueError(f"{self.task} selects the best checkpoint on the dev loss, not {self.metric!r}")

    # -- data ------------------------------------------------------------------------------------------------

    @classmethod
    def read(cls, path: Path, fields: Fields, *, labelled: bool = True) -> list[Pair]:
        return read_pairs(path, source_field=fields.source_field, target_field=fields.target_field)

    @classmethod
    def texts(cls, examples: Sequence[Pair]) -> list[str]:
        return [t for ex in examples for t in (ex.source, ex.target)]

    @classmethod
    def for_data(cls, splits: Splits, files: dict[str, Path], tokenizer: TextTokenizer, options: GenerationOptions,
                 *, metric: str, fields: Fields) -> Seq2Seq:
        return cls._with_options(tokenizer, options, metric, layout=options.layout, task=cls.name)

    @classmethod
    def _with_options(cls, tokenizer: TextTokenizer, options: GenerationOptions, metric: str,
                      **settings: Any) -> Seq2Seq:
        return cls(tokenizer.pad_id, tokenizer.sep_id, tokenizer.cls_id, label_smoothing=options.label_smoothing,
                   max_target_tokens=options.max_target_tokens, num_beams=options.num_beams,
                   length_penalty=options.length_penalty, no_repeat_ngram=options.no_repeat_ngram,
                   decoder_layers=options.decoder_layers, metric=metric or "loss", **settings)

    @classmethod
    def wants_decoder(cls, options: GenerationOptions) -> bool:
        return options.layout == "decoder"

    @classmethod
    def parse_input(cls, value: str | dict[str, Any], fields: Fields, line: int = 0) -> Pair:
        target = value.get(fields.target_field) if isinstance(value, dict) else None
        return Pair(labelled_text(value, fields.source_field), "" if target is None else str(target), line)

    def attach(self, model: Model, pretrained: dict[str, dict[str, torch.Tensor]]) -> None:
        """A decoder's own language-model head keeps its weights and records the task; an encoder gets a new
        decoder head."""
        if self.head in model.heads:
            model.head_specs[self.head] = {**model.head_specs[self.head], **self.head_spec().to_json(),
                                           "tied": model.head_specs[self.head].get("tied", True)}
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
                "test": _flat(baseline_report(splits["train"], splits["test"], kind=kind))}

    # -- the saved head ----------------------------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: HeadSpec, pad_id: int) -> Seq2Seq:
        s = spec.settings
        return cls(pad_id, int(s["eos_id"]), int(s["bos_id"]),
                   layout="decoder" if spec.kind == "lm" else "encoder-decoder", task=spec.task,
                   label_smoothing=float(s["label_smoothing"]), max_target_tokens=int(s["max_target_tokens"]),
                   num_beams=int(s["num_beams"]), length_penalty=float(s["length_penalty"]),
                   no_repeat_ngram=int(s.get("no_repeat_ngram", 0)), decoder_layers=int(s.get("n_layer", 0)),
                   role_ids=s.get("role_ids"))

    def head_spec(self) -> HeadSpec:
        spec: dict[str, object] = {
            "eos_id": self.eos_id, "bos_id": self.bos_id, "label_smoothing": self.label_smoothing,
            "max_target_tokens": self.max_target_tokens, "num_beams": self.num_beams,
            "length_penalty": self.length_penalty, "no_repeat_ngram": self.no_repeat_ngram}
        if self.layout == "decoder":
            spec["tied"] = True
        else:
            spec["n_layer"] = self.decoder_layers
        if self.role_ids:
            spec["role_ids"] = dict(self.role_ids)
        return HeadSpec("lm" if self.layout == "decoder" else "decoder", self.task, spec)

    # -- encoding ----------------------------------------------------------------------------------------

    def encode(self, tokenizer: TextTokenizer, examples: Sequence[Any], max_len: int) -> list[GenItem]:
        if self.task == "chat":
            return [self._encode_conversation(tokenizer, ex.turns, max_len) for ex in examples]
        sources = tokenizer.encode([ex.source for ex in examples], max_len=None, special_tokens=False)
        targets = tokenizer.encode([ex.target for ex in examples], max_len=None, special_tokens=False)
        items = []
        for src, tgt in zip(sources, targets, strict=True):
            tgt = [*tgt[: min(self.max_target_tokens, max_len - 3)], self.eos_id]  # leave room for the source
            if self.layout == "encoder-decoder":
                items.append(GenItem([self.bos_id, *src[: max_len - 2], self.eos_id], target=tgt))
            else:
                src = src[: max(max_len - len(tgt) - 1, 1)]
                items.append(GenItem([*src, self.eos_id, *tgt], [False] * (len(src) + 1) + [True] * len(tgt)))
        return items

    def _role(self, role: str) -> int:
        assert self.role_ids is not None
        return self.role_ids[role]

    def _encode_conversation(self, tokenizer: TextTokenizer, turns: Sequence[Any], max_len: int) -> GenItem:
        """Role tokens and turns; the loss on the assistant's turns. A conversation longer than ``max_len``
        loses its earliest exchanges (a system message stays)."""
        texts = tokenizer.encode([t.content for t in turns], max_len=None, special_tokens=False)
        segments: list[tuple[list[int], list[bool]]] = []  # one per turn
        for turn, ids in zip(turns, texts, strict=True):
            if turn.role == "assistant":
                body = [*ids[: min(self.max_target_tokens, max_len - 3)], self.eos_id]
                segments.append(([self._role("assistant"), *body], [False] + [True] * len(body)))
            else:
                segments.append(([self._role(turn.role), *ids], [False] * (len(ids) + 1)))
        system = segments[:1] if turns[0].role == "system" else []
        rest = segments[len(system):]
        while len(rest) > 2 and sum(len(s[0]) for s in system + rest) > max_len:
            rest = rest[2:]  # drop the oldest user/assistant exchange
        ids = [t for s in system + rest for t in s[0]][-max_len:]
        targets = [f for s in system + rest for f in s[1]][-max_len:]
        targets[0] = False  # the first token has no prefix to be predicted from
        return GenItem(ids, targets)

    def prompt_ids(self, tokenizer: TextTokenizer, prompts: Sequence[Any], max_len: int) -> list[list[int]]:
        """What generation starts from: a source (pair) or the conversation so far, ending with a user turn
        (chat); cut to leave room for ``max_target_tokens`` new tokens."""
        room = max(max_len - self.max_target_tokens, 8)
        if self.task == "chat":
            rows = []
            for turns in prompts:
                item = self._encode_conversation(tokenizer, turns, max_len)
                rows.append([*item.ids, self._role("assistant")][-room:])
            return rows
        rows = tokenizer.encode(list(prompts), max_len=None, special_tokens=False)
        if self.layout == "encoder-decoder":
            return [[self.bos_id, *r[: max_len - 2], self.eos_id] for r in rows]
        return [[*r[: room - 1], self.eos_id] for r in rows]

    # -- training ----------------------------------------------------------------------------------------

    def collate(self, items: Sequence[GenItem], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        ids, mask = pad([it.ids for it in items], self.pad_id)  # (B, T)
        if self.layout == "encoder-decoder":
            targets = [it.target or [] for it in items]
            decoder_ids, decoder_mask = pad([[self.bos_id, *t[:-1]] for t in targets], self.pad_id)  # (B, U)
            labels, _ = pad(targets, IGNORE)  # (B, U): the next token at each decoder position
            return {"input_ids": ids, "padding_mask": mask, "decoder_ids": decoder_ids,
                    "decoder_mask": decoder_mask, "labels": labels}
        flags, _ = pad([[int(f) for f in it.targets or []] for it in items], 0)  # (B, T)
        labels = torch.full_like(ids, IGNORE)
        labels[:, :-1] = torch.where(flags[:, 1:].bool(), ids[:, 1:], IGNORE)  # position i predicts token i + 1
        return {"input_ids": ids, "padding_mask": mask, "labels": labels}

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def n_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        decoder = batch.get("decoder_mask")
        return int(batch["padding_mask"].sum()) + (int(decoder.sum()) if decoder is not None else 0)

    def _logits(self, model: Model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, V) at the N positions with a target, and those targets (N,): the vocabulary projection
        is computed at target positions only."""
        hidden = model(batch["input_ids"], batch["padding_mask"])  # (B, T, D)
        keep = batch["labels"] != IGNORE
        if self.layout == "encoder-decoder":
            head = model.heads[self.head]
            states = head(batch["decoder_ids"], batch["decoder_mask"], hidden, batch["padding_mask"])  # (B, U, D)
            return head.logits(states[keep]), batch["labels"][keep]
        return model.heads[self.head](hidden[keep], model.backbone.embed.token.weight), batch["labels"][keep]

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
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch
        out: list[str] = [""] * len(rows)
        beams = num_beams or self.num_beams
        for start in tqdm(range(0, len(order), batch_size), desc="generate", leave=False,
                          disable=None if progress else True):
            chunk = order[start : start + batch_size]
            for i, ids in zip(chunk, self._decode([rows[i] for i in chunk], model, beams), strict=True):
                out[i] = tokenizer.decode_text(ids)
        return out

    def _longest_output(self, rows: list[list[int]]) -> int:
        """New tokens a batch may write: ``max_target_tokens`` (+ the end token); for pairs also at most twice
        the longest source plus 10, so that a model that has not learnt to stop yet does not run every
        hypothesis to the limit (a translation is rarely more than twice as long as its source)."""
        limit = self.max_target_tokens + 1
        return limit if self.task == "chat" else min(limit, 2 * max(len(r) for r in rows) + 10)

    @torch.inference_mode()
    def _decode(self, rows: list[list[int]], model: Model, beams: int) -> list[list[int]]:
        if self.layout == "encoder-decoder":
            source, mask = pad(rows, self.pad_id)
            memory = model(source, mask)  # (B, S, D)
            head = model.heads[self.head]
            start = torch.full((len(rows), 1), self.bos_id, dtype=torch.long)
            room = min(self._longest_output(rows), head.decoder.cfg.max_tokens - 1)
            return beam_decode(head.decoder, head.logits, start, torch.ones_like(start), eos_id=self.eos_id,
                               num_beams=beams, max_new_tokens=room, length_penalty=self.length_penalty,
                               memory=memory, memory_mask=mask, no_repeat_ngram=self.no_repeat_ngram)
        ids, mask = left_pad(rows, self.pad_id)
        embedding = model.backbone.embed.token.weight
        lm = model.heads[self.head]
        room = min(self._longest_output(rows), model.backbone.cfg.max_tokens - ids.shape[1])
        return beam_decode(model.backbone, lambda hidden: lm(hidden, embedding), ids, mask, eos_id=self.eos_id,
                           num_beams=beams, max_new_tokens=max(room, 1), length_penalty=self.length_penalty,
                           no_repeat_ngram=self.no_repeat_ngram)

    def prompts_and_references(self, examples: Sequence[Any]) -> tuple[list[Any], list[str], list[str]]:
        """(what generation starts from, the reference, a readable source) per test case. A conversation
        gives one case per assistant turn, with the turns before it as the prompt."""
        if self.task != "chat":
            return [ex.source for ex in examples], [ex.target for ex in examples], [ex.source for ex in examples]
        prompts, references, shown = [], [], []
        for ex in examples:
            for k, turn in enumerate(ex.turns):
                if turn.role == "assistant":
                    prompts.append(ex.turns[:k])
                    references.append(turn.content)
                    shown.append(ex.turns[k - 1].content)
        return prompts, references, shown

    def predict(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[Any], *, max_len: int,
                batch_size: int = 32, progress: bool = False) -> list[dict[str, Any]]:
        """{"source", "output"} per example; a conversation is answered after its last turn."""
        prompts = [ex.turns if self.task == "chat" else ex.source for ex in examples]
        shown = [ex.turns[-1].content if self.task == "chat" else ex.source for ex in examples]
        outputs = self.generate(model, tokenizer, prompts, max_len=max_len, batch_size=batch_size, progress=progress)
        return [{"source": s, "output": o} for s, o in zip(shown, outputs, strict=True)]

    def test_report(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[Any], *, max_len: int,
                    batch_size: int = 32, progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The target tokens' loss (``target_*``), then the generation metrics of every test case, and one record
        per case (source, reference, output)."""
        from lmcraft.evaluate.generation_metrics import generation_report
        from lmcraft.tasks.contract import streaming_metrics

        loss = streaming_metrics(self, model, self.encode(tokenizer, examples, max_len), batch_size)
        prompts, references, sources = self.prompts_and_references(examples)
        outputs = self.generate(model, tokenizer, prompts, max_len=max_len, batch_size=batch_size, progress=progress)
        report = generation_report(outputs, references, sources if self.task != "chat" else None)
        records = [{"source": s, "reference": r, "output": o} for s, r, o in zip(sources, references, outputs,
                                                                               strict=True)]
        return {**{f"target_{k}": v for k, v in loss.items()}, **report, "n": len(records)}, records


def _flat(report: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{name}/{metric}": value for name, scores in report.items() for metric, value in scores.items()
            if metric not in ("n", "chinese")}


@dataclass
class Chat(Seq2Seq):
    """Multi-turn dialogue: conversations with role tokens, the loss on the assistant's turns."""

    name: ClassVar[str] = "chat"
    description: ClassVar[str] = "multi-turn dialogue, the loss on the assistant's turns"
    extensions: ClassVar[tuple[str, ...]] = (".jsonl",)
    special_tokens: ClassVar[tuple[str, ...]] = tuple(ROLE_TOKENS.values())

    @classmethod
    def read(cls, path: Path, fields: Fields, *, labelled: bool = True) -> list[Conversation]:
        return read_chat_jsonl(path)

    @classmethod
    def texts(cls, examples: Sequence[Conversation]) -> list[str]:
        return [turn.content for ex in examples for turn in ex.turns]

    @classmethod
    def for_data(cls, splits: Splits, files: dict[str, Path], tokenizer: TextTokenizer, options: GenerationOptions,
                 *, metric: str, fields: Fields) -> Seq2Seq:
        roles = {role: tokenizer.tokenizer.token_to_id(token) for role, token in ROLE_TOKENS.items()}
        if None in roles.values():
            raise ValueError(f"the tokenizer lacks the role tokens {list(ROLE_TOKENS.values())}; fine-tuning adds them")
        return cls._with_options(tokenizer, options, metric, layout="decoder", task=cls.name, role_ids=roles)

    @classmethod
    def wants_decoder(cls, options: GenerationOptions) -> bool:
        return True

    @classmethod
    def parse_input(cls, value: str | dict[str, Any], fields: Fields, line: int = 0) -> Conversation:
        """A text is a first user message; an object holds ``messages`` (role and content each)."""
        if isinstance(value, dict) and "messages" in value:
            from lmcraft.data.chat import conversation_from_record

            return conversation_from_record(Path("<input>"), line, value, prompt=True)
        return Conversation((Turn("user", labelled_text(value, fields.text_field)),), line=line)

    @staticmethod
    def baseline(splits: Splits, files: dict[str, Path]) -> dict[str, Any]:
        from lmcraft.tasks.seq2seq.baseline import baseline_report

        return {"name": "the answer to the nearest training prompt (retrieval)",
                "test": _flat(baseline_report(splits["train"], splits["test"], kind="chat"))}
