"""Give a translation model the translation memory's answer as part of its input ("neural fuzzy repair").

Software messages repeat each other, so the target of the most similar training source (the translation
memory baseline) is often nearly right. Bulté and Tezcan (2019) append that target to the source and let the
model learn when to copy it and where to change it. This benchmark tests the idea on ``gettext-en-zh``:

    python bench/translation_memory_input.py write --data runs/tm/data --out runs/tm/data-mem
    lmcraft finetune --task seq2seq --data runs/tm/data-mem --tokenizer runs/tm/tokenizer --out runs/tm/mem \\
        --size mini --max-len 192 --max-target-tokens 64 --lr 1e-3 --batch-size 32 --budget 48m ...
    python bench/translation_memory_input.py score --data runs/tm/data --predictions runs/tm/mem/test_predictions.jsonl

``write`` copies each split with the source replaced by ``source ⇒ memory target``, which is what ``--memory``
builds inside lmcraft (both call ``TranslationMemory``: the training split, searched by the cosine of
character 1-3-gram TF-IDF, as the baseline searches it); a training pair
never retrieves itself, so the model trains on the kind of match it meets at test time (mean similarity
of the retrieved match: 0.667 in training, 0.663 on test). ``score`` rescores a run's test predictions with
the original sources, so that "placeholders intact" compares the output with the source and not with the
retrieved target too, and gives the model's lead in BLEU over the translation memory a paired-bootstrap
95% interval over the test messages. ``hybrid`` asks whether the memory alone should answer when its match is close: it
takes the memory's target where the retrieved source's similarity is at least θ and the model's output
elsewhere, chooses θ by dev BLEU, and scores that choice once on test (predictions from ``lmcraft evaluate
MODEL dev.jsonl --predictions ...``, and the same for test).
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from pathlib import Path

import numpy as np

from lmcraft.data.readers import write_jsonl
from lmcraft.data.seq2seq import read_pairs
from lmcraft.metrics.bootstrap import paired_bootstrap, resamples
from lmcraft.metrics.generation import bleu, generation_report, is_chinese
from lmcraft.tasks.seq2seq.baseline import translation_memory
from lmcraft.tasks.seq2seq.memory import MARK, TranslationMemory, with_memory


def write(data: Path, out: Path) -> None:
    memory = TranslationMemory([(p.source, p.target) for p in read_pairs(data / "train.jsonl")])
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        pairs = read_pairs(data / f"{split}.jsonl")
        hits = memory.search([p.source for p in pairs], [p.target for p in pairs])  # as --memory's encode asks
        records = [{"source": with_memory(p.source, memory.pairs[k][1]), "target": p.target, "plain_source": p.source,
                    "similarity": round(similarity, 4)} for p, (k, similarity) in zip(pairs, hits, strict=True)]
        write_jsonl(out / f"{split}.jsonl", records)
        mean = np.mean([similarity for _, similarity in hits])
        print(f"{split}: {len(records):,} pairs, mean similarity of the retrieved match {mean:.3f}")


def _retrieved(memory: TranslationMemory, data: Path, split: str) -> tuple[list[float], list[str]]:
    """The similarity of the nearest training source and its target, for each pair of ``split``."""
    hits = memory.search([p.source for p in read_pairs(data / f"{split}.jsonl")])
    return [similarity for _, similarity in hits], [memory.pairs[k][1] for k, _ in hits]


def hybrid(data: Path, predictions: dict[str, Path], thresholds: list[float]) -> None:
    chosen: tuple[float, float] | None = None  # (dev BLEU, θ)
    runs = {}
    train = TranslationMemory([(p.source, p.target) for p in read_pairs(data / "train.jsonl")])
    for split in ("dev", "test"):
        records = [json.loads(line) for line in predictions[split].read_text(encoding="utf-8").splitlines()]
        similarity, memory = _retrieved(train, data, split)
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


def score(data: Path, predictions: Path, n_boot: int) -> None:
    plain = {p.source: p for p in read_pairs(data / "test.jsonl")}
    records = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    sources = [r["source"].split(MARK)[0] for r in records]
    missing = [s for s in sources if s not in plain]
    if missing:
        raise SystemExit(f"{len(missing)} predicted sources are not in {data / 'test.jsonl'}, e.g. {missing[0]!r}")
    outputs, references = [r["output"] for r in records], [r["reference"] for r in records]
    report = generation_report(outputs, references, sources)
    for name, value in report.items():
        print(f"{name:<20} {value:.4f}" if isinstance(value, float) else f"{name:<20} {value}")
    if n_boot:  # the model's BLEU minus the translation memory's, resampling the test messages
        baseline = translation_memory(read_pairs(data / "train.jsonl"), [plain[s] for s in sources])
        chinese = is_chinese(references)
        texts = [unicodedata.normalize("NFKC", t) for t in [*outputs, *baseline]]  # model 0..n-1, memory n..2n-1
        gold = [unicodedata.normalize("NFKC", t) for t in references]

        def corpus_bleu(refs: np.ndarray, hyps: np.ndarray) -> float:
            return bleu([texts[i] for i in hyps], [gold[i] for i in refs], chinese=chinese)

        n = len(outputs)
        got = paired_bootstrap(corpus_bleu, np.arange(n), np.arange(n), np.arange(n, 2 * n),
                               draws=resamples(n, n_boot))
        print(f"BLEU minus the translation memory's: {got['difference']:+.2f}, 95% interval over {n_boot} "
              f"resamples of the test messages [{got['low']:+.2f}, {got['high']:+.2f}], p = {got['p_value']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    w = commands.add_parser("write", help="write the splits with the memory's target appended to each source")
    w.add_argument("--data", type=Path, required=True, help="a directory with train, dev and test .jsonl pairs")
    w.add_argument("--out", type=Path, required=True)
    s = commands.add_parser("score", help="rescore test predictions against the original sources")
    s.add_argument("--data", type=Path, required=True, help="the original (not augmented) data directory")
    s.add_argument("--predictions", type=Path, required=True, help="a run's test_predictions.jsonl")
    s.add_argument("--bootstrap", type=int, default=200,
                   help="paired bootstrap resamples of BLEU against the translation memory (0: none)")
    h = commands.add_parser("hybrid", help="the memory's target where its match is at least θ (chosen on dev)")
    h.add_argument("--data", type=Path, required=True, help="the original (not augmented) data directory")
    h.add_argument("--dev-predictions", type=Path, required=True, help="`lmcraft evaluate ... --predictions` on dev")
    h.add_argument("--test-predictions", type=Path, required=True, help="the same on test")
    h.add_argument("--thresholds", type=float, nargs="+", default=[0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.01])
    args = parser.parse_args()
    if args.command == "write":
        write(args.data, args.out)
    elif args.command == "score":
        score(args.data, args.predictions, args.bootstrap)
    else:
        hybrid(args.data, {"dev": args.dev_predictions, "test": args.test_predictions}, args.thresholds)


if __name__ == "__main__":
    main()
