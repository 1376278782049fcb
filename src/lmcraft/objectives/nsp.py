"""Sentence-pair objectives trained together with MLM: next-sentence prediction (NSP, BERT) and
sentence-order prediction (SOP, ALBERT).

A document is cut into sentences; a pair is a stretch of sentences A and the stretch B that follows it.
- NSP: half of the pairs keep B (label ``next``), half take B from another document (``random``).
- SOP: half of the pairs keep the order (``ordered``), half swap A and B (``swapped``); both halves come
  from one document, so the model must learn coherence rather than topic (ALBERT's argument).
The pair is ``[CLS] A [SEP] B [SEP]`` with segment ids 0 / 1; a classifier on BERT's pooler reads [CLS].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmcraft.data.batching import pad
from lmcraft.model.heads import Model
from lmcraft.objectives.mlm import IGNORE, MaskedLM, MLMMetrics, mask_tokens
from lmcraft.text import split_sentences
from lmcraft.tokenizer import TextTokenizer

LABELS = {"nsp": ["random", "next"], "sop": ["swapped", "ordered"]}


def make_pairs(documents: Sequence[str], kind: str, seed: int) -> list[tuple[str, str, int]]:
    """(A, B, label) from every document of at least two sentences; label 1 is next / ordered."""
    if kind not in LABELS:
        raise ValueError(f"sentence task must be nsp or sop, not {kind!r}")
    g = torch.Generator().manual_seed(seed)
    split = [split_sentences(d) for d in documents]
    usable = [k for k, s in enumerate(split) if len(s) >= 2]
    if len(usable) < 2:
        raise ValueError("sentence-pair pretraining needs at least two documents of two or more sentences")
    pairs = []
    for k in usable:
        sentences = split[k]
        cut = 1 + int(torch.randint(len(sentences) - 1, (1,), generator=g))
        a, b = "".join(sentences[:cut]), "".join(sentences[cut:])
        flip = bool(torch.rand(1, generator=g) < 0.5)
        if flip and kind == "nsp":
            other = usable[int(torch.randint(len(usable) - 1, (1,), generator=g))]
            other = other if other != k else usable[-1]  # any document but this one
            b = split[other][int(torch.randint(len(split[other]), (1,), generator=g))]
        elif flip:
            a, b = b, a
        pairs.append((a, b, 0 if flip else 1))
    return pairs


@dataclass
class PairItem:
    ids: list[int]
    segments: list[int]
    label: int


def encode_pairs(tokenizer: TextTokenizer, pairs: Sequence[tuple[str, str, int]], max_len: int) -> list[PairItem]:
    ids, segments = tokenizer.encode([a for a, _, _ in pairs], [b for _, b, _ in pairs], max_len=max_len)
    return [PairItem(i, s, label) for i, s, (_, _, label) in zip(ids, segments, pairs, strict=True)]


class PairedMLM:
    """MLM on the pair's tokens plus the sentence task on [CLS]. The step's loss is the mean MLM loss plus
    the mean pair loss (the pair sum is scaled to the masked-token count that the loop divides by)."""

    def __init__(self, mlm: MaskedLM, kind: str) -> None:
        self.mlm, self.kind = mlm, kind
        self.head = mlm.head
        self.pair_head = kind
        self.metric = "loss"
        self.greater_is_better = False

    def collate(self, items: Sequence[PairItem], generator: torch.Generator) -> dict[str, torch.Tensor]:
        ids, padding_mask = pad([it.ids for it in items], self.mlm.pad_id)  # (B, T)
        segments, _ = pad([it.segments for it in items], 0)
        masked = mask_tokens(ids, special_ids=self.mlm.special_ids, mask_id=self.mlm.mask_id,
                             vocab_size=self.mlm.vocab_size, generator=generator, rate=self.mlm.rate)
        masked.labels[padding_mask == 0] = IGNORE
        return {"input_ids": masked.input_ids, "labels": masked.labels, "padding_mask": padding_mask,
                "segment_ids": segments, "pair_labels": torch.tensor([it.label for it in items])}

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return self.mlm.n_targets(batch)

    def _both(self, model: Model, batch: dict[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                                                            torch.Tensor]:
        hidden = model(batch["input_ids"], batch["padding_mask"], batch["segment_ids"])  # (B, T, D)
        selected = batch["labels"] != IGNORE
        mlm_logits = model.heads[self.head](hidden, selected, model.backbone.embed.token.weight)  # (N, V)
        pair_logits = model.heads[self.pair_head](hidden, batch["padding_mask"])  # (B, 2)
        return (mlm_logits, batch["labels"][selected]), pair_logits

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        (logits, targets), pair_logits = self._both(model, batch)
        mlm = F.cross_entropy(logits.float(), targets, reduction="sum")
        pair = F.cross_entropy(pair_logits.float(), batch["pair_labels"], reduction="sum")
        return mlm + pair * (max(int(targets.numel()), 1) / pair_logits.shape[0])

    def new_metrics(self) -> PairedMetrics:
        return PairedMetrics(self)


class PairedMetrics(MLMMetrics):
    """MLM loss, perplexity and accuracy, plus the sentence task's accuracy."""

    def __init__(self, objective: PairedMLM) -> None:
        super().__init__(objective)
        self.pair_correct = 0
        self.pairs = 0

    @torch.no_grad()
    def update(self, model: Model, batch: dict[str, torch.Tensor]) -> None:
        (logits, targets), pair_logits = self.objective._both(model, batch)  # one forward for both
        self.add(logits, targets)
        self.pair_correct += int((pair_logits.argmax(-1) == batch["pair_labels"]).sum())
        self.pairs += int(pair_logits.shape[0])

    def reduce(self, sum_tensor: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().reduce(sum_tensor)
        correct, count = sum_tensor(torch.tensor([self.pair_correct, self.pairs], dtype=torch.float64))
        self.pair_correct, self.pairs = int(correct), int(count)

    def compute(self) -> dict[str, float]:
        return {**super().compute(), f"{self.objective.kind}_accuracy": self.pair_correct / max(self.pairs, 1)}
