"""Beam search that writes exactly the source's placeholders (``--keep-placeholders``, on by default).

A software message's placeholders (``%s``, ``%(name)s``, ``{0}``, ``${VAR}``) must survive translation, and a
small model drops some and invents others (``docs/generation.md``: over a third of its placeholder errors,
66 of 180, copy one from the memory's target). So the search is told what the source asks for
(``model/beam.py``'s ``Constraint``): a hypothesis that writes a placeholder the source lacks, or one of
the wrong type or order, is dropped, and a hypothesis may end only when every placeholder of its source is
written. The model still chooses where each goes and what is around it.

The check reads text, not token ids, so it holds whatever the tokenizer does to ``%1$s``: a hypothesis is
decoded and checked (``metrics/placeholders.py``) only when one of its tokens holds a ``%``, ``{`` or ``$``,
the characters every placeholder starts with, so most candidates cost a set lookup. A tokenizer that cannot
write placeholders back as they were (word pieces decode ``%s`` as ``% s``) gets no constraint: no hypothesis
could satisfy it, and every row would run to the length limit for nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lmcraft.metrics.placeholders import check_placeholders, placeholders, placeholders_may_continue
from lmcraft.tokenizer import TextTokenizer

STARTS = ("%", "{", "$")  # every placeholder starts with one of these
SAMPLE = "%s and %d, %1$s, %(name)s, {0}, {name} and ${HOME}"  # what a tokenizer must write back


def writes_placeholders(tokenizer: TextTokenizer) -> bool:
    """Whether text the tokenizer encodes decodes with its placeholders as they were written."""
    ids = tokenizer.encode([SAMPLE], max_len=None, special_tokens=False)[0]
    return placeholders(tokenizer.decode_text(ids)) == placeholders(SAMPLE)


def tokens_that_may_start(tokenizer: TextTokenizer) -> frozenset[int]:
    """The ids whose text holds a character a placeholder starts with (a few dozen of a 10k vocabulary)."""
    size = tokenizer.tokenizer.get_vocab_size(with_added_tokens=True)
    return frozenset(i for i in range(size) if any(c in tokenizer.decode_text([i]) for c in STARTS))


def marked_tokens(tokenizer: TextTokenizer) -> frozenset[int] | None:
    """``tokens_that_may_start``, or None when the tokenizer cannot write placeholders back; worked out once
    per tokenizer (a decode of every entry: 0.05 s for 10k), again when tokens have been added."""
    size = tokenizer.tokenizer.get_vocab_size(with_added_tokens=True)
    cached = getattr(tokenizer, "_placeholder_marks", None)
    if cached is None or cached[0] != size:
        cached = (size, tokens_that_may_start(tokenizer) if writes_placeholders(tokenizer) else None)
        tokenizer._placeholder_marks = cached  # type: ignore[attr-defined]
    return cached[1]


class KeepPlaceholders:
    """The ``Constraint`` for one batch: row ``i`` renders ``sources[i]``."""

    def __init__(self, sources: Sequence[str], decode: Callable[[list[int]], str], marked: frozenset[int]) -> None:
        self.sources = list(sources)
        self.decode = decode  # new token ids -> the text the output will show
        self.marked = marked  # from ``tokens_that_may_start``
        self.bare = [not placeholders(s) for s in self.sources]  # the source has no placeholder

    def _plain(self, tokens: list[int]) -> bool:
        return not any(t in self.marked for t in tokens)

    def may_extend(self, row: int, tokens: list[int]) -> bool:
        return self._plain(tokens) or placeholders_may_continue(self.sources[row], self.decode(tokens))

    def may_end(self, row: int, tokens: list[int]) -> bool:
        if self._plain(tokens):  # no placeholder written: right when the source has none
            return self.bare[row]
        return not check_placeholders(self.sources[row], self.decode(tokens))
