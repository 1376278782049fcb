"""Deterministic train / dev / test splits by a hash of the text.

The split of an example depends on its text alone, so every run and every machine sees the same split,
and a text that occurs twice can never fall into two splits.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "dev", "test")


def split_of(text: str, *, dev: float = 0.1, test: float = 0.1) -> str:
    """'train', 'dev' or 'test' for this text; fractions are of the whole."""
    if not (0 <= dev < 1 and 0 <= test < 1 and dev + test < 1):
        raise ValueError(f"dev={dev} and test={test} must be fractions that leave some training data")
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if bucket < test:
        return "test"
    if bucket < test + dev:
        return "dev"
    return "train"
