"""Relation extraction: which relation, if any, holds between two marked entities of a sentence.

The recipe of Zhou & Chen (2021), "An Improved Baseline for Sentence-level Relation Extraction":
- *typed entity markers (punct)*: the head entity is rewritten ``@ * TYPE * entity @`` and the tail
  ``# ^ TYPE ^ entity #``. Punctuation needs no new tokens, and the type words tell the model what kind of
  entity each side is (PER, LOC, ORG);
- the head reads the encoder's states at the two *start* markers (the "entity start" representation of
  Baldini Soares et al. 2019; ``model/heads.py:RelationHead``);
- evaluation follows TACRED: ``no_relation`` is a label to learn, but in precision and recall a predicted
  ``no_relation`` is no prediction and a gold ``no_relation`` is no relation to find (micro-averaged
  precision / recall / F1 over the other labels).

Marker positions are found through the tokenizer's character offsets, never by searching for the ids of
``@`` and ``#``: a text may hold those characters itself, and a tokenizer may merge a marker with its
neighbours or map it to [UNK].
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from lmcraft.data.batching import pad
from lmcraft.data.errors import DataError
from lmcraft.data.readers import Fields
from lmcraft.model.heads import Model
from lmcraft.tasks.classify.task import ClassifyMetrics
from lmcraft.tasks.contract import HeadSpec, Splits, Task
from lmcraft.tasks.relate.reader import (
    NO_RELATION,
    RelationExample,
    check_relations,
    labels_from,
    read_relations,
    relation_example,
)
from lmcraft.tokenizer import TextTokenizer

HEAD_MARK, HEAD_TYPE_MARK = "@", "*"  # @ * TYPE * entity @
TAIL_MARK, TAIL_TYPE_MARK = "#", "^"  # # ^ TYPE ^ entity #
METRICS = ("micro_f1", "macro_f1", "accuracy")  # what may select the best checkpoint


# ------------------------------------------------------------------------------------- marking, tokens


@dataclass(frozen=True)
class Marked:
    """A text with typed entity markers; spans are character offsets into ``text`` (end exclusive)."""

    text: str
    head_span: tuple[int, int]  # from the head's opening "@" to its closing "@"
    tail_span: tuple[int, int]  # from the tail's opening "#" to its closing "#"


def mark(example: RelationExample) -> Marked:
    """``... @ * PER * 江泽民 @ ... # ^ LOC ^ 北京 # ...`` (the order of head and tail is the text's)."""
    text = example.text
    markers = {"head": (f"{HEAD_MARK} {HEAD_TYPE_MARK} {example.head.type} {HEAD_TYPE_MARK} ", f" {HEAD_MARK}"),
               "tail": (f"{TAIL_MARK} {TAIL_TYPE_MARK} {example.tail.type} {TAIL_TYPE_MARK} ", f" {TAIL_MARK}")}
    pieces: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    length = cursor = 0
    for role, entity in sorted((("head", example.head), ("tail", example.tail)), key=lambda r: r[1].start):
        opening, closing = markers[role]
        pieces.append(text[cursor : entity.start])
        length += entity.start - cursor
        segment = opening + text[entity.start : entity.end] + closing
        pieces.append(segment)
        spans[role] = (length, length + len(segment))
        length += len(segment)
        cursor = entity.end
    pieces.append(text[cursor:])
    return Marked("".join(pieces), spans["head"], spans["tail"])


@dataclass
class MarkedTokens:
    """One marked example as model input, with what is needed to check it."""

    ids: list[int]  # [CLS] tokens [SEP], at most max_len
    offsets: list[tuple[int, int]]  # each token's characters in ``marked.text``; (0, 0) for [CLS] and [SEP]
    markers: tuple[int, int]  # indices into ``ids`` of the head's "@" and the tail's "#"
    marked: Marked
    cut: str  # "" (whole text), "window" (context cut on both sides) or "gap" (also the text between)


def _covering(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """Index of the first token whose characters include ``char``."""
    for i, (start, end) in enumerate(offsets):
        if start <= char < end:
            return i
    raise ValueError(f"no token covers character {char}; did the tokenizer's normalizer remove a marker?")


def window(n_tokens: int, first: tuple[int, int], second: tuple[int, int], budget: int) -> tuple[list[int], str]:
    """Which of ``n_tokens`` tokens to keep (at most ``budget``) so that both entities survive.

    ``first`` and ``second`` are the (first, last) token indices of the two marked entities in text
    order. Three cases:
    - everything fits: keep it all;
    - the stretch from the first entity's opening marker to the second's closing marker fits: keep it, and
      fill the rest of the budget with context from both sides, evenly, as far as the text goes ("window");
    - the entities lie farther apart than ``budget`` tokens: keep both marked entities whole and shorten the
      text between them, keeping the tokens next to each entity and dropping the middle ("gap"). Where the
      two marked entities alone exceed the budget (very long names, tiny ``max_len``), each keeps its first
      tokens, its opening marker among them.
    The kept tokens are those of the whole text, so a cut never re-tokenizes the characters at its edges.
    """
    if n_tokens <= budget:
        return list(range(n_tokens)), ""
    (a1, b1), (a2, b2) = first, second
    core = b2 - a1 + 1
    if core <= budget:
        extra = budget - core
        right = min(n_tokens - 1 - b2, extra - min(a1, extra // 2))
        left = min(a1, extra - right)
        return list(range(a1 - left, b2 + right + 1)), "window"
    len1, len2 = b1 - a1 + 1, b2 - a2 + 1
    room = budget - len1 - len2
    if room >= 0:
        after_first = room - room // 2  # the gap is longer than the room, so both sides can take their share
        before_second = room // 2
        keep = [*range(a1, b1 + after_first + 1), *range(a2 - before_second, b2 + 1)]
    else:
        keep1 = min(len1, budget - min(len2, budget // 2))
        keep = [*range(a1, a1 + keep1), *range(a2, a2 + min(len2, budget - keep1))]
    # A token may hold the closing marker of one entity and the opening marker of the next ("#@" when the
    # entities touch and the tokenizer merges punctuation): keep it once.
    return sorted(set(keep)), "gap"


def missing_markers(tokenizer: TextTokenizer) -> list[str]:
    """Marker characters that the tokenizer can only encode as its unknown token. A WordPiece vocabulary
    learned from text without "@" or "#" (the People's Daily has none) lacks them: the markers then
    become [UNK], head and tail markers share one embedding, and only position and the type words tell them
    apart. Byte-level BPE and BERT's vocabularies have them all."""
    try:
        unk = tokenizer.unk_id
    except ValueError:
        return []  # no unknown token (byte-level BPE): every character is encodable
    marks = (HEAD_MARK, HEAD_TYPE_MARK, TAIL_MARK, TAIL_TYPE_MARK)
    return [m for m in marks if tokenizer.tokenizer.encode(m, add_special_tokens=False).ids == [unk]]


def mark_and_tokenize(
    tokenizer: TextTokenizer, examples: Sequence[RelationExample], max_len: int,
) -> list[MarkedTokens]:
    """Mark each example, tokenize the marked texts in one parallel call, and cut each to ``max_len``
    tokens ([CLS] and [SEP] included) with ``window`` so that both entities and their markers survive."""
    if max_len < 4:
        raise ValueError(f"max_len must leave room for [CLS], [SEP] and the two markers; got {max_len}")
    marked = [mark(ex) for ex in examples]
    tok = tokenizer.tokenizer
    tok.no_truncation()
    tok.no_padding()
    encodings = tok.encode_batch([m.text for m in marked], add_special_tokens=False)
    out = []
    for m, enc in zip(marked, encodings, strict=True):
        offsets = enc.offsets
        head = (_covering(offsets, m.head_span[0]), _covering(offsets, m.head_span[1] - 1))
        tail = (_covering(offsets, m.tail_span[0]), _covering(offsets, m.tail_span[1] - 1))
        first, second = sorted((head, tail))
        keep, cut = window(len(offsets), first, second, max_len - 2)
        position = {token: i + 1 for i, token in enumerate(keep)}  # +1: after [CLS]
        out.append(MarkedTokens(
            ids=[tokenizer.cls_id, *(enc.ids[k] for k in keep), tokenizer.sep_id],
            offsets=[(0, 0), *(offsets[k] for k in keep), (0, 0)],
            markers=(position[head[0]], position[tail[0]]), marked=m, cut=cut,
        ))
    return out


# ------------------------------------------------------------------------------------------------ task


@dataclass
class Encoded:
    """One tokenized example."""

    ids: list[int]
    markers: tuple[int, int]  # token index of the head's and of the tail's start marker
    label: int  # -1 when unlabelled


@dataclass
class RelationExtraction(Task):
    """The relation extraction task: encoding, batches, loss, metrics and decoding."""

    name: ClassVar[str] = "relate"
    description: ClassVar[str] = "relation between two marked entities of a text"
    extensions: ClassVar[tuple[str, ...]] = (".jsonl",)
    summary_metrics: ClassVar[tuple[str, ...]] = ("micro_f1", "macro_f1", "accuracy")
    head_kinds: ClassVar[tuple[str, ...]] = ("relate",)

    labels: list[str]  # index -> relation name; the order of the head's outputs
    pad_id: int
    no_relation: str = NO_RELATION  # the label meaning "not related"; left out of micro precision / recall
    head: str = "relate"
    metric: str = "micro_f1"  # dev metric that picks the best checkpoint: micro_f1, macro_f1 or accuracy
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"relation extraction selects on {', '.join(METRICS)}, not {self.metric!r}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"relation labels repeat: {self.labels}")
        self.label_ids = {name: i for i, name in enumerate(self.labels)}

    @classmethod
    def read(cls, path: Path, fields: Fields, *, labelled: bool = True) -> list[RelationExample]:
        return read_relations(path, labelled=labelled, encoding=fields.encoding)

    @classmethod
    def for_data(cls, splits: Splits, files: dict[str, Path], tokenizer: TextTokenizer, options: Any, *,
                 metric: str, fields: Fields) -> RelationExtraction:
        labels = labels_from(splits["train"])
        if len(labels) < 2:
            raise DataError(files["train"], f"training data has {len(labels)} distinct relation(s); need at least 2",
                            field="relation")
        task = cls(labels, tokenizer.pad_id, metric=metric or "micro_f1")
        for split in ("dev", "test"):
            if split in splits:
                task.check(files[split], splits[split], fields)
        return task

    def check(self, path: Path, examples: Sequence[Any], fields: Fields) -> None:
        check_relations(path, examples, self.labels)

    @classmethod
    def parse_input(cls, value: str | dict[str, Any], fields: Fields, line: int = 0) -> RelationExample:
        if not isinstance(value, dict):
            raise ValueError("a relation model reads objects with text, head and tail spans (the JSONL format of "
                             "its training files), not bare texts")
        return relation_example(Path("<input>"), line, value, labelled=value.get("relation") is not None)

    @classmethod
    def from_spec(cls, spec: HeadSpec, pad_id: int) -> RelationExtraction:
        labels = [str(name) for name in spec.settings["labels"]]
        return cls(labels, pad_id, no_relation=str(spec.settings.get("no_relation", NO_RELATION)))

    def head_spec(self) -> HeadSpec:
        return HeadSpec("relate", self.name, {"n_labels": len(self.labels), "labels": list(self.labels),
                                              "no_relation": self.no_relation})

    def encode(self, tokenizer: TextTokenizer, examples: Sequence[RelationExample], max_len: int) -> list[Encoded]:
        missing = missing_markers(tokenizer)
        if missing:
            warnings.warn(f"the tokenizer has no token for the entity marker(s) {' '.join(missing)}: they become "
                          "its unknown token (train the tokenizer on text that holds them)", stacklevel=2)
        items = []
        for ex, enc in zip(examples, mark_and_tokenize(tokenizer, examples, max_len), strict=True):
            if ex.relation is not None and ex.relation not in self.label_ids:
                raise ValueError(f"relation {ex.relation!r} (line {ex.line}) is not one of {self.labels}")
            label = -1 if ex.relation is None else self.label_ids[ex.relation]
            items.append(Encoded(enc.ids, enc.markers, label))
        return items

    def collate(self, items: Sequence[Encoded], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        ids, padding_mask = pad([it.ids for it in items], self.pad_id)  # (B, T) each
        return {"input_ids": ids, "padding_mask": padding_mask,
                "markers": torch.tensor([it.markers for it in items], dtype=torch.long),  # (B, 2)
                "labels": torch.tensor([it.label for it in items], dtype=torch.long)}  # (B,)

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["labels"].shape[0])

    def logits(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = model(batch["input_ids"], batch.get("padding_mask"))  # (B, T, D)
        return model.heads[self.head](hidden, batch["markers"])  # (B, C)

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch).float(), batch["labels"], reduction="sum")

    def new_metrics(self) -> RelationMetrics:
        return RelationMetrics(self)

    def predict(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[RelationExample], *, max_len: int,
                batch_size: int = 64, progress: bool = False) -> list[dict[str, Any]]:
        """One JSON-ready record per example: the pair, the gold relation (None when unlabelled) and the
        predicted one with its probability."""
        return [{"id": ex.id, "text": ex.text, "head": ex.head_text, "tail": ex.tail_text, "gold": ex.relation,
                 "predicted": p["relation"], "score": p["score"]}
                for ex, p in zip(examples, self.relations(model, tokenizer, examples, max_len, batch_size=batch_size),
                                 strict=True)]

    @staticmethod
    def baseline(splits: Splits, files: dict[str, Path]) -> dict[str, Any]:
        from lmcraft.tasks.relate.baseline import relation_baseline

        result = relation_baseline(splits["train"], splits["dev"], splits["test"])
        return {"name": "TF-IDF of the marked text + logistic regression", "test": result["test"]}

    @torch.inference_mode()
    def relations(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[RelationExample], max_len: int,
                  *, batch_size: int = 64) -> list[dict[str, object]]:
        """{"relation", "score"} for each example, in order; the score is the relation's probability.
        Examples are batched by length, so that a batch pads little."""
        was_training = model.training
        model.eval()
        items = self.encode(tokenizer, examples, max_len)
        order = sorted(range(len(items)), key=lambda i: len(items[i].ids))
        out: list[dict[str, object]] = [{} for _ in items]
        for first in range(0, len(order), batch_size):
            rows = order[first : first + batch_size]
            probs = self.logits(model, self.collate([items[i] for i in rows])).float().softmax(-1)  # (B, C)
            score, best = probs.max(-1)
            for i, s, b in zip(rows, score.tolist(), best.tolist(), strict=True):
                out[i] = {"relation": self.labels[b], "score": round(s, 5)}
        model.train(was_training)
        return out


# --------------------------------------------------------------------------------------------- metrics


def relation_scores(confusion: np.ndarray, labels: Sequence[str], no_relation: str = NO_RELATION) -> dict[str, float]:
    """Metrics from a confusion matrix (rows: gold, columns: predicted).

    micro_precision / micro_recall / micro_f1 follow TACRED: only relations other than ``no_relation``
    count, so a predicted ``no_relation`` is not a prediction and a gold ``no_relation`` not a relation to
    find (equal to scikit-learn's micro average restricted to those labels). accuracy and macro_f1 (the mean
    F1 of all labels, ``no_relation`` included; 0 for a label never seen nor predicted) count every label.
    """
    c = np.asarray(confusion, dtype=np.int64)
    total = int(c.sum())
    related = [i for i, name in enumerate(labels) if name != no_relation]
    correct = int(c[related, related].sum())
    predicted = int(c[:, related].sum())
    gold = int(c[related, :].sum())
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    micro_f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    tp = np.diag(c).astype(np.float64)
    per_p = np.divide(tp, c.sum(0), out=np.zeros_like(tp), where=c.sum(0) > 0)
    per_r = np.divide(tp, c.sum(1), out=np.zeros_like(tp), where=c.sum(1) > 0)
    per_f1 = np.divide(2 * per_p * per_r, per_p + per_r, out=np.zeros_like(tp), where=per_p + per_r > 0)
    return {"micro_precision": precision, "micro_recall": recall, "micro_f1": micro_f1,
            "accuracy": float(tp.sum() / total) if total else 0.0,
            "macro_f1": float(per_f1.mean()) if len(labels) else 0.0}


class RelationMetrics(ClassifyMetrics):
    """A confusion matrix accumulated batch by batch, as for classification; scored the TACRED way."""

    def compute(self) -> dict[str, float]:
        scores = relation_scores(self.confusion.numpy(), self.task.labels, self.task.no_relation)
        return {**scores, "loss": self.loss / max(int(self.confusion.sum()), 1)}
