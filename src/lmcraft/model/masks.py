"""Attention masks: padding, the decoder's causal mask M, cached positions, and packed documents' positions.

Notation in shape comments: B batch, T target (query) length, S source (key) length, D d_model,
H heads, Hkv key/value heads, Dh head size (D / H unless set), F feed-forward size, V vocabulary.
"""

from __future__ import annotations

import torch


def positions_in_documents(document_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids of packed sequences -> each token's position within its own document."""
    index = torch.arange(document_ids.shape[1], device=document_ids.device).expand_as(document_ids)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(1).values  # (B, T) start of own document
    return index - first


def attention_mask(
    padding_mask: torch.Tensor | None, length: int, *, causal: bool, device: torch.device, offset: int = 0
) -> tuple[torch.Tensor | None, bool]:
    """Turn a (B, S) padding mask (True/1 at real tokens; S = offset + length, the cached positions
    first) into an SDPA mask for ``length`` new queries.

    Returns (mask, is_causal). Without padding and without cached positions the mask is None so that SDPA
    may pick a fused kernel. Each position may always attend to itself, so that a query row at a padding
    position is never fully masked (a fully masked softmax row would give NaN); real positions are
    unaffected by this.
    """
    # Under torch.compile the mask is always built: reading the mask's values would break the graph.
    no_padding = padding_mask is None or (not torch.compiler.is_compiling() and bool(padding_mask.all()))
    if no_padding and (offset == 0 or not causal):
        return None, causal
    if no_padding and length == 1:
        return None, False  # one new query may see every cached position
    total = offset + length
    query_pos = torch.arange(offset, total, device=device)[:, None]  # (T, 1)
    key_pos = torch.arange(total, device=device)[None, :]  # (1, S)
    mask = (key_pos == query_pos)[None, None]  # (1, 1, T, S)
    if not no_padding:
        mask = mask | padding_mask.bool()[:, None, None, :]  # (B, 1, T, S)
    elif not causal:
        mask = torch.ones_like(mask)
    if causal:
        mask = mask & (key_pos <= query_pos) if not no_padding else (key_pos <= query_pos)[None, None]
    return mask, False
