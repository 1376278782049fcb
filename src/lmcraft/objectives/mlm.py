"""Masked language modelling (BERT, Devlin et al. 2019).

15% of the ordinary (non-special, non-padding) tokens are chosen afresh for every batch (dynamic
masking, as in RoBERTa); with whole-word masking (``objectives/words.py``) 15% of the words, all of their
tokens together. Of those, 80% become [MASK], 10% a random token and 10% stay as they are; the
loss is the cross-entropy at the chosen positions only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmcraft.data.batching import pad
from lmcraft.model.heads import Model

IGNORE = -100  # label of positions without a loss


@dataclass
class MaskedBatch:
    input_ids: torch.Tensor  # (B, T) with the chosen positions corrupted
    labels: torch.Tensor  # (B, T) original ids at chosen positions, IGNORE elsewhere
    selected: torch.Tensor  # (B, T) bool, the chosen positions


def mask_tokens(
    ids: torch.Tensor,  # (B, T) original token ids
    *, special_ids: Sequence[int], mask_id: int, vocab_size: int, generator: torch.Generator,
    rate: float = 0.15, mask_share: float = 0.8, random_share: float = 0.1,
    word_starts: torch.Tensor | None = None,  # (B, T) bool: the token starts a word (whole-word masking)
) -> MaskedBatch:
    maskable = ~torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype))
    draw = torch.rand(ids.shape, generator=generator)  # (B, T)
    if word_starts is not None:
        # Every token takes the draw of the token that starts its word, so a word is chosen whole; each
        # word is chosen with probability `rate`, which keeps the expected share of masked tokens at `rate`.
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        first_of_word = torch.where(word_starts, positions, torch.zeros_like(positions)).cummax(1).values
        draw = draw.gather(1, first_of_word)
    selected = (draw < rate) & maskable  # (B, T)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE))
    roll = torch.rand(ids.shape, generator=generator)
    to_mask = selected & (roll < mask_share)
    to_random = selected & (roll >= mask_share) & (roll < mask_share + random_share)
    corrupted = ids.clone()
    corrupted[to_mask] = mask_id
    # Random replacements are drawn from the ordinary vocabulary (ids above the special tokens).
    low = max(special_ids) + 1
    random_ids = torch.randint(low, vocab_size, ids.shape, generator=generator, dtype=ids.dtype)
    corrupted[to_random] = random_ids[to_random]
    return MaskedBatch(corrupted, labels, selected)


@dataclass
class MaskedLM:
    """The MLM objective: turns token sequences into masked batches, computes the loss and metrics."""

    special_ids: Sequence[int]
    mask_id: int
    pad_id: int
    vocab_size: int
    rate: float = 0.15
    head: str = "mlm"
    metric: str = "loss"  # model selection on held-out MLM loss
    greater_is_better: bool = False

    def head_spec(self) -> dict[str, object]:
        return {"kind": "mlm"}

    def collate(self, items: Sequence[Sequence[int] | WordBlock],
                generator: torch.Generator) -> dict[str, torch.Tensor]:
        starts = None
        if items and isinstance(items[0], WordBlock):  # whole-word masking
            starts, _ = pad([it.starts for it in items], 1)  # type: ignore[union-attr]
            items = [it.ids for it in items]  # type: ignore[union-attr]
        ids, padding_mask = pad(items, self.pad_id)  # type: ignore[arg-type]
        masked = mask_tokens(ids, special_ids=self.special_ids, mask_id=self.mask_id,
                             vocab_size=self.vocab_size, generator=generator, rate=self.rate,
                             word_starts=None if starts is None else starts.bool())
        batch = {"input_ids": masked.input_ids, "labels": masked.labels}
        if not bool(padding_mask.all()):
            batch["padding_mask"] = padding_mask
        return batch

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def _logits(self, model: Model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = model(batch["input_ids"], batch.get("padding_mask"))  # (B, T, D)
        selected = batch["labels"] != IGNORE  # (B, T)
        logits = model.heads[self.head](hidden, selected, model.backbone.embed.token.weight)  # (N, V)
        return logits, batch["labels"][selected]  # (N, V), (N,)

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, targets = self._logits(model, batch)
        return F.cross_entropy(logits.float(), targets, reduction="sum")

    def new_metrics(self) -> MLMMetrics:
        return MLMMetrics(self)


class MLMMetrics:
    """Mean loss and accuracy over the predicted positions (masked tokens; next tokens for CLM), accumulated
    batch by batch. ``objective._logits(model, batch)`` gives those positions' logits and targets."""

    def __init__(self, objective: Any) -> None:
        self.objective = objective
        self.loss = 0.0
        self.correct = 0
        self.count = 0

    @torch.no_grad()
    def update(self, model: Model, batch: dict[str, torch.Tensor]) -> None:
        self.add(*self.objective._logits(model, batch))

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Count predictions: logits (N, V) at the N predicted positions, their targets (N,)."""
        self.loss += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
        self.correct += int((logits.argmax(-1) == targets).sum())
        self.count += int(targets.numel())

    def reduce(self, sum_tensor: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the counts of all processes (each evaluated its own share of the data)."""
        loss, correct, count = sum_tensor(torch.tensor([self.loss, self.correct, self.count], dtype=torch.float64))
        self.loss, self.correct, self.count = float(loss), int(correct), int(count)

    def compute(self) -> dict[str, float]:
        n = max(self.count, 1)
        loss = self.loss / n
        return {"loss": loss, "perplexity": float(torch.tensor(loss).exp()), "accuracy": self.correct / n}


@dataclass
class WordBlock:
    """A packed block and, per token, whether it starts a word (for whole-word masking)."""

    ids: list[int]
    starts: list[bool]

    def __len__(self) -> int:
        return len(self.ids)


def pack_words(sequences: Sequence[Sequence[int]], starts: Sequence[Sequence[bool]], *, block: int, cls_id: int,
               sep_id: int) -> list[WordBlock]:
    """``pack`` that carries the word-start flags along (special tokens are words of their own)."""
    ids = pack(sequences, block=block, cls_id=cls_id, sep_id=sep_id)
    flags: list[bool] = []
    for seq_flags in starts:
        flags.extend(seq_flags)
        flags.append(True)  # the [SEP] after every sequence
    body = block - 2
    return [WordBlock(blk, [True, *flags[i * body : (i + 1) * body], True]) for i, blk in enumerate(ids)]


def pack(sequences: Sequence[Sequence[int]], *, block: int, cls_id: int, sep_id: int) -> list[list[int]]:
    """Concatenate token sequences (without special tokens), separated by [SEP], and cut the stream into
    blocks of exactly ``block`` tokens: [CLS] ... [SEP]. No padding is wasted on short paragraphs."""
    body = block - 2
    stream: list[int] = []
    for seq in sequences:
        stream.extend(seq)
        stream.append(sep_id)
    return [[cls_id, *stream[i : i + body], sep_id] for i in range(0, len(stream) - body + 1, body)]
