"""A translation memory: the training pairs, searched for the source most like a new one.

Used two ways. As a baseline (``baseline.py``), its answer is the nearest training source's target. As an
input (``--memory``, "neural fuzzy repair", Bulté and Tezcan 2019), that target is appended to the source,
``source ⇒ memory target``, and the model learns when to copy it and what to change: software messages
repeat each other, so the nearest target is often nearly the answer.

Similarity is the cosine of character 1-3-gram TF-IDF vectors, which works for English and Chinese alike;
an identical source is taken first. A query that is itself one of the memory's pairs (a training example,
given with its target) never retrieves that pair, so a model trains on the kind of match it meets on new
text and does not learn to copy its own answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

MARK = " ⇒ "  # between a source and the memory's target in a model's input
# the vectorizer, its (V, n) matrix of the memory's sources, the pairs of each source, where each pair stands
Index = tuple[TfidfVectorizer, sp.csr_matrix, dict[str, list[int]], dict[tuple[str, str], list[int]]]


def with_memory(source: str, memory_target: str) -> str:
    """A model's input: the source, then the memory's target."""
    return f"{source}{MARK}{memory_target}"


class TranslationMemory:
    """(source, target) pairs and a TF-IDF index of their sources, built on first use (2 s for
    32k pairs on one core)."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        if not pairs:
            raise ValueError("a translation memory needs at least one (source, target) pair")
        self.pairs = [(str(s), str(t)) for s, t in pairs]
        self._index: Index | None = None

    def _built(self) -> Index:
        if self._index is None:
            vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, dtype=np.float32)
            memory_t = vectorizer.fit_transform([s for s, _ in self.pairs]).T.tocsr()  # (V, n), columns L2-normed
            exact: dict[str, list[int]] = {}  # source -> the pairs that have it, in order
            where: dict[tuple[str, str], list[int]] = {}  # pair -> where it stands
            for k, pair in enumerate(self.pairs):
                exact.setdefault(pair[0], []).append(k)
                where.setdefault(pair, []).append(k)
            self._index = (vectorizer, memory_t, exact, where)
        return self._index

    def search(self, sources: Sequence[str], targets: Sequence[str] | None = None, *,
               batch_size: int = 256) -> list[tuple[int, float]]:
        """(index, cosine similarity) of the memory pair nearest each source. With ``targets`` (the queries'
        own targets), a pair identical to its query is left out. The similarities are computed ``batch_size``
        queries at a time as a dense (batch × memory) float32 block: 33 MB for 256 queries and 32k pairs."""
        if targets is not None and len(targets) != len(sources):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        vectorizer, memory_t, exact, where = self._built()
        out: list[tuple[int, float]] = []
        for start in range(0, len(sources), batch_size):
            chunk = list(sources[start : start + batch_size])
            similarity = (vectorizer.transform(chunk) @ memory_t).toarray()  # (b, n)
            for row, source in enumerate(chunk):
                own = where.get((source, targets[start + row]), []) if targets is not None else []
                same = [k for k in exact.get(source, []) if k not in own]  # an identical source, not the pair
                if not same and len(own) == len(self.pairs):
                    raise ValueError(f"the translation memory holds nothing but the pair ({source!r}, "
                                     f"{targets[start + row]!r}) itself: a pair never retrieves itself, so "
                                     "the memory needs other pairs")
                similarity[row, own] = -np.inf
                k = same[0] if same else int(similarity[row].argmax())
                out.append((k, float(similarity[row, k])))
        return out

    def nearest(self, sources: Sequence[str], targets: Sequence[str] | None = None, *,
                batch_size: int = 256) -> list[int]:
        """The index of the memory pair nearest each source (see ``search``)."""
        return [k for k, _ in self.search(sources, targets, batch_size=batch_size)]

    def targets_for(self, sources: Sequence[str], targets: Sequence[str] | None = None, *,
                    batch_size: int = 256) -> list[str]:
        """The target of the memory pair nearest each source (see ``search``)."""
        return [self.pairs[k][1] for k in self.nearest(sources, targets, batch_size=batch_size)]

    def inputs(self, sources: Sequence[str], targets: Sequence[str] | None = None) -> list[str]:
        """Each source with the nearest memory target appended: what a ``--memory`` model reads."""
        return [with_memory(s, t) for s, t in zip(sources, self.targets_for(sources, targets), strict=True)]

    def to_json(self) -> list[list[str]]:
        return [[s, t] for s, t in self.pairs]

    @classmethod
    def from_json(cls, value: Any) -> TranslationMemory:
        if not isinstance(value, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in value):
            raise ValueError("a saved translation memory is a list of [source, target] string pairs")
        return cls([(s, t) for s, t in value])
