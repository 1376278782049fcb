"""Prompt-based fine-tuning through the masked-LM head (PET, Schick & Schütze 2021; LM-BFF, Gao et al. 2021).

Instead of a new, randomly initialised classifier, the text is put into a cloze template such as
``{text}总之很{mask}。`` and every label gets a word (the verbalizer: pos → 好, neg → 差). The class
scores are the pretrained MLM head's logits of those words at the [MASK] position, so the model starts
from what pretraining taught it, which matters most when there are only a few labelled examples.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lmcraft.data.batching import pad
from lmcraft.data.readers import Example
from lmcraft.model.heads import Model
from lmcraft.tasks.classify.task import ClassifyMetrics
from lmcraft.tokenizer import TextTokenizer

PLACEHOLDERS = re.compile(r"(\{text\}|\{mask\})")


@dataclass
class PromptItem:
    ids: list[int]
    mask_position: int
    label: int


def parse_verbalizer(spec: str) -> dict[str, str]:
    """'pos=好,neg=差' -> {'pos': '好', 'neg': '差'}."""
    pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise ValueError(f"verbalizer {spec!r} is not of the form label=word,label=word")
    return {label.strip(): word.strip() for label, word in pairs}


@dataclass
class PromptClassify:
    """Classification as filling a cloze template's [MASK] with one of the verbalizer's words."""

    labels: list[str]
    verbalizer: dict[str, str]  # label -> the word that stands for it
    template: str  # holds {text} and {mask} once each, e.g. "{text}总之很{mask}。"
    pad_id: int
    head: str = "mlm"  # the pretrained masked-LM head
    metric: str = "accuracy"
    greater_is_better: bool = True
    word_ids: list[int] = field(default_factory=list)  # (C,) token id of each label's word, set by bind()

    def __post_init__(self) -> None:
        if self.template.count("{text}") != 1 or self.template.count("{mask}") != 1:
            raise ValueError(f"the template must hold {{text}} and {{mask}} once each: {self.template!r}")
        missing = [label for label in self.labels if label not in self.verbalizer]
        if missing:
            raise ValueError(f"the verbalizer has no word for label(s) {missing} (it has {sorted(self.verbalizer)})")
        self.label_ids = {name: i for i, name in enumerate(self.labels)}

    def bind(self, tokenizer: TextTokenizer) -> None:
        """Look up each verbalizer word's token; a word must be exactly one token of the vocabulary."""
        self.word_ids = []
        for label in self.labels:
            word = self.verbalizer[label]
            ids = tokenizer.encode([word], max_len=None, special_tokens=False)[0]
            if len(ids) != 1:
                raise ValueError(f"verbalizer word {word!r} (label {label!r}) is {len(ids)} tokens for this "
                                 "tokenizer; choose a word that is one token")
            self.word_ids.append(ids[0])
        if len(set(self.word_ids)) != len(self.word_ids):
            raise ValueError(f"two labels share a verbalizer token: {self.verbalizer}")

    def encode(self, tokenizer: TextTokenizer, examples: Sequence[Example], max_len: int) -> list[PromptItem]:
        if not self.word_ids:
            self.bind(tokenizer)
        parts = [p for p in PLACEHOLDERS.split(self.template) if p]
        literal = {p: tokenizer.encode([p], max_len=None, special_tokens=False)[0]
                   for p in parts if p not in ("{text}", "{mask}")}
        fixed = 2 + 1 + sum(len(ids) for ids in literal.values())  # [CLS], [SEP], [MASK] and the template's words
        room = max_len - fixed
        if room < 1:
            raise ValueError(f"the template alone takes {fixed} of the {max_len} tokens; shorten it")
        texts = tokenizer.encode([ex.text for ex in examples], max_len=None, special_tokens=False)
        items = []
        for ex, text_ids in zip(examples, texts, strict=True):
            ids = [tokenizer.cls_id]
            mask_position = -1
            for p in parts:
                if p == "{text}":
                    ids += text_ids[:room]  # long texts lose their end, never the template
                elif p == "{mask}":
                    mask_position = len(ids)
                    ids.append(tokenizer.mask_id)
                else:
                    ids += literal[p]
            ids.append(tokenizer.sep_id)
            label = self.label_ids[ex.label] if ex.label is not None else -1
            items.append(PromptItem(ids, mask_position, label))
        return items

    def collate(self, items: Sequence[PromptItem], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        ids, padding_mask = pad([it.ids for it in items], self.pad_id)  # (B, T)
        at_mask = torch.zeros_like(ids, dtype=torch.bool)
        at_mask[torch.arange(len(items)), torch.tensor([it.mask_position for it in items])] = True  # (B, T)
        return {"input_ids": ids, "padding_mask": padding_mask, "at_mask": at_mask,
                "labels": torch.tensor([it.label for it in items], dtype=torch.long)}

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["labels"].shape[0])

    def logits(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = model(batch["input_ids"], batch["padding_mask"])  # (B, T, D)
        vocab = model.heads[self.head](hidden, batch["at_mask"], model.backbone.embed.token.weight)  # (B, V)
        return vocab[:, self.word_ids]  # (B, C): the verbalizer words' scores

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch).float(), batch["labels"], reduction="sum")

    def new_metrics(self) -> ClassifyMetrics:
        return ClassifyMetrics(self)  # type: ignore[arg-type]  (it needs labels and logits, which this has)
