"""Batch order and padding, shared by every objective and task.

The order of an epoch is a function of (seed, epoch) alone, so a run can be repeated exactly.
With ``lengths`` given, examples of similar length are batched together (within windows of
``bucket_batches`` batches, then the batches themselves are shuffled), which cuts padding for
variable-length fine-tuning data while keeping the order random.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def epoch_batches(
    n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True,
    lengths: Sequence[int] | None = None, bucket_batches: int = 50,
) -> list[list[int]]:
    """Index lists, one per batch, covering all ``n`` examples once."""
    if not shuffle:
        order = list(range(n))
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    if lengths is not None:
        window = batch_size * bucket_batches
        order = [i for start in range(0, n, window)
                 for i in sorted(order[start : start + window], key=lambda j: lengths[j])]
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if lengths is not None:
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[p] for p in perm]
    return batches


def pad(sequences: Sequence[Sequence[int]], pad_id: int, *, to: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence (or to ``to`` tokens, if more): ids (B, T) and padding mask (B, T),
    1 at real tokens."""
    longest = max(to, *(len(s) for s in sequences))
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask
