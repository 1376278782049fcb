"""The classic baseline every neural model must beat: the strongest of a small family of TF-IDF linear models.

Candidates (Wang & Manning 2012 and the fastText paper's baselines are of this family):

- features: word 1–2-grams, character 1–4-grams, or both side by side, all with sublinear TF. English words
  are the vectorizer's own token pattern and its characters stay within word boundaries (``char_wb``);
  Chinese words come from jieba and its characters are plain ``char`` n-grams (Chinese has no spaces);
- classifiers: logistic regression and a linear SVM (``LinearSVC``), each over a small grid of C.

Everything is fitted on train and chosen by dev accuracy alone; test is scored once, by the chosen model
(the same protocol as the neural model's best checkpoint). Each feature set is vectorized once and its
matrices serve every classifier and C. Ties go to the earlier candidate: fewer features, logistic
regression, smaller C. The fits run with one BLAS thread: their dense parts are small, and on a shared
2-core machine OpenBLAS's waiting threads cost four times the CPU (measured on fortunes-topics: one
logistic regression fit, 17 CPU-seconds with the default threads, 4 with one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from lmcraft.data.readers import Example
from lmcraft.metrics.classification import classification_metrics
from lmcraft.text import CJK_HEAVY, cjk_share

FEATURE_SETS = ("word", "char", "word+char")
C_GRID: dict[str, tuple[float, ...]] = {  # per classifier: their C act on different scales
    "logistic regression": (2.0, 8.0, 32.0),
    "linear SVM": (0.1, 0.3, 1.0),
}


@dataclass(frozen=True)
class Candidate:
    features: str  # one of FEATURE_SETS
    classifier: str  # a key of C_GRID
    C: float


def example_text(ex: Example) -> str:
    return ex.text if ex.pair is None else f"{ex.text}\n{ex.pair}"


def _jieba_words() -> Callable[[str], list[str]]:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    cutter = jieba.Tokenizer()
    return lambda text: [w for w in cutter.lcut(text) if not w.isspace()]


def vectorizers(chinese: bool) -> dict[str, TfidfVectorizer]:
    """The word and character vectorizers for Chinese or for space-separated text."""
    if chinese:
        word = TfidfVectorizer(tokenizer=_jieba_words(), token_pattern=None, ngram_range=(1, 2),
                               sublinear_tf=True, min_df=2)
        char = TfidfVectorizer(analyzer="char", ngram_range=(1, 4), sublinear_tf=True, min_df=2)
    else:
        word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
        char = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2)
    return {"word": word, "char": char}


def describe(candidate: Candidate, chinese: bool, dev_accuracy: float) -> str:
    """'TF-IDF word 1-2 + char_wb 1-4 grams, logistic regression (C=4, chosen on dev: 0.812)'."""
    parts = {"word": "jieba word 1-2" if chinese else "word 1-2", "char": "char 1-4" if chinese else "char_wb 1-4"}
    features = " + ".join(parts[f] for f in candidate.features.split("+"))
    return (f"TF-IDF {features} grams, {candidate.classifier} (C={candidate.C:g}, chosen on dev: "
            f"{dev_accuracy:.3f})")


def _classifier(candidate: Candidate) -> LogisticRegression | LinearSVC:
    if candidate.classifier == "logistic regression":
        return LogisticRegression(C=candidate.C, max_iter=1000)
    return LinearSVC(C=candidate.C, random_state=0)


def _search(features: str, matrices: dict[str, dict[str, sp.csr_matrix]], y_train: list[int], y_dev: list[int],
            c_grid: dict[str, tuple[float, ...]], best: tuple[float, Candidate, Any, str] | None,
            search: list[dict[str, Any]]) -> tuple[float, Candidate, Any, str] | None:
    """Fit every classifier and C on one feature set; append their dev accuracies to ``search``; the best so
    far (earlier candidates win ties)."""
    parts = features.split("+")
    x = {split: sp.hstack([matrices[k][split] for k in parts], format="csr") for split in ("train", "dev")}
    for classifier, grid in c_grid.items():
        for c in grid:
            candidate = Candidate(features, classifier, c)
            model = _classifier(candidate).fit(x["train"], y_train)
            score = float(model.score(x["dev"], y_dev))
            search.append({"features": features, "classifier": classifier, "C": c, "dev_accuracy": score})
            if best is None or score > best[0]:
                best = (score, candidate, model, features)
    return best


def tfidf_baseline(train: Sequence[Example], dev: Sequence[Example], test: Sequence[Example], *,
                   feature_sets: Sequence[str] = FEATURE_SETS,
                   c_grid: dict[str, tuple[float, ...]] | None = None) -> dict[str, Any]:
    """Fit every candidate on train, keep the best by dev accuracy, score it on test.

    Returns ``{"name", "test", "dev", "test_predictions", "chosen", "language", "search", "seconds"}``:
    ``name`` says what was chosen and its dev score, ``test_predictions`` the label it gives each test
    example (for paired comparisons), ``search`` every candidate's dev accuracy (never a test score).
    """
    start = time.perf_counter()
    labels = sorted({ex.label for ex in train})  # type: ignore[type-var]
    index = {name: i for i, name in enumerate(labels)}
    texts = {split: [example_text(e) for e in examples]
             for split, examples in (("train", train), ("dev", dev), ("test", test))}
    y_train = [index[e.label] for e in train]  # type: ignore[index]
    y_dev = [index[e.label] for e in dev]  # type: ignore[index]
    share = cjk_share(texts["train"])
    chinese = share >= CJK_HEAVY

    matrices: dict[str, dict[str, sp.csr_matrix]] = {}  # kind (word / char) -> split -> (n, features)
    wanted = {part for features in feature_sets for part in features.split("+")}
    for kind, vectorizer in vectorizers(chinese).items():
        if kind in wanted:
            x_train = vectorizer.fit_transform(texts["train"])
            matrices[kind] = {"train": x_train, "dev": vectorizer.transform(texts["dev"]),
                              "test": vectorizer.transform(texts["test"])}

    best: tuple[float, Candidate, Any, str] | None = None  # (dev accuracy, candidate, model, feature set)
    search = []
    with threadpool_limits(limits=1, user_api="blas"):
        for features in feature_sets:
            best = _search(features, matrices, y_train, y_dev, c_grid or C_GRID, best, search)
    assert best is not None, "no candidates: give at least one feature set and one C"
    dev_accuracy, chosen, model, features = best
    x_test = sp.hstack([matrices[k]["test"] for k in features.split("+")], format="csr")
    predicted = model.predict(x_test).tolist()
    metrics = classification_metrics([index[e.label] for e in test], predicted, labels)  # type: ignore[index]
    return {"name": describe(chosen, chinese, dev_accuracy), "test": metrics, "dev": {"accuracy": dev_accuracy},
            "test_predictions": [labels[i] for i in predicted],
            "chosen": {"features": chosen.features, "classifier": chosen.classifier, "C": chosen.C},
            "language": {"cjk_share": round(share, 4), "chinese": chinese}, "search": search,
            "seconds": time.perf_counter() - start}
