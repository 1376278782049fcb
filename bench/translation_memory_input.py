"""Give a translation model the translation memory's answer as part of its input ("neural fuzzy repair").

Software messages repeat each other, so the target of the most similar training source (the translation
memory baseline) is often nearly right. Bulté and Tezcan (2019) append that target to the source and let the
model learn when to copy it and where to change it. This benchmark tests the idea on ``gettext-en-zh``:

    python bench/translation_memory_input.py write --data runs/tm/data --out runs/tm/data-mem
    lmcraft finetune --task seq2seq --data runs/tm/data-mem --tokenizer runs/tm/tokenizer --out runs/tm/mem \\
        --size mini --max-len 192 --max-target-tokens 64 --lr 1e-3 --batch-size 32 --budget 48m ...
    python bench/translation_memory_input.py score --data runs/tm/data --predictions runs/tm/mem/test_predictions.jsonl

``write`` copies each split with the source replaced by ``source ⇒ memory target``. The memory is the
training split, searched as the baseline searches it (cosine of character 1-3-gram TF-IDF); a training pair
never retrieves itself, so the model trains on the kind of match it meets at test time (mean similarity
of the retrieved match: 0.667 in training, 0.663 on test). ``score`` rescores a run's test predictions with
the original sources, so that "placeholders intact" compares the output with the source and not with the
retrieved target too. ``hybrid`` asks whether the memory alone should answer when its match is close: it
takes the memory's target where the retrieved source's similarity is at least θ and the model's output
elsewhere, chooses θ by dev BLEU, and scores that choice once on test (predictions from ``lmcraft evaluate
MODEL dev.jsonl --predictions ...``, and the same for test).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from lmcraft.data.readers import write_jsonl
from lmcraft.data.seq2seq import read_pairs
from lmcraft.metrics.generation import generation_report

ARROW = " ⇒ "


def write(data: Path, out: Path, batch_size: int = 512) -> None:
    train = read_pairs(data / "train.jsonl")
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, dtype=np.float32)
    memory_t = vectorizer.fit_transform([p.source for p in train]).T.tocsr()  # (V, n_train)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        pairs = read_pairs(data / f"{split}.jsonl")
        records, scores = [], []
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            similarity = (vectorizer.transform([p.source for p in batch]) @ memory_t).toarray()  # (b, n_train)
            if split == "train":  # leave one out: a training pair does not retrieve itself
                similarity[np.arange(len(batch)), np.arange(start, start + len(batch))] = -1.0
            nearest = similarity.argmax(1)
            for row, (pair, k) in enumerate(zip(batch, nearest, strict=True)):
                records.append({"source": pair.source + ARROW + train[int(k)].target, "target": pair.target,
                                "plain_source": pair.source, "similarity": round(float(similarity[row, k]), 4)})
                scores.append(float(similarity[row, k]))
        write_jsonl(out / f"{split}.jsonl", records)
        print(f"{split}: {len(records):,} pairs, mean similarity of the retrieved match {np.mean(scores):.3f}")


def _retrieved(data: Path, split: str) -> tuple[list[float], list[str]]:
    """The similarity of the nearest training source and its target, for each pair of ``split``."""
    train = read_pairs(data / "train.jsonl")
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, dtype=np.float32)
    memory_t = vectorizer.fit_transform([p.source for p in train]).T.tocsr()
    similarity = (vectorizer.transform([p.source for p in read_pairs(data / f"{split}.jsonl")]) @ memory_t).toarray()
    nearest = similarity.argmax(1)
    return similarity[np.arange(len(nearest)), nearest].tolist(), [train[int(k)].target for k in nearest]


def hybrid(data: Path, predictions: dict[str, Path], thresholds: list[float]) -> None:
    chosen: tuple[float, float] | None = None  # (dev BLEU, θ)
    runs = {}
    for split in ("dev", "test"):
        records = [json.loads(line) for line in predictions[split].read_text(encoding="utf-8").splitlines()]
        similarity, memory = _retrieved(data, split)
        if len(records) != len(similarity):
            raise SystemExit(f"{predictions[split]}: {len(records)} predictions for {len(similarity)} {split} pairs")
        runs[split] = (records, similarity, memory)
    records, similarity, memory = runs["dev"]
    for theta in thresholds:
        outputs = [m if s >= theta else r["output"] for r, s, m in zip(records, similarity, memory, strict=True)]
        bleu = float(generation_report(outputs, [r["reference"] for r in records])["bleu"])  # type: ignore[arg-type]
        print(f"dev: memory where similarity >= {theta:.2f}: BLEU {bleu:.2f}")
        if chosen is None or bleu > chosen[0]:
            chosen = (bleu, theta)
    assert chosen is not None
    records, similarity, memory = runs["test"]
    outputs = [m if s >= chosen[1] else r["output"] for r, s, m in zip(records, similarity, memory, strict=True)]
    report = generation_report(outputs, [r["reference"] for r in records], [r["source"] for r in records])
    print(f"test, θ = {chosen[1]:.2f} (chosen on dev): " + ", ".join(
        f"{k} {v:.4f}" for k, v in report.items() if isinstance(v, float)))


def score(data: Path, predictions: Path) -> None:
    plain = {p.source: p for p in read_pairs(data / "test.jsonl")}
    records = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    sources = [r["source"].split(ARROW)[0] for r in records]
    missing = [s for s in sources if s not in plain]
    if missing:
        raise SystemExit(f"{len(missing)} predicted sources are not in {data / 'test.jsonl'}, e.g. {missing[0]!r}")
    report = generation_report([r["output"] for r in records], [r["reference"] for r in records], sources)
    for name, value in report.items():
        print(f"{name:<20} {value:.4f}" if isinstance(value, float) else f"{name:<20} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    w = commands.add_parser("write", help="write the splits with the memory's target appended to each source")
    w.add_argument("--data", type=Path, required=True, help="a directory with train, dev and test .jsonl pairs")
    w.add_argument("--out", type=Path, required=True)
    s = commands.add_parser("score", help="rescore test predictions against the original sources")
    s.add_argument("--data", type=Path, required=True, help="the original (not augmented) data directory")
    s.add_argument("--predictions", type=Path, required=True, help="a run's test_predictions.jsonl")
    h = commands.add_parser("hybrid", help="the memory's target where its match is at least θ (chosen on dev)")
    h.add_argument("--data", type=Path, required=True, help="the original (not augmented) data directory")
    h.add_argument("--dev-predictions", type=Path, required=True, help="`lmcraft evaluate ... --predictions` on dev")
    h.add_argument("--test-predictions", type=Path, required=True, help="the same on test")
    h.add_argument("--thresholds", type=float, nargs="+", default=[0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.01])
    args = parser.parse_args()
    if args.command == "write":
        write(args.data, args.out)
    elif args.command == "score":
        score(args.data, args.predictions)
    else:
        hybrid(args.data, {"dev": args.dev_predictions, "test": args.test_predictions}, args.thresholds)


if __name__ == "__main__":
    main()
