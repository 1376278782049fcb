"""Hashed token n-gram features: the unigrams and bigrams in a window of two around each position.

This is the feature set of the classic Chinese NER CRF (the character, its neighbours up to two away, the
bigrams ending at, starting at and spanning the position), made a module: each n-gram's key is hashed into
one embedding table (the "hashing trick" of Weinberger et al. 2009, so no feature vocabulary has to be
stored), the templates' vectors are concatenated and projected to one score per label. A small encoder
trained for minutes learns these word fragments slowly from context; a table lookup holds them at once.

Over Chinese characters the n-grams are word fragments (王洪, 北京, 委员); over sub-words they still
work, but pay off less.
"""

from __future__ import annotations

import torch
from torch import nn

# The templates as offsets from the position: one offset a unigram, two a bigram of those two positions.
WINDOW: tuple[tuple[int, ...], ...] = ((-2,), (-1,), (0,), (1,), (2,), (-1, 0), (0, 1), (-1, 1))
REACH = 2  # the farthest offset in WINDOW
PRIME = 2_147_483_647  # 2**31 - 1, the modulus of the hash


class HashedNgrams(nn.Module):
    """Scores (B, T, n_out) from the token ids alone: the WINDOW n-grams of each position, looked up in a
    hashed table of ``buckets`` rows of ``dim`` columns, concatenated, dropout, linear.

    Positions past either end of the input read ``pad_id``, as a padded batch's tail does, so a sentence's
    features do not depend on how long the others in its batch are.
    """

    def __init__(self, vocab_size: int, pad_id: int, buckets: int, dim: int, n_out: int,
                 dropout: float) -> None:
        super().__init__()
        if buckets < 1:
            raise ValueError(f"a hashed n-gram table needs at least one row, not {buckets}")
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.table = nn.Embedding(buckets, dim)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(len(WINDOW) * dim, n_out, bias=False)
        nn.init.normal_(self.table.weight, std=0.02)
        nn.init.normal_(self.proj.weight, std=0.02)

    def buckets_of(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The table row of each template's n-gram at each position: (B, T) -> (B, T, K)."""
        t = input_ids.shape[1]
        edge = torch.full_like(input_ids[:, :1], self.pad_id).expand(-1, REACH)  # (B, REACH)
        padded = torch.cat([edge, input_ids, edge], 1)  # (B, T + 2 * REACH)
        none = self.vocab_size  # the second token of a unigram: an id no token has
        base = self.vocab_size + 1
        keys = []
        for k, offsets in enumerate(WINDOW):
            first = padded[:, REACH + offsets[0]: REACH + offsets[0] + t]  # (B, T)
            second = padded[:, REACH + offsets[1]: REACH + offsets[1] + t] if len(offsets) > 1 else none
            keys.append(((k + 1) * base + first) * base + second)  # one number per (template, n-gram)
        key = torch.stack(keys, -1) % PRIME  # (B, T, K), below 2**31 so that the product fits in int64
        return key * 2654435761 % PRIME % self.table.num_embeddings  # Knuth's multiplicative mixing

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        features = self.table(self.buckets_of(input_ids)).flatten(2)  # (B, T, K, E) -> (B, T, K * E)
        return self.proj(self.dropout(features))  # (B, T, n_out)
