"""Windows of a long context: a question and its context encoded as a pair, cut into overlapping windows
that each repeat the question, every token keeping its character span in the original context (see the
docstring of ``task.py`` for why and how)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from lmcraft.data.squad import QAExample
from lmcraft.tokenizer import TextTokenizer


@dataclass
class Window:
    """One window of one question: the model's input, the training targets, the way back to characters."""

    ids: list[int]
    segment_ids: list[int]
    spans: np.ndarray  # (T, 2) int32: each token's characters [start, end) in the context; -1 off the context
    start: int  # first answer token; 0 ([CLS]) when the window does not hold the answer
    end: int  # last answer token; 0 likewise
    example: int  # the example's index: in the task's registry after encode, in the given list in predict
    index: int = -1  # this window's index in the task's registry; -1 when not registered


def _fit_question(tok: Tokenizer, question: str, limit: int) -> tuple[str, int]:
    """The question cut to at most ``limit`` tokens (at a token boundary), and its length in tokens."""
    full = tok.encode(question, add_special_tokens=False)
    text, n, keep = question, len(full.ids), limit
    while n > limit and keep >= 1:  # a cut word can re-tokenize longer, hence the loop
        text = question[: full.offsets[keep - 1][1]]
        n = len(tok.encode(text, add_special_tokens=False).ids)
        keep -= 1
    return text, n


def _trim_tables(context: str) -> tuple[np.ndarray, np.ndarray]:
    """For every character offset o in 0..len: the first non-space offset at or after o, and the end of the
    last non-space character at or before o. They trim a token's span of whitespace, vectorised."""
    n = len(context)
    solid = np.ones(n, dtype=bool)
    solid[[m.start() for m in re.finditer(r"\s", context)]] = False
    kept = np.flatnonzero(solid)  # offsets of the non-space characters
    offsets = np.arange(n + 1)
    if not len(kept):  # all whitespace: every span trims to nothing
        return np.full(n + 1, n), np.zeros(n + 1, dtype=np.int64)
    after = np.searchsorted(kept, offsets)  # index of the first kept offset >= o
    first_at = np.where(after < len(kept), kept[np.minimum(after, len(kept) - 1)], n)
    before = np.searchsorted(kept, offsets) - 1  # index of the last kept offset < o
    end_at = np.where(before >= 0, kept[np.maximum(before, 0)] + 1, 0)
    return first_at, end_at


def _window(enc: Any, tables: tuple[np.ndarray, np.ndarray], answer: tuple[int, int] | None) -> Window:
    seq = enc.sequence_ids
    first = seq.index(1)  # the context's tokens are contiguous: [first, first + n)
    n = seq.count(1)
    spans = np.full((len(enc.ids), 2), -1, dtype=np.int32)
    raw = np.asarray(enc.offsets[first : first + n], dtype=np.int64).reshape(n, 2)  # (n, 2)
    s, e = tables[0][raw[:, 0]], tables[1][raw[:, 1]]  # whitespace trimmed
    solid = s < e
    spans[first : first + n][solid] = np.stack([s, e], axis=1)[solid]
    start = end = 0
    if answer is not None and solid.any():
        a, b = answer
        kept = np.flatnonzero(solid)
        if s[kept[0]] <= a and e[kept[-1]] >= b:  # the window holds the whole answer
            start = first + int(kept[e[kept] > a][0])
            end = first + int(kept[s[kept] < b][-1])
    return Window(ids=list(enc.ids), segment_ids=list(enc.type_ids), spans=spans, start=start, end=end, example=-1)


def make_windows(tokenizer: TextTokenizer, examples: Sequence[QAExample], max_len: int,
                 doc_stride: int) -> list[list[Window]]:
    """The windows of every example (``Window.example`` is its index in ``examples``).

    A question is cut to half of what the window leaves after the special tokens, so that the context
    keeps at least the other half. Training targets come from the first gold answer.
    """
    tok = tokenizer.tokenizer
    room = max_len - tok.num_special_tokens_to_add(is_pair=True)  # tokens for question + context
    if room < 4:
        raise ValueError(f"max_len={max_len} leaves no room for a question and a context")
    tok.no_padding()
    tok.no_truncation()
    try:
        fitted = [_fit_question(tok, ex.question, room // 2) for ex in examples]
        # One batch call takes one stride, and tokenizers panics (an exception that escapes `except
        # Exception`) when the stride is not below the context's room; so the examples are grouped by the
        # stride that suits their question, which is doc_stride unless the window is very short.
        groups: dict[int, list[int]] = defaultdict(list)
        for i, (_, n_question) in enumerate(fitted):
            groups[min(doc_stride, (room - n_question) // 2)].append(i)
        out: list[list[Window]] = [[] for _ in examples]
        # Questions on one paragraph come one after another: keep the trim tables of the last context only
        # (tables for all of SQuAD's would hold a few hundred MB).
        last_context, tables = None, (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        for stride, members in groups.items():
            tok.enable_truncation(max_len, stride=stride, strategy="only_second")
            pairs = [(fitted[i][0], examples[i].context) for i in members]
            for i, enc in zip(members, tok.encode_batch(pairs, add_special_tokens=True), strict=True):
                ex = examples[i]
                if ex.context is not last_context and ex.context != last_context:
                    last_context, tables = ex.context, _trim_tables(ex.context)
                answer = (ex.answers[0][1], ex.answers[0][1] + len(ex.answers[0][0])) if ex.answers else None
                for part in (enc, *enc.overflowing):
                    window = _window(part, tables, answer)
                    window.example = i
                    out[i].append(window)
        return out
    finally:
        tok.no_truncation()
