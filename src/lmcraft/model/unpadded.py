"""Unpadded execution: in a padded batch, every layer but attention runs on the real tokens only, as in the
"remove padding" of FasterTransformer and the varlen kernels of FlashAttention.

Notation in shape comments: B batch, T target (query) length, S source (key) length, D d_model,
H heads, Hkv key/value heads, Dh head size (D / H unless set), F feed-forward size, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmcraft.model.masks import attention_mask


class Unpadded:
    """The N real tokens of a padded (B, T) batch, and how attention reaches them.

    The linear layers, norms, dropout and the FFN work on the (N, D) real rows alone. Attention runs on
    groups of ``GROUP`` sequences of similar length (the batch sorted by length), each padded only to its
    own longest member, and its outputs go back to the N rows. The real tokens' outputs are those of the
    padded computation (to float rounding), while which examples share a batch, and so the training, is
    unchanged: shuffled batches of mixed lengths cost little more than length-sorted ones.
    """

    GROUP = 8  # sequences per attention call
    WORTH_IT = 0.85  # unpad below this share of real tokens; above it the gathers cost more than they save

    def __init__(self, padding_mask: torch.Tensor, *, causal: bool) -> None:  # (B, T), 1 at real tokens
        real = padding_mask.bool()
        self.batch, self.length = batch, length = real.shape
        self.index = real.reshape(-1).nonzero().squeeze(1)  # (N,) flat positions b·T + t of the real tokens
        row = torch.full((batch * length,), -1, dtype=torch.long, device=real.device)
        row[self.index] = torch.arange(len(self.index), device=real.device)
        row = row.view(batch, length)  # (B, T): each real token's row among the N, -1 at padding
        extent = (real * torch.arange(1, length + 1, device=real.device)).amax(1)  # (B,) last real position + 1
        order = extent.argsort(descending=True).tolist()
        self.groups: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]] = []
        placed = []
        for first in range(0, batch, self.GROUP):
            members = order[first : first + self.GROUP]
            span = max(int(extent[members].max()), 1)
            rows = row[members, :span]  # (b, t)
            valid = rows >= 0
            mask, is_causal = attention_mask(valid, span, causal=causal, device=real.device)
            self.groups.append((rows.clamp(min=0), valid, mask, is_causal))
            placed.append(rows[valid])
        self.inverse = torch.cat(placed).argsort()  # group outputs, concatenated, back to the order of the N rows
        self.first = row[:, 0]  # (B,) each sequence's first token among the N rows (inputs are right-padded)
        self.first_inverse = torch.tensor(order, device=real.device).argsort()  # group order -> batch order

    @classmethod
    def worth_it(cls, padding_mask: torch.Tensor | None) -> bool:
        if padding_mask is None or torch.compiler.is_compiling():  # data-dependent shapes break a graph
            return False
        return int(padding_mask.sum()) < cls.WORTH_IT * padding_mask.numel()

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, x.shape[-1]).index_select(0, self.index)  # (B, T, E) -> (N, E)

    def pad(self, rows: torch.Tensor) -> torch.Tensor:
        out = rows.new_zeros(self.batch * self.length, rows.shape[-1])
        return out.index_copy(0, self.index, rows).view(self.batch, self.length, -1)  # (N, E) -> (B, T, E)

    def attend(self, qkv: torch.Tensor,
               core: Callable[[torch.Tensor, torch.Tensor | None, bool], torch.Tensor]) -> torch.Tensor:
        """``core(qkv_group (b, t, E), mask, is_causal) -> (b, t, E')`` on every group; (N, E) -> (N, E')."""
        outputs = [core(qkv[rows], mask, is_causal)[valid] for rows, valid, mask, is_causal in self.groups]
        return torch.cat(outputs).index_select(0, self.inverse)

    def attend_first(self, qkv: torch.Tensor,
                     core: Callable[[torch.Tensor, torch.Tensor | None, bool], torch.Tensor]) -> torch.Tensor:
        """As ``attend``, with ``core`` answering only each sequence's first position, (b, 1, E'):
        (N, E) -> (B, E'), in batch order."""
        outputs = [core(qkv[rows], mask, is_causal)[:, 0] for rows, _, mask, is_causal in self.groups]
        return torch.cat(outputs).index_select(0, self.first_inverse)
