"""Extractive question answering (SQuAD v1.1 / v2.0, CMRC 2018): a start and an end logit at every token.

Windows. A question and its context are encoded as a pair, "[CLS] question [SEP] context [SEP]", by the
tokenizer's own pair template (so the segment ids are the template's). A context longer than the window is
cut into overlapping windows that each repeat the question; neighbours share ``doc_stride`` context tokens,
so that an answer near a cut lies whole in one of them (BERT's SQuAD recipe, Devlin et al. 2019). Every
token keeps its character span in the *original* context: the tokenizers library maps offsets back through
its normalizers, so after NFKC has turned "１９９７" into "1997" the spans still cover the full-width digits.
Byte-level BPE spans include the space before a word ("Ġis" is " is"), split a multi-byte character into
tokens that share its span, and have whitespace-only tokens; spans are therefore trimmed of whitespace, and
a whitespace-only token is never the first or last token of an answer.

Targets: the first and last token of the answer in a window that holds it whole; otherwise 0, the [CLS]
position, meaning "no answer in this window" (the SQuAD 2.0 convention). The loss is (cross-entropy of the
start + cross-entropy of the end) / 2 per window, over [CLS] and the context tokens only.

Decoding: in a window, a span (i, j) of context tokens with i <= j < i + max_answer_tokens scores
start[i] + end[j], and "no answer" scores start[0] + end[0]. All such spans are scored (B × T ×
max_answer_tokens sums, cheap), so the best one is found exactly rather than from the top-n starts × top-n
ends. A question takes the best span over its windows, and no answer (v2) when that window's null score
beats it. The answer is the context's own text between the span's character offsets.

Windows → examples: ``encode`` registers the examples and windows on the task, and each batch carries every
window's registry index as ``feature_index``, so that the metrics can collect the windows of a question
from any batch, in any order. Under torchrun every process encodes the same data in the same order (as
fine-tuning does), so the registries agree, and each process's per-window results are summed into one table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from lmcraft.data.batching import pad
from lmcraft.data.errors import DataError
from lmcraft.data.readers import Fields
from lmcraft.data.squad import QAExample, read_squad
from lmcraft.metrics.qa import score_answers
from lmcraft.model.heads import Model
from lmcraft.tasks.contract import HeadSpec, Splits, Task
from lmcraft.tasks.qa.options import QAOptions
from lmcraft.tasks.qa.windows import Window, make_windows
from lmcraft.tokenizer import TextTokenizer

METRICS = ("f1", "exact_match")


# --- decoding ---------------------------------------------------------------------------------------------


def top_spans(start: torch.Tensor, end: torch.Tensor, candidates: torch.Tensor, max_answer_tokens: int,
              k: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` best spans of every row, best first: scores (B, k), first tokens (B, k), last tokens (B, k).

    Args:
        start, end: logits (B, T).
        candidates: (B, T) bool, True at tokens that may begin or end an answer (the context's, not
            whitespace); it must be contiguous apart from whitespace, as a window's context is.
        max_answer_tokens: the longest span, in tokens.

    A span (i, j) is valid when both ends are candidates, i <= j and j - i < max_answer_tokens; rows with
    fewer than k valid spans fill up with score -inf.
    """
    b, t = start.shape
    width = min(max_answer_tokens, t)
    s = start.float().masked_fill(~candidates, -math.inf)  # (B, T)
    e = end.float().masked_fill(~candidates, -math.inf)  # (B, T)
    e_ahead = F.pad(e, (0, width - 1), value=-math.inf).unfold(1, width, 1)  # (B, T, W): [b, i, d] = e[b, i + d]
    scores = (s[:, :, None] + e_ahead).reshape(b, t * width)  # (B, T·W): span (i, i + d) sits at i·W + d
    top, at = scores.topk(min(k, t * width), dim=1)  # (B, k)
    first = torch.div(at, width, rounding_mode="floor")
    return top, first, first + at % width


@dataclass
class Answer:
    """The decision for one question."""

    text: str  # "" for no answer
    start: int  # character offsets into the context; -1 for no answer
    end: int
    margin: float  # best span score minus its window's null score (above 0: the model prefers the span)


def choose(best: tuple[float, int, int, float] | None, context: str, null_answers: bool) -> Answer:
    """``best``: (span score, first char, end char, null score) of the question's best window."""
    if best is None or not math.isfinite(best[0]):
        return Answer("", -1, -1, -math.inf)
    score, c0, c1, null = best
    if null_answers and null > score:
        return Answer("", -1, -1, score - null)
    return Answer(context[c0:c1], c0, c1, score - null)


# --- the task ---------------------------------------------------------------------------------------------


@dataclass
class ExtractiveQA(Task):
    """The extractive QA task: windows, batches, loss, metrics and decoding."""

    name: ClassVar[str] = "qa"
    description: ClassVar[str] = "extractive question answering (SQuAD 1.1 / 2.0, CMRC 2018 JSON)"
    extensions: ClassVar[tuple[str, ...]] = (".json",)
    summary_metrics: ClassVar[tuple[str, ...]] = ("exact_match", "f1")
    Options: ClassVar[type] = QAOptions
    options_section: ClassVar[str] = "qa"
    head_kinds: ClassVar[tuple[str, ...]] = ("span",)
    shares_batches: ClassVar[bool] = False  # its metrics find questions through the windows encode registered

    pad_id: int
    max_answer_tokens: int = 30  # the longest answer, in tokens
    doc_stride: int = 64  # context tokens that neighbouring windows share
    n_best: int = 20  # candidate answers that predict lists per question
    null_answers: bool = True  # v2: answer nothing when the null score wins; False always answers (v1.1, CMRC)
    head: str = "qa"
    metric: str = "f1"  # dev metric that picks the best checkpoint: f1 or exact_match
    greater_is_better: bool = True
    # The registry (see the module's docstring): every example and window that encode has made.
    examples: list[QAExample] = field(default_factory=list, init=False, repr=False, compare=False)
    windows: list[Window] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"question answering selects on {' or '.join(map(repr, METRICS))}, not {self.metric!r}")
        for name in ("max_answer_tokens", "n_best"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.doc_stride < 0:
            raise ValueError(f"doc_stride must be 0 or more, got {self.doc_stride}")

    @classmethod
    def read(cls, path: Path, fields: Fields, *, labelled: bool = True) -> list[QAExample]:
        return read_squad(path, labelled=labelled, encoding=fields.encoding)

    @classmethod
    def texts(cls, examples: Sequence[QAExample]) -> list[str]:
        return [t for ex in examples for t in (ex.question, ex.context)]

    @classmethod
    def for_data(cls, splits: Splits, files: dict[str, Path], tokenizer: TextTokenizer, options: QAOptions, *,
                 metric: str, fields: Fields) -> ExtractiveQA:
        # Unanswerable questions in training (SQuAD 2.0 style) teach the model to abstain; without them it always
        # answers (SQuAD 1.1, CMRC 2018).
        null_answers = any(ex.is_impossible for ex in splits["train"])
        return cls(tokenizer.pad_id, max_answer_tokens=options.max_answer_tokens, doc_stride=options.doc_stride,
                   null_answers=null_answers, metric=metric or "f1")

    @classmethod
    def parse_input(cls, value: str | dict[str, Any], fields: Fields, line: int = 0) -> QAExample:
        question = value.get("question") if isinstance(value, dict) else None
        context = value.get("context") if isinstance(value, dict) else None
        if not isinstance(question, str) or not isinstance(context, str):
            raise DataError(Path("<input>"), "a QA model reads objects with a question and a context (strings)",
                            line=line, field="question" if not isinstance(question, str) else "context")
        return QAExample(str(value.get("id", line)), question, context, (), line=line)

    @classmethod
    def from_spec(cls, spec: HeadSpec, pad_id: int) -> ExtractiveQA:
        return cls(pad_id=pad_id, max_answer_tokens=int(spec.settings["max_answer_tokens"]),
                   doc_stride=int(spec.settings["doc_stride"]),
                   null_answers=bool(spec.settings.get("null_answers", True)))

    def head_spec(self) -> HeadSpec:
        return HeadSpec("span", self.name, {"max_answer_tokens": self.max_answer_tokens,
                                            "doc_stride": self.doc_stride, "null_answers": self.null_answers})

    def encode(self, tokenizer: TextTokenizer, examples: Sequence[QAExample], max_len: int) -> list[Window]:
        """The windows of all examples, registered on the task so that the metrics can find them."""
        items = []
        for ex, windows in zip(examples, make_windows(tokenizer, examples, max_len, self.doc_stride), strict=True):
            self.examples.append(ex)
            for window in windows:
                window.example, window.index = len(self.examples) - 1, len(self.windows)
                self.windows.append(window)
                items.append(window)
        return items

    def collate(self, items: Sequence[Window], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        ids, padding_mask = pad([w.ids for w in items], self.pad_id)  # (B, T) each
        segment_ids, _ = pad([w.segment_ids for w in items], 0)  # (B, T)
        context_mask = torch.zeros(ids.shape, dtype=torch.bool)  # (B, T): tokens that may start or end an answer
        for row, w in enumerate(items):
            context_mask[row, : len(w.ids)] = torch.from_numpy(w.spans[:, 0] >= 0)
        return {"input_ids": ids, "padding_mask": padding_mask, "segment_ids": segment_ids,
                "context_mask": context_mask,
                "start_positions": torch.tensor([w.start for w in items], dtype=torch.long),
                "end_positions": torch.tensor([w.end for w in items], dtype=torch.long),
                "feature_index": torch.tensor([w.index for w in items], dtype=torch.long)}

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].shape[0])

    def logits(self, model: Model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits (B, T) each, in float32, -inf everywhere but at [CLS] and the context."""
        hidden = model(batch["input_ids"], batch["padding_mask"], batch["segment_ids"])  # (B, T, D)
        start, end = model.heads[self.head](hidden)  # (B, T) each
        allowed = batch["context_mask"].clone()
        allowed[:, 0] = True  # the first token ([CLS]) stands for "no answer here"
        return start.float().masked_fill(~allowed, -math.inf), end.float().masked_fill(~allowed, -math.inf)

    def _losses(self, start: torch.Tensor, end: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (F.cross_entropy(start, batch["start_positions"], reduction="none")
                + F.cross_entropy(end, batch["end_positions"], reduction="none")) / 2  # (B,)

    def loss_sum(self, model: Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._losses(*self.logits(model, batch), batch).sum()

    def new_metrics(self) -> QAMetrics:
        return QAMetrics(self)

    def predict(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[QAExample], *, max_len: int,
                batch_size: int = 64, progress: bool = False) -> list[dict[str, Any]]:
        """One JSON-ready record per question: the question, the gold answers, the predicted one with its start
        and end in the context, its score and the other candidates."""
        return [{"id": ex.id, "question": ex.question, "gold": [text for text, _ in ex.answers],
                 "predicted": p["answer"], "start": p["start"], "end": p["end"], "score": p["score"],
                 "n_best": p["n_best"]}
                for ex, p in zip(examples, self.answers(model, tokenizer, examples, max_len, batch_size=batch_size),
                                 strict=True)]

    @staticmethod
    def baseline(splits: Splits, files: dict[str, Path]) -> dict[str, Any]:
        from lmcraft.tasks.qa.baseline import qa_baseline

        return {"name": "the context sentence sharing the most question words", "test": qa_baseline(splits["test"])}

    @torch.inference_mode()
    def answers(self, model: Model, tokenizer: TextTokenizer, examples: Sequence[QAExample], max_len: int, *,
                batch_size: int = 64) -> list[dict[str, Any]]:
        """One dict per example: id, answer ("" for none), start and end (character offsets into the
        context, -1 for none), score (best span score minus its window's null score) and n_best (up to
        ``n_best`` distinct candidate spans, best first, each with answer, start, end and score)."""
        model.eval()
        device = next(model.parameters()).device
        windows = [w for per in make_windows(tokenizer, examples, max_len, self.doc_stride) for w in per]
        best: dict[int, tuple[float, int, int, float]] = {}  # example -> (score, c0, c1, null) of its best span
        spans: dict[int, dict[tuple[int, int], float]] = defaultdict(dict)  # example -> span -> best margin
        for first in range(0, len(windows), batch_size):
            chunk = windows[first : first + batch_size]
            batch = {k: v.to(device) for k, v in self.collate(chunk).items()}
            start, end = self.logits(model, batch)
            scores, firsts, lasts = (x.cpu() for x in top_spans(start, end, batch["context_mask"],
                                                                 self.max_answer_tokens, self.n_best))
            nulls = (start[:, 0] + end[:, 0]).cpu()
            for row, w in enumerate(chunk):
                null = float(nulls[row])
                for score, i, j in zip(scores[row].tolist(), firsts[row].tolist(), lasts[row].tolist(), strict=True):
                    if not math.isfinite(score):
                        break
                    key = (int(w.spans[i, 0]), int(w.spans[j, 1]))
                    spans[w.example][key] = max(spans[w.example].get(key, -math.inf), score - null)
                    if w.example not in best or score > best[w.example][0]:
                        best[w.example] = (score, *key, null)
        out = []
        for k, ex in enumerate(examples):
            answer = choose(best.get(k), ex.context, self.null_answers)
            ranked = sorted(spans[k].items(), key=lambda item: -item[1])[: self.n_best]
            out.append({"id": ex.id, "answer": answer.text, "start": answer.start, "end": answer.end,
                        "score": answer.margin,
                        "n_best": [{"answer": ex.context[c0:c1], "start": c0, "end": c1, "score": margin}
                                   for (c0, c1), margin in ranked]})
        return out


class QAMetrics:
    """Keeps, per window, its best span and null score; decides per question in ``compute``."""

    def __init__(self, task: ExtractiveQA) -> None:
        self.task = task
        self.rows: dict[int, tuple[float, ...]] = {}  # window index -> (span score, c0, c1, null score, loss)

    @torch.no_grad()
    def update(self, model: Model, batch: dict[str, torch.Tensor]) -> None:
        index = batch["feature_index"].tolist()
        if min(index) < 0:
            raise ValueError("these windows were not made by ExtractiveQA.encode on this task, so their questions "
                             "cannot be found; evaluate the items that encode returned")
        start, end = self.task.logits(model, batch)
        losses = self.task._losses(start, end, batch).cpu()
        scores, firsts, lasts = (x[:, 0].tolist() for x in top_spans(start, end, batch["context_mask"],
                                                                      self.task.max_answer_tokens))
        nulls = (start[:, 0] + end[:, 0]).cpu()
        for row, k in enumerate(index):
            spans = self.task.windows[k].spans
            score = scores[row]
            c0, c1 = (int(spans[firsts[row], 0]), int(spans[lasts[row], 1])) if math.isfinite(score) else (-1, -1)
            self.rows[k] = (score, c0, c1, float(nulls[row]), float(losses[row]))

    def reduce(self, sum_tensor: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Merge the processes' windows. Each window was evaluated by exactly one process, so a table with a
        row per registered window, zero where this process did not look, sums to everyone's results."""
        table = torch.zeros(len(self.task.windows), 6, dtype=torch.float64)  # seen, score, c0, c1, null, loss
        if self.rows:
            at = torch.tensor(list(self.rows))
            table[at, 0] = 1
            table[at, 1:] = torch.tensor(list(self.rows.values()), dtype=torch.float64)
        table = sum_tensor(table)
        seen = torch.nonzero(table[:, 0] > 0).flatten().tolist()
        self.rows = {k: tuple(table[k, 1:].tolist()) for k in seen}

    def predictions(self) -> dict[int, Answer]:
        """The answer to every question with an evaluated window, by the question's registry index."""
        best: dict[int, tuple[float, int, int, float]] = {}
        for k, (score, c0, c1, null, _) in self.rows.items():
            example = self.task.windows[k].example
            if example not in best or score > best[example][0]:
                best[example] = (score, int(c0), int(c1), null)
        return {e: choose(b, self.task.examples[e].context, self.task.null_answers) for e, b in best.items()}

    def compute(self) -> dict[str, float]:
        answers = self.predictions()
        examples = [self.task.examples[e] for e in sorted(answers)]
        metrics = score_answers(examples, {self.task.examples[e].id: a.text for e, a in answers.items()})
        metrics["loss"] = sum(row[4] for row in self.rows.values()) / max(len(self.rows), 1)
        return metrics
