"""Token embeddings from corpus co-occurrence statistics: a cheap start for pretraining on small compute.

MLM spends its first thousands of steps learning what a unigram model knows, and only then starts to
use the context (docs/quickstart.md). Word co-occurrence carries much of what the embedding table ends
up holding, and it can be counted in seconds. Following Levy, Goldberg and Dagan (2015, "Improving
distributional similarity with lessons learned from word embeddings"):

- count pairs of tokens at most ``window`` apart within a segment (no pair crosses a special token),
  each weighted by 1 / distance;
- positive pointwise mutual information, with the context distribution raised to the power 0.75:
  PPMI(w, c) = max(0, log( #(w, c) · Σ_c' #(c')^0.75 / (#(w) · #(c)^0.75) )),
  where #(w) and #(c) are the row and column sums of the (symmetric) count matrix;
- a rank-``dim`` truncated SVD, PPMI ≈ U S Vᵀ, and the embedding U · S^½ (the symmetric weighting).

The vectors are rescaled to the model's initialisation scale, so that the first LayerNorm sees token and
position embeddings of the same size as with a random start; tokens never seen keep their random rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils.extmath import randomized_svd


def cooccurrence_counts(sequences: Iterable[Sequence[int]], vocab_size: int, *, window: int,
                        special_ids: Sequence[int] = ()) -> sp.csr_matrix:
    """(V, V) symmetric counts: Σ 1/d over pairs of tokens d ≤ ``window`` apart, never across a special
    token (a [SEP] between packed documents ends one segment and starts the next)."""
    stream = np.fromiter((t for seq in sequences for t in (*seq, -1)), dtype=np.int64)  # -1 ends each sequence
    boundary = stream < 0
    if len(special_ids):
        boundary |= np.isin(stream, np.asarray(special_ids, dtype=np.int64))
    segment = np.cumsum(boundary)  # tokens of one segment share a number; a boundary starts the next one
    rows, cols, weights = [], [], []
    for d in range(1, window + 1):
        left, right = stream[:-d], stream[d:]
        keep = (segment[:-d] == segment[d:]) & ~boundary[:-d] & ~boundary[d:]
        a, b = left[keep], right[keep]
        w = np.full(len(a), 1.0 / d)
        rows += [a, b]
        cols += [b, a]
        weights += [w, w]
    counts = sp.coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(vocab_size, vocab_size))
    return counts.tocsr()  # duplicates summed


def ppmi(counts: sp.csr_matrix, *, alpha: float = 0.75) -> sp.csr_matrix:
    """Positive PMI of a symmetric count matrix, with context-distribution smoothing ``alpha``."""
    word = np.asarray(counts.sum(axis=1)).ravel()  # #(w)
    context = np.asarray(counts.sum(axis=0)).ravel() ** alpha
    context = context / context.sum()  # P_alpha(c)
    coo = counts.tocoo()
    # log P(w, c) / (P(w) P_alpha(c)) = log #(w, c) / (#(w) P_alpha(c))
    values = np.log(coo.data / (word[coo.row] * context[coo.col]))
    keep = values > 0
    return sp.csr_matrix((values[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape)


def cooccurrence_embeddings(
    sequences: Iterable[Sequence[int]], vocab_size: int, dim: int, *, window: int = 5,
    special_ids: Sequence[int] = (), seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, dim) PPMI-SVD vectors and a (V,) bool mask of the tokens that occur in some pair; the rows
    of the other tokens are zero. The vectors are not yet scaled (see ``init_token_embeddings``)."""
    counts = cooccurrence_counts(sequences, vocab_size, window=window, special_ids=special_ids)
    seen = np.asarray(counts.sum(axis=1)).ravel() > 0
    if seen.sum() <= dim:
        raise ValueError(f"co-occurrence embeddings of size {dim} need more than {dim} distinct tokens in the "
                         f"corpus; it has {int(seen.sum())}")
    u, s, _ = randomized_svd(ppmi(counts), dim, n_iter=5, random_state=seed)
    vectors = u * np.sqrt(s)  # (V, dim)
    return torch.from_numpy(vectors).float(), torch.from_numpy(seen)


@torch.no_grad()
def init_token_embeddings(embedding: torch.nn.Embedding, vectors: torch.Tensor, seen: torch.Tensor,
                          *, std: float = 0.02) -> int:
    """Copy ``vectors`` into the rows of ``embedding`` whose tokens were ``seen``, rescaled so that their
    entries have standard deviation ``std`` (the random initialisation's); the padding row stays zero.
    Returns the number of rows set."""
    scaled = vectors[seen] / vectors[seen].std() * std
    embedding.weight[seen] = scaled.to(embedding.weight.dtype)
    if embedding.padding_idx is not None:
        embedding.weight[embedding.padding_idx] = 0
    return int(seen.sum())
