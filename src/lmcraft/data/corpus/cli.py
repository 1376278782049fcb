"""``lmcraft data corpus``: the command line of the streaming corpus pipeline."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from lmcraft.data.corpus.config import REMOVED, UNITS, CorpusConfig, DedupConfig
from lmcraft.data.corpus.filters import FilterConfig
from lmcraft.data.corpus.pipeline import run_corpus

DESCRIPTION = """\
Turn raw text files into sharded binary token files for pretraining, streaming: the corpus may be far
larger than memory. Each line goes through these steps:

  1. read      a .txt file holds a document a line; a .jsonl file a JSON object a line, whose "text" field
               (--text-field) is the document; either may be gzipped (.gz). Bytes that are not UTF-8 are
               replaced and the lines counted; a line that is not valid JSON stops the run with its file
               and line number.
  2. normalise NFKC (full-width letters, digits and punctuation become ASCII), control and invisible
               format characters removed, runs of whitespace collapsed.
  3. sentences split Chinese after 。！？； and English after . ! ? followed by a capital (not after Mr.
               Dr. e.g. U.S.). The quality filter uses them; with --unit sentence every sentence becomes
               a document of its own.
  4. filter    remove documents shorter than --min-chars or longer than --max-chars, mostly symbols,
               made of repeated sentences, dominated by one repeated 2-gram, or (English) with a mean
               word length outside 3..10 (Gopher's rules).
  5. dedup     remove exact duplicates (a hash of the normalised text) and near duplicates (MinHash LSH
               of character 5-grams for CJK text, word 3-grams otherwise; similarity >=
               --near-dup-threshold with one of the last --near-dup-window kept documents).
  6. tokenize  in --workers processes with the tokenizer of --tokenizer, into shards of about
               --shard-tokens tokens: shard-00000.bin (uint16 ids when the vocabulary has < 65,536
               entries, else uint32) and shard-00000.idx (int64 offsets of the documents), listed in
               manifest.json with counts, SHA-256 digests, every filter's count and the throughput.

Read the shards with lmcraft.data.corpus.TokenShards(OUT). After each shard the run saves a checkpoint;
an interrupted run continues with --resume and writes the same bytes as an uninterrupted one.
"""


def add_corpus_parser(data_sub: argparse._SubParsersAction) -> None:
    """Add the ``corpus`` action to ``lmcraft data``."""
    filters, dedup = FilterConfig(), DedupConfig()
    p = data_sub.add_parser("corpus", help="turn raw text into sharded token files for pretraining",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".txt (a document a line) or .jsonl files, or .gz")
    p.add_argument("--out", required=True, type=Path, help="directory for the shards and manifest.json")
    p.add_argument("--tokenizer", required=True, type=Path, help="directory holding tokenizer.json")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="tokenizer processes (default: %(default)s, the CPU count); 0 does everything in one")
    p.add_argument("--shard-tokens", type=int, default=50_000_000,
                   help="close a shard once it holds this many tokens (default: %(default)s)")
    p.add_argument("--min-chars", type=int, default=filters.min_chars,
                   help="remove documents shorter than this, after normalisation (default: %(default)s)")
    p.add_argument("--max-chars", type=int, default=filters.max_chars,
                   help="remove documents longer than this (default: %(default)s)")
    p.add_argument("--near-dup-threshold", type=float, default=dedup.threshold,
                   help="estimated Jaccard similarity at which a document is a near duplicate (default: %(default)s)")
    p.add_argument("--near-dup-window", type=int, default=dedup.window,
                   help="look for near duplicates among the last this many kept documents; 0: all of them, "
                        "at ~3 KB of memory each (default: %(default)s)")
    p.add_argument("--no-near-dup", action="store_true", help="remove exact duplicates only")
    p.add_argument("--unit", choices=UNITS, default="document",
                   help="'sentence' makes every sentence a document of its own (default: %(default)s)")
    p.add_argument("--text-field", default="text", help="the JSONL field that holds the text (default: %(default)s)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in --out (it must have the same inputs and settings)")
    again.add_argument("--overwrite", action="store_true", help="replace a previous run's files in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_corpus)


def config_from_args(args: argparse.Namespace) -> CorpusConfig:
    return CorpusConfig(
        inputs=args.inputs, out=args.out, tokenizer=args.tokenizer, workers=args.workers,
        shard_tokens=args.shard_tokens, unit=args.unit, text_field=args.text_field,
        filters=FilterConfig(min_chars=args.min_chars, max_chars=args.max_chars),
        dedup=DedupConfig(near_dup=not args.no_near_dup, threshold=args.near_dup_threshold,
                          window=args.near_dup_window),
        resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
    )


def summary(manifest: dict[str, Any], out: Path) -> str:
    """What the run did, for people: counts per filter, what was kept, the speed."""
    counts, speed = manifest["counts"], manifest["throughput"]
    documents = max(counts["documents"], 1)
    lines = [f"read {len(manifest['inputs'])} file(s), {speed['input_mb']:,.1f} MB: {counts['lines']:,} lines, "
             f"{counts['documents']:,} documents, {counts['sentences']:,} sentences "
             f"({counts['empty_lines']:,} empty lines, {counts['bad_utf8_lines']:,} with bad UTF-8)",
             "removed:"]
    for reason in REMOVED:
        n = counts["removed"][reason]
        lines.append(f"  {reason:<15}{n:>12,}  {n / documents:6.1%}")
    kept = counts["kept"]
    lines.append(f"kept: {kept['documents']:,} documents, {kept['sentences']:,} sentences, {kept['characters']:,} "
                 f"characters, {manifest['n_tokens']:,} tokens ({manifest['dtype']}) in {len(manifest['shards'])} "
                 f"shard(s) -> {out}")
    if speed["mb_per_s"] is not None:
        lines.append(f"speed: {speed['mb_per_s']:.2f} MB/s, {speed['mb_per_cpu_second']:.2f} MB/s per core (input "
                     f"MB per CPU second of the main process and the workers), {speed['tokens_per_s']:,.0f} tokens/s; "
                     f"{speed['seconds']:,.1f} s with {speed['workers']} worker(s)")
    return "\n".join(lines)


def cmd_corpus(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    manifest = run_corpus(config)
    print(summary(manifest, config.out))
    return 0
