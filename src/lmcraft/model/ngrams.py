"""Hashed token n-gram features: the unigrams and bigrams in a window of two around each position.

This is the feature set of the classic Chinese NER CRF (the character, its neighbours up to two away, the
bigrams ending at, starting at and spanning the position), made a module: each n-gram's key is hashed into
one table (the "hashing trick" of Weinberger et al. 2009, so no feature vocabulary has to be stored) that
holds one score per label, and the templates' scores are summed. A small encoder trained for minutes
learns these word fragments slowly from context; a table lookup holds them at once.

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
# The table's SGD learning rate, for a loss averaged over a batch's tags (32 sentences: ~1,200 tags, so one
# occurrence of an n-gram moves its row by at most about 0.25). 30 and 1,000 gave dev F1 0.74 and 0.79 where 300 gave
# 0.82 (the table alone, 12,000 People's Daily sentences, bench/ner_table_alone.py; docs/tasks.md).
NGRAM_LR = 300.0


class HashedNgrams(nn.Module):
    """Scores (B, T, n_out) from the token ids alone: each WINDOW n-gram of a position looks up one score per
    label in a hashed table of ``buckets`` rows, and the templates' scores are summed. This is the linear
    model of the feature CRF, one weight per (feature, label), with hashing in place of a feature index.

    Positions past either end of the input read ``pad_id``, as a padded batch's tail does, so a sentence's
    features do not depend on how long the others in its batch are.

    The table's gradient is sparse (only the rows a batch reads), and the optimiser trains it by plain SGD at
    ``sgd_lr`` (``train/optim.py``), which moves a row in proportion to how often its n-gram occurs. Adam
    gives an n-gram seen once about as large a move as one seen in every batch, which probably lets the rare
    ones carry too much (dev F1 0.805 with Adam and 0.778 with Adagrad against 0.820 with SGD, the table
    alone and one seed each, bench/ner_table_alone.py; docs/tasks.md).
    """

    def __init__(self, vocab_size: int, pad_id: int, buckets: int, n_out: int, sgd_lr: float) -> None:
        super().__init__()
        if buckets < 1:
            raise ValueError(f"a hashed n-gram table needs at least one row, not {buckets}")
        if sgd_lr <= 0:
            raise ValueError(f"the n-gram table's SGD learning rate must be positive, not {sgd_lr}")
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.table = nn.Embedding(buckets, n_out, sparse=True)
        nn.init.zeros_(self.table.weight)  # a linear model: every feature starts with no say
        self.table.sgd_lr = sgd_lr  # type: ignore[assignment]  # read by train/optim.py

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
        return self.table(self.buckets_of(input_ids)).sum(2)  # (B, T, K, n_out) -> (B, T, n_out)
