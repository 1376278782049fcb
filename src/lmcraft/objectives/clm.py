"""Causal language modelling (GPT): predict every next token, with documents packed into full blocks.

Packing puts several short documents into one block, so no compute goes to padding. Each document's
tokens attend only to earlier tokens of the *same* document (the block's attention mask is
block-diagonal and causal), its positions restart at 0, and no loss asks a document to predict the first
token of the next one. Packed training therefore computes exactly what one document at a time would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmcraft.model.heads import Model
from lmcraft.objectives.mlm import IGNORE, MLMMetrics


@dataclass
class DocBlock:
    """A block of packed tokens and the document each token belongs to."""

    ids: list[int]
    documents: list[int]

    def __len__(self) -> int:
        return len(self.ids)


def pack_documents(sequences: Sequence[Sequence[int]], *, block: int, eos_id: int) -> list[DocBlock]:
    """Documents (each followed by ``eos_id``) concatenated and cut into blocks of exactly ``block`` tokens.
    A document cut by a block's end continues, as a document of its own, in the next block."""
    ids: list[int] = []
    documents: list[int] = []
    for k, seq in enumerate(sequences):
        ids.extend([*seq, eos_id])
        documents.extend([k] * (len(seq) + 1))
    return [DocBlock(ids[i : i + block], documents[i : i + block]) for i in range(0, len(ids) - block + 1, block)]


@dataclass
class CausalLM:
    """The CLM objective over packed blocks."""

    head: str = "lm"
    metric: str = "loss"
    greater_is_better: bool = False

    def head_spec(self) -> dict[str, object]:
        return {"kind": "lm", "tied": True}

    def collate(self, items: Sequence[DocBlock], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        ids = torch.tensor([it.ids for it in items])  # (B, T); blocks all have the same length
        documents = torch.tensor([it.documents for it in items])  # (B, T)
        labels = torch.full_like(ids, IGNORE)
        same = documents[:, 1:] == documents[:, :-1]  # (B, T-1): the next token is in the same document
        labels[:, :-1] = torch.where(same, ids[:, 1:], torch.full_like(ids[:, 1:], IGNORE))
        return {"input_ids": ids, "document_ids": documents, "labels": labels}

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def _logits(self, model: Model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = model(batch["input_ids"], document_ids=batch["document_ids"])  # (B, T, D)
        keep = batch["labels"] != IGNORE  # (B, T)
        logits = model.heads[self.head](hidden[keep], model.backbone.embed.token.weight)  # (N, V)
        return logits, batch["labels"][keep]

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, targets = self._logits(model, batch)
        return F.cross_entropy(logits.float(), targets, reduction="sum")

    def new_metrics(self) -> MLMMetrics:
        return MLMMetrics(self)  # the same counts: loss, perplexity and accuracy at the predicted positions
