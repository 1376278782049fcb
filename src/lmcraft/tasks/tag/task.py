"""Token classification (named-entity recognition): one tag per word, entities scored whole.

Words (``data/ner.py``) are tokenized one by one, so each sub-token knows its word. A word's tag sits on its
first sub-token; with ``label_all`` its other sub-tokens learn the matching I- tag too (BIO only), but
decoding always reads the first. With ``crf`` a linear-chain CRF over the words' scores replaces the
per-word softmax: its loss is the sequence's negative log-likelihood and its decoding Viterbi.

A sentence longer than the model's input is cut into pieces at word boundaries, never inside a word;
prediction joins the pieces again, so spans come back in the coordinates of the original text.
Metrics are seqeval's entity-level precision, recall and F1 (an entity counts when its type and both edges
are right), accumulated as counts batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from seqeval.metrics.sequence_labeling import get_entities

from lmcraft.data.batching import pad
from lmcraft.data.errors import DataError
from lmcraft.data.ner import SCHEMES, TaggedExample, label_set, read_tagged, spans_from_tags, split_words, tags_for
from lmcraft.data.readers import Fields
from lmcraft.metrics.entities import precision_recall_f1
from lmcraft.model.heads import Model
from lmcraft.model.ngrams import NGRAM_LR
from lmcraft.tasks.contract import HeadSpec, Splits, Task, labelled_text, streaming_metrics
from lmcraft.tasks.tag.options import TagOptions
from lmcraft.tokenizer import TextTokenizer

IGNORE = -100


@dataclass
class TagItem:
    """One piece of a sentence, tokenized."""

    ids: list[int]  # [CLS] sub-tokens [SEP]
    first_token: list[int]  # (W,) token index of each word's first sub-token (words without tokens left out)
    word_labels: list[int]  # (W,) tag id of each of those words; IGNORE when unlabelled
    token_labels: list[int]  # (T,) tag id per token for the label_all loss; IGNORE elsewhere
    example: int  # index of the sentence among those encoded together
    words: list[int]  # (W,) index of each word within its sentence


@dataclass
class Tag(Task):
    """The tagging task: encoding, batches, loss, metrics and decoding."""

    name: ClassVar[str] = "tag"
    description: ClassVar[str] = "named-entity recognition / token classification"
    extensions: ClassVar[tuple[str, ...]] = (".jsonl", ".json", ".conll", ".bio", ".txt")
    summary_metrics: ClassVar[tuple[str, ...]] = ("precision", "recall", "f1")
    Options: ClassVar[type] = TagOptions
    options_section: ClassVar[str] = "tag"
    head_kinds: ClassVar[tuple[str, ...]] = ("tag",)

    labels: list[str]  # tag names, "O" first; the order of the head's outputs
    pad_id: int
    scheme: str = "BIO"
    crf: bool = False
    label_all: bool = False  # also put the loss on a word's later sub-tokens
    ngrams: int = 0  # hash buckets of the head's token n-gram table (model/ngrams.py); 0: no n-gram features
    ngram_lr: float = NGRAM_LR  # the table's SGD learning rate (train/optim.py)
    head: str = "tag"
    metric: str = "f1"  # entity-level micro F1 on dev selects the best checkpoint
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"tag scheme must be one of {', '.join(SCHEMES)}, not {self.scheme!r}")
        if self.ngrams < 0:
            raise ValueError(f"tag ngrams is a number of hash buckets (0 for none), not {self.ngrams}")
        if self.ngram_lr <= 0:
            raise ValueError(f"tag ngram_lr is the n-gram table's SGD learning rate, > 0, not {self.ngram_lr}")
        if self.label_all and self.scheme != "BIO":
            raise ValueError("label_all (loss on every sub-token) works with the BIO scheme only")
        self.label_ids = {name: i for i, name in enumerate(self.labels)}

    @classmethod
    def for_examples(cls, examples: Sequence[TaggedExample], pad_id: int, **options: object) -> Tag:
        types = sorted({label for ex in examples for _, _, label in ex.entities})
        scheme = str(options.get("scheme", "BIO"))
        return cls(label_set(scheme, types), pad_id, **options)  # type: ignore[arg-type]

    @classmethod
    def read(cls, path: Path, fields: Fields, *, labelled: bool = True) -> list[TaggedExample]:
        return read_tagged(path, fields.encoding)

    @classmethod
    def for_data(cls, splits: Splits, files: dict[str, Path], tokenizer: TextTokenizer, options: TagOptions, *,
                 metric: str, fields: Fields) -> Tag:
        if metric not in ("", "f1"):
            raise ValueError(f"tagging selects on entity-level 'f1', not {metric!r}")
        task = cls.for_examples(splits["train"], tokenizer.pad_id, scheme=options.scheme, crf=options.crf,
                                label_all=options.label_all, ngrams=options.ngrams,
                                ngram_lr=options.ngram_lr)
        if not task.types:
            raise DataError(files["train"], "the training data holds no entities", field="entities")
        for split in ("dev", "test"):
            if split in splits:
                task.check(files[split], splits[split], fields)
        return task

    def check(self, path: Path, examples: Sequence[Any], fields: Fields) -> None:
        for ex in examples:
            unseen = sorted({label for *_, label in ex.entities} - set(self.types))
            if unseen:
                raise DataError(path, f"entity type(s) {unseen} never occur in the training data (known: "
                                      f"{self.types})", line=ex.line, field="entities")

    @classmethod
    def parse_input(cls, value: str | dict[str, Any], fields: Fields, line: int = 0) -> TaggedExample:
        text = labelled_text(value, fields.text_field)
        return TaggedExample(text, split_words(text), (), line=line, meta={"labelled": False})

    @classmethod
    def from_spec(cls, spec: HeadSpec, pad_id: int) -> Tag:
        return cls(list(spec.settings["labels"]), pad_id, scheme=str(spec.settings.get("scheme", "BIO")),
                   crf=bool(spec.settings.get("crf", False)), ngrams=int(spec.settings.get("ngrams", 0)),
                   ngram_lr=float(spec.settings.get("ngram_lr", NGRAM_LR)))

    def head_spec(self) -> HeadSpec:
        return HeadSpec("tag", self.name, {"n_labels": len(self.labels), "labels": list(self.labels),
                                           "scheme": self.scheme, "crf": self.crf, "ngrams": self.ngrams,
                                           "ngram_lr": self.ngram_lr})

    @property
    def types(self) -> list[str]:
        return sorted({name[2:] for name in self.labels if name != "O"})

    # -- examples -> tensors ----------------------------------------------------------------------------

    def encode(self, tokenizer: TextTokenizer, examples: Sequence[TaggedExample], max_len: int) -> list[TagItem]:
        room = max_len - 2  # [CLS] and [SEP]
        word_texts = [[ex.text[s:e] for s, e in ex.words] for ex in examples]
        encodings = tokenizer.tokenizer.encode_batch(word_texts, is_pretokenized=True, add_special_tokens=False)
        items = []
        for k, (ex, enc) in enumerate(zip(examples, encodings, strict=True)):
            tags = tags_for(ex, self.scheme) if ex.entities or ex.meta.get("labelled", True) else None
            pieces: list[list[int]] = [[] for _ in ex.words]  # sub-token ids of every word
            for token_id, word in zip(enc.ids, enc.word_ids, strict=True):
                if word is not None:
                    pieces[word].append(token_id)
            items.extend(self._pieces(pieces, tags, k, tokenizer, room))
        return items

    def _pieces(self, pieces: list[list[int]], tags: list[str] | None, example: int, tokenizer: TextTokenizer,
                room: int) -> list[TagItem]:
        """Cut one sentence into items of at most ``room`` sub-tokens, at word boundaries."""
        items: list[TagItem] = []
        item = self._new_item(tokenizer, example)
        for w, word_pieces in enumerate(pieces):
            word_pieces = word_pieces[:room]  # one absurdly long "word" cannot overflow the input
            if not word_pieces:
                continue  # normalised away (a control character): it gets no tag, "O" when predicting
            if len(item.ids) - 1 + len(word_pieces) > room:
                items.append(self._close(item, tokenizer))
                item = self._new_item(tokenizer, example)
            label = self.label_ids[tags[w]] if tags is not None else IGNORE
            item.first_token.append(len(item.ids))
            item.word_labels.append(label)
            item.words.append(w)
            inner = self.label_ids[tags[w].replace("B-", "I-", 1)] if tags is not None and self.label_all else IGNORE
            item.token_labels.extend([label] + [inner] * (len(word_pieces) - 1))
            item.ids.extend(word_pieces)
        items.append(self._close(item, tokenizer))
        return items

    @staticmethod
    def _new_item(tokenizer: TextTokenizer, example: int) -> TagItem:
        return TagItem([tokenizer.cls_id], [], [], [IGNORE], example, [])

    @staticmethod
    def _close(item: TagItem, tokenizer: TextTokenizer) -> TagItem:
        item.ids.append(tokenizer.sep_id)
        item.token_labels.append(IGNORE)
        return item

    def collate(self, items: Sequence[TagItem], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        ids, padding_mask = pad([it.ids for it in items], self.pad_id)  # (B, T)
        first, word_mask = pad([it.first_token or [0] for it in items], 0)  # (B, W)
        has_words = torch.tensor([[bool(it.first_token)] for it in items])  # (B, 1): a piece may hold no word
        word_mask = word_mask.bool() & has_words
        labels, _ = pad([it.word_labels or [IGNORE] for it in items], IGNORE)  # (B, W)
        token_labels, _ = pad([it.token_labels for it in items], IGNORE)  # (B, T)
        return {"input_ids": ids, "padding_mask": padding_mask, "first_token": first, "word_mask": word_mask,
                "word_labels": labels, "token_labels": token_labels}

    # -- loss ----------------------------------------------------------------------------------------------

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        if self.label_all and not self.crf:
            return int((batch["token_labels"] != IGNORE).sum())
        return int((batch["word_labels"] != IGNORE).sum())

    def emissions(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tag scores at every token, (B, T, C)."""
        hidden = model(batch["input_ids"], batch.get("padding_mask"))  # (B, T, D)
        return model.heads[self.head](hidden, batch["input_ids"])

    @staticmethod
    def word_scores(emissions: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each word's scores, read at its first sub-token: (B, T, C) -> (B, W, C)."""
        index = batch["first_token"][:, :, None].expand(-1, -1, emissions.shape[-1])  # (B, W, C)
        return emissions.gather(1, index)

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_from_emissions(model, self.emissions(model, batch).float(), batch)

    def loss_from_emissions(self, model: Model, emissions: torch.Tensor,
                            batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The summed loss given the tag scores at every token, (B, T, C)."""
        if self.crf:
            crf = model.heads[self.head].crf
            words = self.word_scores(emissions, batch)  # (B, W, C)
            keep = batch["word_mask"].any(1)  # pieces with at least one word
            labelled = batch["word_labels"].masked_fill(batch["word_labels"] == IGNORE, 0)
            return crf.nll(words[keep], labelled[keep], batch["word_mask"][keep]).sum()
        if self.label_all:
            return F.cross_entropy(emissions.flatten(0, 1), batch["token_labels"].flatten(), reduction="sum")
        words = self.word_scores(emissions, batch)
        return F.cross_entropy(words.flatten(0, 1), batch["word_labels"].flatten(), reduction="sum")

    # -- decoding ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, model: Model, batch: dict[str, torch.Tensor]) -> tuple[list[list[int]], torch.Tensor]:
        """The tag ids of every piece's words, and the token-level emissions (B, T, C)."""
        emissions = self.emissions(model, batch).float()
        words = self.word_scores(emissions, batch)  # (B, W, C)
        mask = batch["word_mask"]
        lengths = mask.sum(1).tolist()
        crf = model.heads[self.head].crf
        if crf is not None and mask.any():
            keep = mask.any(1)
            decoded = iter(crf.decode(words[keep], mask[keep]))
            return [next(decoded) if n else [] for n in lengths], emissions
        best = words.argmax(-1).tolist()
        return [row[:n] for row, n in zip(best, lengths, strict=True)], emissions

    def new_metrics(self) -> TagMetrics:
        return TagMetrics(self)

    def predict(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[TaggedExample], *, max_len: int,
                batch_size: int = 64, progress: bool = False) -> list[dict[str, Any]]:
        """{"text", "entities"} per example; entities as character spans of the text."""
        found = self.entities(model, tokenizer, [ex.text for ex in examples], max_len, batch_size)
        return [{"text": ex.text, "entities": entities} for ex, entities in zip(examples, found, strict=True)]

    @torch.no_grad()
    def entities(self, model: Model, tokenizer: TextTokenizer, texts: Sequence[str], max_len: int,
                 batch_size: int = 64) -> list[list[dict[str, object]]]:
        """Entities of raw texts, as character spans: ``[{"start", "end", "label", "text"}, ...]`` per text."""
        examples = [TaggedExample(t, split_words(t), (), meta={"labelled": False}) for t in texts]
        items = self.encode(tokenizer, examples, max_len)
        tags: list[list[str]] = [["O"] * len(ex.words) for ex in examples]
        was_training = model.training
        model.eval()
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            paths, _ = self.decode(model, self.collate(chunk))
            for item, path in zip(chunk, paths, strict=True):
                for w, tag_id in zip(item.words, path, strict=True):
                    tags[item.example][w] = self.labels[tag_id]
        model.train(was_training)
        out = []
        for ex, ex_tags in zip(examples, tags, strict=True):
            spans = spans_from_tags(ex.words, ex_tags)
            out.append([{"start": s, "end": e, "label": t, "text": ex.text[s:e]} for s, e, t in spans])
        return out

    def test_report(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[TaggedExample], *,
                    max_len: int, batch_size: int = 64,
                    progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Entity-level precision / recall / F1 per type; a record per example with its gold entities and the
        predicted ones."""
        metrics = streaming_metrics(self, model, self.encode(tokenizer, examples, max_len), batch_size)
        predicted = self.entities(model, tokenizer, [ex.text for ex in examples], max_len, batch_size)
        records = [{"text": ex.text, "gold": [{"start": s, "end": e, "label": t} for s, e, t in ex.entities],
                    "predicted": entities} for ex, entities in zip(examples, predicted, strict=True)]
        return {**metrics, "n": len(examples)}, records

    @staticmethod
    def baseline(splits: Splits, files: dict[str, Path]) -> dict[str, Any]:
        from lmcraft.tasks.tag.baseline import crf_baseline

        return {"name": "CRF over character features (CRFsuite, BIOES tags)",
                "test": crf_baseline(splits["train"], splits["test"])["test"]}


class TagMetrics:
    """Entity counts per type (true positives, predicted, gold), accumulated batch by batch."""

    def __init__(self, task: Tag) -> None:
        self.task = task
        self.types = task.types
        self.counts = torch.zeros(len(self.types), 3, dtype=torch.float64)  # (types, [tp, predicted, gold])
        self.loss = 0.0
        self.words = 0

    @torch.no_grad()
    def update(self, model: Model, batch: dict[str, torch.Tensor]) -> None:
        paths, emissions = self.task.decode(model, batch)
        self.loss += float(self.task.loss_from_emissions(model, emissions, batch))
        self.words += self.task.n_targets(batch)
        names = self.task.labels
        index = {t: i for i, t in enumerate(self.types)}
        for path, gold_row, n in zip(paths, batch["word_labels"].tolist(), batch["word_mask"].sum(1).tolist(),
                                     strict=True):
            gold = {(t, s, e) for t, s, e in get_entities([names[g] if g != IGNORE else "O" for g in gold_row[:n]])}
            pred = {(t, s, e) for t, s, e in get_entities([names[p] for p in path])}
            for t, *_ in gold & pred:
                self.counts[index[t], 0] += 1
            for t, *_ in pred:
                self.counts[index[t], 1] += 1
            for t, *_ in gold:
                self.counts[index[t], 2] += 1

    def reduce(self, sum_tensor: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the counts of all processes (each evaluated its own share of the data)."""
        self.counts = sum_tensor(self.counts)
        self.loss, self.words = (float(x) for x in sum_tensor(torch.tensor([self.loss, self.words],
                                                                           dtype=torch.float64)))

    def compute(self) -> dict[str, float]:
        tp, predicted, gold = self.counts.sum(0).tolist()
        out = {**precision_recall_f1(tp, predicted, gold), "loss": self.loss / max(self.words, 1)}
        for t, (tp_t, pred_t, gold_t) in zip(self.types, self.counts.tolist(), strict=True):
            out[f"f1_{t}"] = precision_recall_f1(tp_t, pred_t, gold_t)["f1"]
        return out
