"""Settings of the tagging task (``lmcraft finetune --task tag``)."""

from __future__ import annotations

from dataclasses import dataclass

from lmcraft.config import opt


@dataclass
class TagOptions:
    scheme: str = opt("BIO", "tag: the tag scheme, BIO or BIOES")
    crf: bool = opt(False, "tag: decode with a CRF layer (Viterbi) instead of each word's own best tag")
    label_all: bool = opt(False, "tag: put the loss on every sub-token of a word, not only the first (BIO)")
