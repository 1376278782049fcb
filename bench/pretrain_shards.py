"""Peak memory of pretraining on token shards of different sizes: it should not grow with the corpus.

    python bench/pretrain_shards.py [--sizes 100 1024] [--cache DIR] [--pipeline] [--steps 5] [--eager]

For each size (MB of input text) a shard set is built once and kept in ``--cache`` (default
``~/.cache/lmcraft-bench/pretrain-shards``): text from the generator of ``bench/corpus_pipeline.py`` (real
Chinese and English sentences, with its duplicates and junk), tokenized with that benchmark's WordPiece
tokenizer (8,000 entries, trained once and cached too). By default the documents go straight into shards
through the corpus package's ``ShardWriter`` and manifest format, skipping cleaning and deduplication:
the full pipeline runs at ~0.5 MB/s on two cores (docs/corpus.md), half an hour for 1 GB. ``--pipeline``
builds them with ``lmcraft data corpus`` instead. Both tokenize at ~0.25-0.7 MB/s on this project's two
shared cores, so ``--replicate-from 100`` makes every larger size from the 100 MB set instead: its shard
files copied as often as the size needs (the same tokens repeated; what pretraining's memory depends on,
the numbers of tokens, documents and blocks, is that of the larger corpus).

Each run is ``lmcraft pretrain --corpus SHARDS`` (a tiny model, 128-token blocks, ``--steps`` steps, a dev
share that holds out ~32 blocks whatever the size: evaluation's memory grows with the dev set, which is not
what this measures) in a subprocess, whose resident memory is polled every
0.2 s (psutil); its peak is printed next to the corpus size. ``--eager`` also measures, in a subprocess,
what the previous code did before training started: every document read into Python lists and packed
(for sizes up to ``EAGER_MAX_MB``: at ~15 bytes of memory per byte of text, 1 GB would need ~16 GB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from corpus_pipeline import RUNNER, Generator, source_sentences, train, watch

SHARD_TOKENS = 50_000_000
BATCH_DOCS = 20_000  # documents tokenized per call
EAGER_MAX_MB = 200
DEV_BLOCKS = 32
EAGER = """\
import sys
from lmcraft.data.corpus.shards import TokenShards
from lmcraft.objectives.mlm import pack
from lmcraft.tokenizer import TextTokenizer
tokenizer = TextTokenizer.load(sys.argv[2])
documents = []
documents.extend(ids.tolist() for ids in TokenShards(sys.argv[1]))  # the old pretrain.shard_documents
blocks = pack(documents, block=128, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id)
print(len(blocks), "blocks")
"""


def build_direct(out: Path, size_mb: float, tokenizer_dir: Path) -> dict:
    """Generated documents, tokenized in batches, written as shards with a manifest (no cleaning)."""
    import numpy as np

    from lmcraft.data.corpus.shards import ShardWriter, token_dtype
    from lmcraft.tokenizer import TextTokenizer

    tokenizer = TextTokenizer.load(tokenizer_dir)
    dtype = token_dtype(tokenizer.vocab_size)
    zh, en = source_sentences()
    generator = Generator(zh, en)
    out.mkdir(parents=True, exist_ok=True)
    shards, writer, budget, written = [], ShardWriter(out, 0, dtype), int(size_mb * 1e6), 0
    while written < budget:
        docs = []
        while written < budget and len(docs) < BATCH_DOCS:
            docs.append(generator.document())
            written += len(docs[-1].encode("utf-8")) + 1
        for ids in tokenizer.encode(docs, max_len=None, special_tokens=False):
            writer.add(np.asarray(ids, dtype=np.int64))
            if writer.n_tokens >= SHARD_TOKENS:
                shards.append(writer.close())
                writer = ShardWriter(out, len(shards), dtype)
    shards.append(writer.close())
    manifest = {"format": "bench-direct", "dtype": dtype,
                "tokenizer": {"path": str(tokenizer_dir), "vocab_size": tokenizer.vocab_size},
                "n_docs": sum(s.n_docs for s in shards), "n_tokens": sum(s.n_tokens for s in shards),
                "shards": [vars(s) for s in shards], "inputs": [{"generated_bytes": written}]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def build_pipeline(out: Path, size_mb: float, tokenizer_dir: Path) -> dict:
    """The generated text in files, through `lmcraft data corpus` (cleaning, deduplication, shards)."""
    from corpus_pipeline import generate

    zh, en = source_sentences()
    text = out.parent / f"{out.name}-text"
    text.mkdir(parents=True, exist_ok=True)
    files, _ = generate(text, size_mb, zh, en)
    subprocess.run([sys.executable, "-c", RUNNER, *map(str, files), "--out", str(out), "--tokenizer",
                    str(tokenizer_dir), "--workers", "2", "--overwrite", "--no-progress"], check=True)
    for f in files:
        f.unlink()
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def replicate(out: Path, base: Path, copies: int) -> dict:
    """A shard set of ``copies`` times the shards of ``base`` (the files copied under new shard names)."""
    manifest = json.loads((base / "manifest.json").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for _ in range(copies):
        for shard in manifest["shards"]:
            name = f"shard-{len(shards):05d}"
            for suffix in (".bin", ".idx"):
                shutil.copyfile(base / f"{shard['name']}{suffix}", out / f"{name}{suffix}")
            shards.append({**shard, "name": name})
    grown = {**manifest, "format": f"{manifest.get('format')}, x{copies} copies of {base.name}", "shards": shards,
             "n_docs": manifest["n_docs"] * copies, "n_tokens": manifest["n_tokens"] * copies}
    (out / "manifest.json").write_text(json.dumps(grown, indent=2) + "\n", encoding="utf-8")
    return grown


def shard_set(cache: Path, size_mb: float, tokenizer_dir: Path, pipeline: bool,
              replicate_from: float = 0) -> tuple[Path, dict, float]:
    kind = "pipeline" if pipeline else "direct"
    if replicate_from and size_mb > replicate_from:
        kind += f"-x{round(size_mb / replicate_from)}-{replicate_from:g}mb"
    out = cache / f"{kind}-{size_mb:g}mb"
    if (out / "manifest.json").is_file():
        return out, json.loads((out / "manifest.json").read_text(encoding="utf-8")), 0.0
    began = time.perf_counter()
    if replicate_from and size_mb > replicate_from:
        base, _, _ = shard_set(cache, replicate_from, tokenizer_dir, pipeline)
        manifest = replicate(out, base, round(size_mb / replicate_from))
    else:
        manifest = (build_pipeline if pipeline else build_direct)(out, size_mb, tokenizer_dir)
    return out, manifest, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[100, 1024], help="MB of text (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "lmcraft-bench" / "pretrain-shards")
    parser.add_argument("--pipeline", action="store_true", help="build shards with `lmcraft data corpus` (slow)")
    parser.add_argument("--replicate-from", type=float, default=0, metavar="MB",
                        help="make larger sizes by copying the shards of this size's set (fast)")
    parser.add_argument("--steps", type=int, default=5, help="pretraining steps per run (default: %(default)s)")
    parser.add_argument("--eager", action="store_true",
                        help=f"also measure the old read-everything packing (sizes up to {EAGER_MAX_MB} MB only)")
    args = parser.parse_args()

    args.cache.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = args.cache / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        train(tokenizer_dir, *source_sentences())
    rows = []
    for size in args.sizes:
        shards, manifest, built_s = shard_set(args.cache, size, tokenizer_dir, args.pipeline, args.replicate_from)
        print(f"{size:g} MB: {manifest['n_docs']:,} documents, {manifest['n_tokens']:,} tokens in "
              f"{len(manifest['shards'])} shard(s) at {shards}" + (f" (built in {built_s:.0f} s)" if built_s else ""),
              flush=True)
        run_dir = args.cache / "runs" / shards.name
        n_blocks = (manifest["n_tokens"] + manifest["n_docs"]) // 126
        dev_fraction = DEV_BLOCKS / n_blocks  # the same dev set size for every corpus: evaluation is not measured
        command = [sys.executable, "-m", "lmcraft", "pretrain", "--corpus", str(shards), "--tokenizer",
                   str(tokenizer_dir), "--out", str(run_dir), "--size", "tiny", "--max-len", "128", "--batch-size",
                   "8", "--max-steps", str(args.steps), "--eval-every", str(args.steps), "--dev-fraction",
                   f"{dev_fraction:.3g}", "--no-progress", "--no-tensorboard"]
        run = watch(command)
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        row = {"size_mb": size, "tokens": manifest["n_tokens"], "blocks": summary["train_blocks"],
               "dev_fraction": dev_fraction,
               "peak_rss_mb": run["peak_tree"] / 2**20, "seconds": run["seconds"],
               "prepare_s": summary["wall_time_s"]["prepare"]}
        if args.eager and size <= EAGER_MAX_MB:  # it needs ~15 bytes of memory per byte of text
            eager = watch([sys.executable, "-c", EAGER, str(shards), str(tokenizer_dir)])
            row["eager_peak_rss_mb"] = eager["peak_tree"] / 2**20
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(f"\npretraining on token shards: tiny model, 128-token blocks, {args.steps} steps, batch 8; "
          f"shards built {'by the pipeline' if args.pipeline else 'directly (no cleaning)'}"
          + (f"; sizes above {args.replicate_from:g} MB are copies of that set" if args.replicate_from else ""))
    print(f"{'text':>8} {'tokens':>13} {'train blocks':>13} {'peak RSS':>10} {'prepare':>9} {'run':>7}"
          + (f" {'eager packing':>14}" if args.eager else ""))
    for r in rows:
        print(f"{r['size_mb']:>5g} MB {r['tokens']:>13,} {r['blocks']:>13,} {r['peak_rss_mb']:>7,.0f} MB "
              f"{r['prepare_s']:>7.1f} s {r['seconds']:>5.0f} s"
              + (f" {r['eager_peak_rss_mb']:>11,.0f} MB" if "eager_peak_rss_mb" in r else ""))


if __name__ == "__main__":
    main()
