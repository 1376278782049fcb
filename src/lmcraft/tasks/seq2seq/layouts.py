"""The two ways a Transformer generates a target from a prompt; a generation task holds one of them.

- ``DecoderLayout`` (decoder-only, GPT-style): prompt and target in one causal sequence,
  ``source [SEP] target [SEP]``; the backbone's tied language-model head (``lm``) predicts each next token,
  and the loss falls on the target positions only. A dialogue is the same sequence with several prompt and
  target segments (``sequence``).
- ``EncoderDecoderLayout`` (the article's full Transformer): the encoder (the backbone) reads
  ``[CLS] source [SEP]``; a ``decoder`` head reads ``[CLS] target`` and predicts ``target [SEP]``,
  attending to the encoder's states. One source, one target.

A layout answers what differs between the two: how a (prompt ids, target ids) example becomes an item, how
items collate, where the logits at target positions come from, how beams decode, the head kind it trains
and the fields it adds to the saved head spec. What the example is (a pair, a conversation) is the task's
business (``task.py``, ``chat.py``).

Notation: B batch, T sequence (decoder-only) or source length, U target length, D width, V vocabulary,
N target positions in a batch.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from lmcraft.data.batching import pad
from lmcraft.model.beam import Constraint, beam_decode
from lmcraft.model.generate import left_pad
from lmcraft.model.heads import Model
from lmcraft.objectives.mlm import IGNORE

Batch = dict[str, torch.Tensor]
Segment = tuple[list[int], bool]  # token ids, and whether the loss falls on them (a target) or not (a prompt)


@dataclass
class GenItem:
    """One training sequence."""

    ids: list[int]  # decoder: the whole sequence; encoder-decoder: the source
    targets: list[bool] | None = None  # decoder: True at the tokens the loss predicts (from their prefix)
    target: list[int] | None = None  # encoder-decoder: the target's tokens, ending with [SEP]


def end_target(ids: list[int], max_tokens: int, max_len: int, eos_id: int) -> list[int]:
    """A target's tokens cut to ``max_tokens`` (and to leave a ``max_len`` sequence room for its prompt), then
    the [SEP] that ends it, which the model learns to write."""
    return [*ids[: min(max_tokens, max_len - 3)], eos_id]


@dataclass(frozen=True)
class Search:
    """How beam search writes outputs (``model/beam.py``)."""

    num_beams: int  # 1: greedy
    max_new_tokens: int  # the most new tokens a row may write (the layout may allow fewer)
    length_penalty: float  # scores are divided by length ** this
    no_repeat_ngram: int  # no hypothesis writes the same n-gram twice (0: no constraint)


@dataclass(frozen=True)
class Layout(abc.ABC):
    """Where prompt and target go, and which head learns and writes the target."""

    name: ClassVar[str]  # the ``--layout`` value
    head_kind: ClassVar[str]  # the head module it trains (``model/heads.py``), saved as the spec's ``kind``
    causal: ClassVar[bool]  # trains a decoder-only (causal) backbone
    multi_segment: ClassVar[bool]  # reads several prompt and target segments in one sequence (dialogue)

    pad_id: int
    eos_id: int  # the [SEP] that ends a source and a target
    bos_id: int  # the [CLS] that starts the encoder's source and the decoder's target

    @classmethod
    def build(cls, pad_id: int, eos_id: int, bos_id: int, *, decoder_layers: int = 0) -> Layout:
        """The layout with a task's settings (``decoder_layers`` is the encoder-decoder's)."""
        return cls(pad_id, eos_id, bos_id)

    @abc.abstractmethod
    def item(self, source: list[int], target: list[int], max_len: int) -> GenItem:
        """One source → target example; ``target`` is already cut and ends with [SEP]. The source is cut to
        fit ``max_len``."""

    def sequence(self, segments: Sequence[Segment], max_len: int) -> GenItem:
        """One sequence of prompt and target segments (a conversation), its last ``max_len`` tokens."""
        raise ValueError(f"the {self.name} layout reads one source and writes one target, not a dialogue")

    @abc.abstractmethod
    def prompt(self, source: list[int], max_len: int, room: int) -> list[int]:
        """What generation starts from for a source; ``room``: the prompt's share of a ``max_len`` sequence
        that the output shares."""

    @abc.abstractmethod
    def collate(self, items: Sequence[GenItem]) -> Batch: ...

    @abc.abstractmethod
    def n_tokens(self, batch: Batch) -> int:
        """The tokens the model reads (for throughput)."""

    @abc.abstractmethod
    def logits(self, model: Model, head: str, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, V) at the N positions with a target, and those targets (N,): the vocabulary projection
        is computed at target positions only."""

    @abc.abstractmethod
    def decode(self, model: Model, head: str, rows: list[list[int]], search: Search,
               constraint: Constraint | None = None) -> list[list[int]]:
        """The new tokens of each prompt in ``rows`` (made by ``prompt`` or ``sequence``), without the end;
        ``constraint`` (``model/beam.py``) says which hypotheses of row ``i`` may go on and end."""

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """The fields it adds to the saved head spec."""


@dataclass(frozen=True)
class DecoderLayout(Layout):
    name: ClassVar[str] = "decoder"
    head_kind: ClassVar[str] = "lm"
    causal: ClassVar[bool] = True
    multi_segment: ClassVar[bool] = True

    def item(self, source: list[int], target: list[int], max_len: int) -> GenItem:
        source = source[: max(max_len - len(target) - 1, 1)]  # the target is kept whole
        return self.sequence([(source, False), ([self.eos_id], False), (target, True)], max_len)

    def sequence(self, segments: Sequence[Segment], max_len: int) -> GenItem:
        ids = [t for part, _ in segments for t in part][-max_len:]
        targets = [flag for part, flag in segments for _ in part][-max_len:]
        targets[0] = False  # the first token has no prefix to be predicted from
        return GenItem(ids, targets)

    def prompt(self, source: list[int], max_len: int, room: int) -> list[int]:
        return [*source[: room - 1], self.eos_id]

    def collate(self, items: Sequence[GenItem]) -> Batch:
        ids, mask = pad([it.ids for it in items], self.pad_id)  # (B, T)
        flags, _ = pad([[int(f) for f in it.targets or []] for it in items], 0)  # (B, T)
        labels = torch.full_like(ids, IGNORE)
        labels[:, :-1] = torch.where(flags[:, 1:].bool(), ids[:, 1:], IGNORE)  # position i predicts token i + 1
        return {"input_ids": ids, "padding_mask": mask, "labels": labels}

    def n_tokens(self, batch: Batch) -> int:
        return int(batch["padding_mask"].sum())

    def logits(self, model: Model, head: str, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = model(batch["input_ids"], batch["padding_mask"])  # (B, T, D)
        keep = batch["labels"] != IGNORE  # (B, T)
        return model.heads[head](hidden[keep], model.backbone.embed.token.weight), batch["labels"][keep]

    @torch.inference_mode()
    def decode(self, model: Model, head: str, rows: list[list[int]], search: Search,
               constraint: Constraint | None = None) -> list[list[int]]:
        ids, mask = left_pad(rows, self.pad_id)  # (B, T)
        embedding = model.backbone.embed.token.weight
        lm = model.heads[head]
        room = min(search.max_new_tokens, model.backbone.cfg.max_tokens - ids.shape[1])
        return beam_decode(model.backbone, lambda hidden: lm(hidden, embedding), ids, mask, eos_id=self.eos_id,
                           num_beams=search.num_beams, max_new_tokens=max(room, 1),
                           length_penalty=search.length_penalty, no_repeat_ngram=search.no_repeat_ngram,
                           constraint=constraint)

    def spec(self) -> dict[str, Any]:
        return {"tied": True}  # the language-model head shares the token embedding


@dataclass(frozen=True)
class EncoderDecoderLayout(Layout):
    name: ClassVar[str] = "encoder-decoder"
    head_kind: ClassVar[str] = "decoder"
    causal: ClassVar[bool] = False
    multi_segment: ClassVar[bool] = False

    n_layer: int = 0  # the decoder head's depth (0: as deep as the encoder)

    @classmethod
    def build(cls, pad_id: int, eos_id: int, bos_id: int, *, decoder_layers: int = 0) -> Layout:
        return cls(pad_id, eos_id, bos_id, n_layer=decoder_layers)

    def item(self, source: list[int], target: list[int], max_len: int) -> GenItem:
        return GenItem(self.prompt(source, max_len, max_len), target=target)

    def prompt(self, source: list[int], max_len: int, room: int) -> list[int]:
        return [self.bos_id, *source[: max_len - 2], self.eos_id]  # the output has a sequence of its own

    def collate(self, items: Sequence[GenItem]) -> Batch:
        ids, mask = pad([it.ids for it in items], self.pad_id)  # (B, T)
        targets = [it.target or [] for it in items]
        decoder_ids, decoder_mask = pad([[self.bos_id, *t[:-1]] for t in targets], self.pad_id)  # (B, U)
        labels, _ = pad(targets, IGNORE)  # (B, U): the next token at each decoder position
        return {"input_ids": ids, "padding_mask": mask, "decoder_ids": decoder_ids, "decoder_mask": decoder_mask,
                "labels": labels}

    def n_tokens(self, batch: Batch) -> int:
        return int(batch["padding_mask"].sum()) + int(batch["decoder_mask"].sum())

    def logits(self, model: Model, head: str, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = model(batch["input_ids"], batch["padding_mask"])  # (B, T, D)
        decoder = model.heads[head]
        states = decoder(batch["decoder_ids"], batch["decoder_mask"], hidden, batch["padding_mask"])  # (B, U, D)
        keep = batch["labels"] != IGNORE  # (B, U)
        return decoder.logits(states[keep]), batch["labels"][keep]

    @torch.inference_mode()
    def decode(self, model: Model, head: str, rows: list[list[int]], search: Search,
               constraint: Constraint | None = None) -> list[list[int]]:
        source, mask = pad(rows, self.pad_id)  # (B, T)
        memory = model(source, mask)  # (B, T, D)
        decoder = model.heads[head]
        start = torch.full((len(rows), 1), self.bos_id, dtype=torch.long)  # (B, 1)
        room = min(search.max_new_tokens, decoder.decoder.cfg.max_tokens - 1)
        return beam_decode(decoder.decoder, decoder.logits, start, torch.ones_like(start), eos_id=self.eos_id,
                           num_beams=search.num_beams, max_new_tokens=room, length_penalty=search.length_penalty,
                           memory=memory, memory_mask=mask, no_repeat_ngram=search.no_repeat_ngram,
                           constraint=constraint)

    def spec(self) -> dict[str, Any]:
        return {"n_layer": self.n_layer}


LAYOUTS: dict[str, type[Layout]] = {layout.name: layout for layout in (DecoderLayout, EncoderDecoderLayout)}
LAYOUT_OF_HEAD: dict[str, str] = {layout.head_kind: name for name, layout in LAYOUTS.items()}


def layout_class(name: str) -> type[Layout]:
    if name not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {name!r}")
    return LAYOUTS[name]
