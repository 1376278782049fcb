"""Settings of the tagging task (``lmcraft finetune --task tag``)."""

from __future__ import annotations

from dataclasses import dataclass

from lmcraft.config import opt
from lmcraft.model.ngrams import NGRAM_LR


@dataclass
class TagOptions:
    scheme: str = opt("BIO", "tag: the tag scheme, BIO or BIOES")
    crf: bool = opt(False, "tag: decode with a CRF layer (Viterbi) instead of each word's own best tag; it "
                           "keeps to the scheme's rules of which tag may follow which (no I-PER after O)")
    label_all: bool = opt(False, "tag: put the loss on every sub-token of a word, not only the first (BIO)")
    ngrams: int = opt(0, "tag: also score the token unigrams and bigrams within two positions of each token (the "
                         "feature CRF's features, one weight per feature and tag, trained by SGD) from a hashed "
                         "table of this many rows (0: off; 1048576 = 2**20 suits Chinese characters, see "
                         "docs/tasks.md)")
    ngram_lr: float = opt(NGRAM_LR, "tag: the SGD learning rate of the n-gram table, which follows the run's "
                                    "schedule (the rest trains by AdamW at --lr); tuned for a batch of 32 "
                                    "sentences: a larger batch averages the loss over more tags, so scale it "
                                    "up with the batch")
