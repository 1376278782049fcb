"""T5-style span corruption (Raffel et al. 2020): denoising pretraining of an encoder-decoder.

About 15% of a sequence's tokens, in spans of about 3, are cut out; each span is replaced in the encoder's
input by one sentinel token, and the decoder learns to write the spans back, each after its sentinel:

    input   我 们 <s0> 北 京 <s1> 。           target   <s0> 在 <s1> 见 面 <s2>

The encoder reads short inputs and the decoder writes short targets, which makes this the cheapest of
the denoising objectives per token of signal.

The model is the one that sequence-to-sequence fine-tuning trains (``tasks/seq2seq.py``, layout
encoder-decoder): the backbone encodes the corrupted block, a ``decoder`` head (``model/heads.py``) writes
the spans, starting from [CLS]. The sentinels are special tokens of their own, ``<extra_id_0>`` ...
(``SENTINEL_TOKENS``), which pretraining adds to the tokenizer (and the embeddings) when it lacks them:
[MASK] could not stand for several different spans in one input.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmcraft.data.batching import pad
from lmcraft.model.heads import Model
from lmcraft.objectives.mlm import IGNORE, MLMMetrics

SENTINEL_TOKENS = [f"<extra_id_{i}>" for i in range(100)]  # as T5 names them; a block has ~max_len / 20 spans


def _segments(n: int, parts: int, generator: torch.Generator) -> list[int]:
    """Lengths of ``parts`` positive segments that add up to ``n``, cut at random."""
    cuts = sorted((torch.randperm(n - 1, generator=generator)[: parts - 1] + 1).tolist())
    bounds = [0, *cuts, n]
    return [b - a for a, b in itertools.pairwise(bounds)]


def corrupt_spans(ids: Sequence[int], *, sentinels: Sequence[int], generator: torch.Generator,
                  density: float = 0.15, mean_span: float = 3.0) -> tuple[list[int], list[int]]:
    """(encoder input, decoder target) of one sequence (without special tokens)."""
    n = len(ids)
    n_noise = min(max(1, round(n * density)), n - 1)
    n_spans = min(max(1, round(n_noise / mean_span)), n_noise, n - n_noise, len(sentinels) - 1)
    noise = _segments(n_noise, n_spans, generator)
    keep = _segments(n - n_noise, n_spans, generator)
    source: list[int] = []
    target: list[int] = []
    pos = 0
    for k, (kept, cut) in enumerate(zip(keep, noise, strict=True)):
        source += [*ids[pos : pos + kept], sentinels[k]]
        pos += kept
        target += [sentinels[k], *ids[pos : pos + cut]]
        pos += cut
    target.append(sentinels[n_spans])  # the end of the last span
    return source, target


@dataclass
class SpanCorruption:
    """The denoising objective: the backbone reads the corrupted block, the ``decoder`` head writes the spans.

    Items are packed blocks ``[CLS] tokens [SEP]`` (``mlm.pack``); their first and last tokens stay in place
    and the spans are cut, afresh for every batch, from the tokens between them."""

    sentinels: Sequence[int]  # ids of <extra_id_0>, <extra_id_1>, ...
    bos_id: int  # what the decoder reads before the first target token ([CLS], as in seq2seq fine-tuning)
    pad_id: int
    density: float = 0.15
    mean_span: float = 3.0
    head: str = "decoder"
    metric: str = "loss"
    greater_is_better: bool = False

    def head_spec(self) -> dict[str, object]:
        return {"kind": "decoder", "n_layer": 0}  # as deep as the encoder

    def collate(self, items: Sequence[Sequence[int]], generator: torch.Generator) -> dict[str, torch.Tensor]:
        pairs = [corrupt_spans(it[1:-1], sentinels=self.sentinels, generator=generator, density=self.density,
                               mean_span=self.mean_span) for it in items]
        ids, mask = pad([[it[0], *s, it[-1]] for it, (s, _) in zip(items, pairs, strict=True)], self.pad_id)  # (B, S)
        decoder_ids, decoder_mask = pad([[self.bos_id, *t[:-1]] for _, t in pairs], self.pad_id)  # (B, T)
        labels, _ = pad([t for _, t in pairs], IGNORE)  # (B, T): the next token at each decoder position
        return {"input_ids": ids, "padding_mask": mask, "decoder_ids": decoder_ids, "decoder_mask": decoder_mask,
                "labels": labels}

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def n_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens processed, for the throughput the loop reports: encoder plus decoder."""
        return int(batch["padding_mask"].sum() + batch["decoder_mask"].sum())

    def _logits(self, model: Model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        memory = model(batch["input_ids"], batch["padding_mask"])  # (B, S, D)
        head = model.heads[self.head]
        states = head(batch["decoder_ids"], batch["decoder_mask"], memory, batch["padding_mask"])  # (B, T, D)
        keep = batch["labels"] != IGNORE  # (B, T)
        return head.logits(states[keep]), batch["labels"][keep]  # (N, V), (N,)

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, targets = self._logits(model, batch)
        return F.cross_entropy(logits.float(), targets, reduction="sum")

    def new_metrics(self) -> MLMMetrics:
        return MLMMetrics(self)
