"""The classic NER baseline: a linear-chain CRF over hand-made word features (CRFsuite, via sklearn-crfsuite).

Features of each word (a character, for Chinese): the word itself, its neighbours up to two away, the
bigrams around it, and its shape (digit, Latin letters, punctuation). This is the feature set that Chinese
NER systems used before neural encoders; it needs no pretraining and trains in a few minutes. It tags
BIOES, whatever scheme the neural tagger beside it uses: the stronger of the two schemes on dev.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Sequence
from typing import Any

from lmcraft.data.ner import TaggedExample, spans_from_tags, tags_for
from lmcraft.metrics.entities import precision_recall_f1


def _shape(word: str) -> str:
    if word.isdigit():
        return "digit"
    if word.isascii() and word.isalpha():
        return "latin"
    category = unicodedata.category(word[0])
    return "punct" if category.startswith("P") or category.startswith("S") else category[0]


def word_features(words: Sequence[str]) -> list[dict[str, str | bool]]:
    padded = ["<s2>", "<s1>", *words, "</s1>", "</s2>"]
    features = []
    for i in range(2, len(padded) - 2):
        w = padded[i]
        features.append({
            "bias": True, "w": w, "shape": _shape(w),
            "w-1": padded[i - 1], "w+1": padded[i + 1], "w-2": padded[i - 2], "w+2": padded[i + 2],
            "w-1w": padded[i - 1] + w, "ww+1": w + padded[i + 1], "w-1w+1": padded[i - 1] + padded[i + 1],
        })
    return features


def _words(example: TaggedExample) -> list[str]:
    return [example.text[s:e] for s, e in example.words]


# BIOES tags (a single-character entity and an entity's last character get tags of their own) fit the
# People's Daily better than BIO: dev entity F1 0.9554 against 0.952, test 0.9508 against 0.9464 (docs/tasks.md).
BASELINE_SCHEME = "BIOES"


def crf_baseline(train: Sequence[TaggedExample], test: Sequence[TaggedExample], *,
                 scheme: str = BASELINE_SCHEME, c1: float = 0.05, c2: float = 0.05,
                 max_iterations: int = 100) -> dict[str, Any]:
    """Fit on train, report entity-level precision / recall / F1 (seqeval's counting) on test."""
    import sklearn_crfsuite

    start = time.perf_counter()
    crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=c1, c2=c2, max_iterations=max_iterations)
    crf.fit([word_features(_words(ex)) for ex in train], [tags_for(ex, scheme) for ex in train])
    predicted = crf.predict([word_features(_words(ex)) for ex in test])
    tp = n_pred = n_gold = 0
    by_type: dict[str, list[int]] = {}
    for ex, tags in zip(test, predicted, strict=True):
        gold, pred = set(ex.entities), set(spans_from_tags(ex.words, tags))
        tp, n_pred, n_gold = tp + len(gold & pred), n_pred + len(pred), n_gold + len(gold)
        for spans, column in ((gold & pred, 0), (pred, 1), (gold, 2)):
            for *_, label in spans:
                by_type.setdefault(label, [0, 0, 0])[column] += 1
    metrics: dict[str, Any] = precision_recall_f1(tp, n_pred, n_gold)
    metrics.update({f"f1_{t}": precision_recall_f1(*counts)["f1"] for t, counts in sorted(by_type.items())})
    return {"test": metrics, "seconds": time.perf_counter() - start}
