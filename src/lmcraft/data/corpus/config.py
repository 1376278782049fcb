"""What a corpus run is told: the options of every step, and the names of what it removes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lmcraft.data.corpus.filters import FILTERS, FilterConfig

FORMAT = "lmcraft-token-shards/1"
UNITS = ("document", "sentence")
REMOVED = (*FILTERS, "exact_dup", "near_dup")  # every reason a document is removed, in the order applied


@dataclass(frozen=True)
class DedupConfig:
    near_dup: bool = True  # remove near duplicates too (exact duplicates are always removed)
    threshold: float = 0.8  # estimated Jaccard similarity of shingles at which a document is a near duplicate
    num_perm: int = 64  # MinHash permutations (the signature's length)
    window: int = 100_000  # near duplicates are sought among the last this many kept documents; 0: all

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"the near-duplicate threshold must lie in (0, 1], got {self.threshold}")
        if self.window < 0:
            raise ValueError(f"the near-duplicate window must be >= 0 (0: no limit), got {self.window}")


@dataclass
class CorpusConfig:
    inputs: list[Path]  # text files (a document a line) or JSONL (a document a record); either may be .gz
    out: Path  # the directory of shards and manifest.json (and, while a run is unfinished, progress.json)
    tokenizer: Path  # a directory holding tokenizer.json (``TextTokenizer.load``)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # worker processes; 0: all in this one
    shard_tokens: int = 50_000_000  # a shard is closed at the first line boundary at or past this many tokens
    unit: str = "document"  # "sentence": every sentence of a document becomes a document of its own
    text_field: str = "text"  # the JSONL field that holds the text
    filters: FilterConfig = field(default_factory=FilterConfig)  # length and quality thresholds
    dedup: DedupConfig = field(default_factory=DedupConfig)  # near-duplicate settings
    resume: bool = False  # continue the interrupted run in ``out`` (an error if it was a different run)
    overwrite: bool = False  # delete a previous run's shards and manifest in ``out`` and start again
    progress: bool = True  # show a progress bar over the input bytes (only on a terminal)
    batch_lines: int = 2000  # lines in one batch of work for a worker
    batch_bytes: int = 4 << 20  # ... or fewer, when they hold this many bytes

    def __post_init__(self) -> None:
        self.inputs = [Path(p) for p in self.inputs]
        self.out, self.tokenizer = Path(self.out), Path(self.tokenizer)
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.workers < 0 or self.shard_tokens < 1 or self.batch_lines < 1:
            raise ValueError("workers must be >= 0, shard_tokens and batch_lines >= 1")
        if not self.inputs:
            raise ValueError("no input files")


class OutDirError(ValueError):
    """The output directory holds another run (or an unfinished one) and neither --resume nor --overwrite."""
