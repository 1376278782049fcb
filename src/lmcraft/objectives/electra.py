"""Replaced-token detection (ELECTRA, Clark et al. 2020): pretraining that learns from every token.

A small generator (``GeneratorHead``, sharing the encoder's embeddings) is trained with MLM on 15% of the
tokens, all replaced by [MASK]. Each masked token is then replaced by a sample from the generator's
distribution, and the encoder (the discriminator, with ``ReplacedTokenHead``) says for every real token
whether it is the original or a replacement. MLM learns from the masked 15%; the discriminator learns from
all of them, which is why ELECTRA gets more from the same compute at small sizes. The encoder is what is
kept: it fine-tunes like any encoder, and exports to transformers as ``ElectraForPreTraining``.

The loss is L_MLM + λ·L_disc with λ = 50 (the paper's), each a mean: L_MLM over the masked tokens, L_disc
over the real tokens. The training loop divides a batch's summed loss by one count, the masked tokens, so
the discriminator's sum enters scaled by (masked / real tokens) of its micro-batch. Samples are drawn by
inverse CDF from uniform numbers that collation draws with the loop's generator, so a resumed run takes
the same samples. Model selection uses the held-out ``loss``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmcraft.data.batching import pad
from lmcraft.model.heads import Model
from lmcraft.objectives.mlm import IGNORE, mask_tokens

DISCRIMINATOR_WEIGHT = 50.0  # λ of Clark et al. 2020


@dataclass
class Detection:
    """One forward pass of both parts: the generator's logits at the masked positions and their targets,
    the discriminator's logits at the real positions and whether each token there was replaced."""

    generator_logits: torch.Tensor  # (N, V)
    targets: torch.Tensor  # (N,)
    logits: torch.Tensor  # (M,)
    replaced: torch.Tensor  # (M,) bool


@dataclass
class ReplacedTokenDetection:
    special_ids: Sequence[int]
    mask_id: int
    pad_id: int
    vocab_size: int
    rate: float = 0.15
    weight: float = DISCRIMINATOR_WEIGHT
    head: str = "rtd"
    generator: str = "generator"
    metric: str = "loss"
    greater_is_better: bool = False

    def collate(self, items: Sequence[Sequence[int]], generator: torch.Generator) -> dict[str, torch.Tensor]:
        ids, padding_mask = pad(items, self.pad_id)  # (B, T)
        masked = mask_tokens(ids, special_ids=self.special_ids, mask_id=self.mask_id, vocab_size=self.vocab_size,
                             generator=generator, rate=self.rate, mask_share=1.0, random_share=0.0)
        batch = {"input_ids": masked.input_ids, "original_ids": ids, "labels": masked.labels,
                 "draws": torch.rand(ids.shape, generator=generator)}  # (B, T) uniforms for the samples
        if not bool(padding_mask.all()):
            batch["padding_mask"] = padding_mask
        return batch

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def detect(self, model: Model, batch: dict[str, torch.Tensor]) -> Detection:
        padding_mask = batch.get("padding_mask")
        selected = batch["labels"] != IGNORE  # (B, T)
        embed = model.backbone.embed
        generator_logits = model.heads[self.generator](embed(batch["input_ids"]), padding_mask, selected,
                                                       embed.token.weight)  # (N, V)
        with torch.no_grad():  # sample a replacement for each masked token: inverse CDF of its distribution
            cdf = generator_logits.float().softmax(-1).cumsum(-1)  # (N, V)
            sampled = torch.searchsorted(cdf, batch["draws"][selected][:, None]).clamp(max=cdf.shape[1] - 1)
            corrupted = batch["original_ids"].clone()
            corrupted[selected] = sampled[:, 0]
        real = torch.ones_like(selected) if padding_mask is None else padding_mask.bool()  # (B, T)
        hidden = model(corrupted, padding_mask)  # (B, T, D)
        logits = model.heads[self.head](hidden)  # (B, T)
        return Detection(generator_logits, batch["labels"][selected], logits[real],
                         (corrupted != batch["original_ids"])[real])

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        d = self.detect(model, batch)
        mlm = F.cross_entropy(d.generator_logits.float(), d.targets, reduction="sum")
        disc = F.binary_cross_entropy_with_logits(d.logits.float(), d.replaced.float(), reduction="sum")
        return mlm + self.weight * disc * (d.targets.numel() / max(d.logits.numel(), 1))

    def new_metrics(self) -> DetectionMetrics:
        return DetectionMetrics(self)


class DetectionMetrics:
    """The generator's MLM loss and accuracy over masked tokens; the discriminator's loss and accuracy over
    real tokens, and its recall of the replaced ones; ``loss`` = MLM loss + λ · discriminator loss."""

    def __init__(self, objective: ReplacedTokenDetection) -> None:
        self.objective = objective
        self.sums = torch.zeros(8, dtype=torch.float64)

    @torch.no_grad()
    def update(self, model: Model, batch: dict[str, torch.Tensor]) -> None:
        d = self.objective.detect(model, batch)
        guessed = d.logits > 0
        self.sums += torch.tensor([
            float(F.cross_entropy(d.generator_logits.float(), d.targets, reduction="sum")),
            int((d.generator_logits.argmax(-1) == d.targets).sum()), d.targets.numel(),
            float(F.binary_cross_entropy_with_logits(d.logits.float(), d.replaced.float(), reduction="sum")),
            int((guessed == d.replaced).sum()), d.logits.numel(),
            int((guessed & d.replaced).sum()), int(d.replaced.sum()),
        ], dtype=torch.float64)

    def reduce(self, sum_tensor: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.sums = sum_tensor(self.sums)

    def compute(self) -> dict[str, Any]:
        mlm, right, masked, disc, agreed, real, found, replaced = self.sums.tolist()
        mlm_loss, disc_loss = mlm / max(masked, 1), disc / max(real, 1)
        return {"loss": mlm_loss + self.objective.weight * disc_loss, "generator_loss": mlm_loss,
                "generator_accuracy": right / max(masked, 1), "detection_loss": disc_loss,
                "detection_accuracy": agreed / max(real, 1), "replaced_recall": found / max(replaced, 1),
                "replaced_share": replaced / max(real, 1)}
