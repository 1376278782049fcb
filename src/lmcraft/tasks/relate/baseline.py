"""The classic baseline for relation extraction: TF-IDF + logistic regression over three views of a pair.

- character n-grams of the marked text (``@ * PER * 江泽民 @ ...``): the words around the entities, with
  the markers telling head from tail;
- character n-grams of the text between the two entities, framed by "|" so that n-grams at its edges
  (the word right after the first entity, right before the second) are features of their own: most
  relations are said there ("国务院副总理X", "X会见了Y");
- the entity types and their order ("PER>ORG", head first or tail first), one-hot.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction import DictVectorizer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from lmcraft.tasks.relate.task import NO_RELATION, RelationExample, labels_from, mark, relation_scores


def _between(ex: RelationExample) -> str:
    first, second = sorted((ex.head, ex.tail), key=lambda e: e.start)
    return f"|{ex.text[first.end : second.start]}|"


def _pair(ex: RelationExample) -> dict[str, str]:
    return {"types": f"{ex.head.type}>{ex.tail.type}", "order": "head first" if ex.head.start < ex.tail.start
            else "tail first"}


def relation_baseline(
    train: Sequence[RelationExample], dev: Sequence[RelationExample], test: Sequence[RelationExample], *,
    no_relation: str = NO_RELATION, ngrams: tuple[int, int] = (1, 3), c_grid: Sequence[float] = (1.0, 4.0, 16.0),
) -> dict[str, Any]:
    """Fit on train, choose the regularisation C by dev micro-F1, report the task's metrics on test (the
    same protocol as the model)."""
    start = time.perf_counter()
    labels = labels_from(train, no_relation)
    index = {name: i for i, name in enumerate(labels)}
    for split, examples in (("dev", dev), ("test", test)):
        unseen = sorted({str(ex.relation) for ex in examples} - set(labels))
        if unseen:
            raise ValueError(f"{split} relations never seen in training: {unseen}")
    views = [
        (TfidfVectorizer(analyzer="char", ngram_range=ngrams, sublinear_tf=True), lambda ex: mark(ex).text),
        (TfidfVectorizer(analyzer="char", ngram_range=ngrams, sublinear_tf=True), _between),
        (DictVectorizer(), _pair),
    ]
    x_train = hstack([vec.fit_transform([view(ex) for ex in train]) for vec, view in views]).tocsr()

    def features(examples: Sequence[RelationExample]) -> Any:
        return hstack([vec.transform([view(ex) for ex in examples]) for vec, view in views]).tocsr()

    def scores(model: LogisticRegression, examples: Sequence[RelationExample], x: Any) -> dict[str, float]:
        confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)  # rows: gold, columns: predicted
        np.add.at(confusion, ([index[str(ex.relation)] for ex in examples], model.predict(x)), 1)
        return relation_scores(confusion, labels, no_relation)

    y_train = [index[str(ex.relation)] for ex in train]
    x_dev = features(dev)
    best_c, best_dev, best_model = None, -1.0, None
    # One BLAS thread: L-BFGS makes many tiny matrix products, where threads spend more time waiting for
    # each other than computing (20-30x slower with two threads on a 2-core machine).
    with threadpool_limits(1, user_api="blas"):
        for c in c_grid:
            model = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
            score = scores(model, dev, x_dev)["micro_f1"]
            if score > best_dev:
                best_c, best_dev, best_model = c, score, model
        assert best_model is not None
        test_scores = scores(best_model, test, features(test))
    return {"test": test_scores, "dev_micro_f1": best_dev, "C": best_c, "labels": labels,
            "seconds": time.perf_counter() - start}
