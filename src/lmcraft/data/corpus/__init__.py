"""The streaming corpus pipeline: raw text files -> normalised, filtered, deduplicated, tokenized shards.

``run_corpus(CorpusConfig(...))`` writes ``shard-NNNNN.bin`` / ``.idx`` and ``manifest.json``;
``TokenShards(dir)`` reads them back. ``lmcraft data corpus`` is the command line (``cli.add_corpus_parser``).
The steps: ``lmcraft.text``'s ``normalize`` and ``split_sentences``, then one module each: ``filters``, ``dedup``,
``shards``; ``pipeline`` streams the files through them, in parallel, with checkpoints to resume from.
"""

from lmcraft.data.corpus.config import CorpusConfig, DedupConfig, OutDirError
from lmcraft.data.corpus.dedup import ExactSet, MinHasher, NearDupIndex, digest64, shingle_hashes
from lmcraft.data.corpus.filters import FILTERS, FilterConfig, rejected_by
from lmcraft.data.corpus.pipeline import run_corpus
from lmcraft.data.corpus.shards import ShardInfo, TokenShards, token_dtype

__all__ = [
    "FILTERS",
    "CorpusConfig",
    "DedupConfig",
    "ExactSet",
    "FilterConfig",
    "MinHasher",
    "NearDupIndex",
    "OutDirError",
    "ShardInfo",
    "TokenShards",
    "digest64",
    "rejected_by",
    "run_corpus",
    "shingle_hashes",
    "token_dtype",
]
