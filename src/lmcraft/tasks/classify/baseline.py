"""The classic baseline every neural model must beat: character n-gram TF-IDF + logistic regression."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from lmcraft.data.readers import Example
from lmcraft.metrics.classification import classification_metrics


def tfidf_baseline(
    train: Sequence[Example], dev: Sequence[Example], test: Sequence[Example], *,
    ngrams: tuple[int, int] = (1, 3), c_grid: Sequence[float] = (1.0, 4.0, 16.0),
) -> dict[str, Any]:
    """Fit on train, choose the regularisation C on dev, report on test (the same protocol as the model)."""
    start = time.perf_counter()
    labels = sorted({ex.label for ex in train})  # type: ignore[type-var]
    index = {name: i for i, name in enumerate(labels)}

    def text(ex: Example) -> str:
        return ex.text if ex.pair is None else f"{ex.text}\n{ex.pair}"

    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=ngrams, sublinear_tf=True, min_df=2)
    x_train = vectorizer.fit_transform([text(e) for e in train])
    x_dev, x_test = vectorizer.transform([text(e) for e in dev]), vectorizer.transform([text(e) for e in test])
    y_train, y_dev = [index[e.label] for e in train], [index[e.label] for e in dev]  # type: ignore[index]
    best_c, best_dev, best_model = None, -1.0, None
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        score = float(model.score(x_dev, y_dev))
        if score > best_dev:
            best_c, best_dev, best_model = c, score, model
    assert best_model is not None
    metrics = classification_metrics([index[e.label] for e in test], best_model.predict(x_test).tolist(), labels)  # type: ignore[index]
    return {"test": metrics, "dev_accuracy": best_dev, "C": best_c, "seconds": time.perf_counter() - start}
