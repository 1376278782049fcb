"""The Transformer of the article's section 4, as one block with two switches.

Features and where they come from:
- scaled dot-product attention, softmax(Q Kᵀ / sqrt(d_k) + M) V, with several heads
  (Vaswani et al. 2017, "Attention Is All You Need"), computed by
  ``torch.nn.functional.scaled_dot_product_attention``;
- the position-wise feed-forward network FFN(x) = act(x W1 + b1) W2 + b2;
- residual connections and LayerNorm after each sub-layer (post-LN, as in the article and in BERT),
  or before it (pre-LN, Xiong et al. 2020) as an option;
- learned positions (BERT, GPT) or fixed sinusoidal positions (Vaswani et al.), or rotary positions
  applied to queries and keys (Su et al. 2021, RoFormer; Llama, Qwen2);
- one ``Block`` with ``causal`` (the decoder's mask M) and ``cross_attention`` (attending to the encoder's
  output H) switches, so that the encoder, the decoder and the encoder-decoder share one code path;
- the options that later checkpoints need, as config fields of that one block: RMSNorm (Zhang & Sennrich
  2019), the SwiGLU feed-forward network (Shazeer 2020), grouped-query attention (Ainslie et al. 2023),
  biases on or off;
- a key/value cache for generation (``KVCache``): each new token attends to the stored keys and values
  of the earlier ones instead of recomputing them;
- unpadded execution (``Unpadded``): in a padded batch, every layer but attention runs on the real tokens
  only, as in the "remove padding" of FasterTransformer and the varlen kernels of FlashAttention.

Notation in shape comments: B batch, T target (query) length, S source (key) length, D d_model,
H heads, Hkv key/value heads, Dh head size (D / H unless set), F feed-forward size, V vocabulary.

The pieces live in files of one job each: ``architecture.py`` (config and sizes), ``layers.py``
(embeddings, norms, feed-forward), ``attention.py`` (attention, KV cache), ``masks.py``, ``unpadded.py``;
this file assembles them into the block and the stack, and re-exports their public names.
"""

from __future__ import annotations

import torch
from torch import nn

from lmcraft.model.architecture import SIZES, TransformerConfig
from lmcraft.model.attention import Attention, KVCache
from lmcraft.model.layers import (
    Embeddings,
    FeedForward,
    Rotary,
    make_norm,
    rotate,
    sinusoidal_table,
    store_linear_weights,
)
from lmcraft.model.masks import attention_mask, positions_in_documents
from lmcraft.model.unpadded import Unpadded

__all__ = [
    "SIZES", "Attention", "Block", "Embeddings", "FeedForward", "KVCache", "Rotary", "Transformer",
    "TransformerConfig", "Unpadded", "attention_mask", "make_norm", "positions_in_documents", "rotate",
    "sinusoidal_table", "store_linear_weights",
]


class Block(nn.Module):
    """Self-attention (masked when causal), optional cross-attention, feed-forward; each sub-layer
    wrapped in dropout, a residual connection and a norm (after it, or before it when norm_first)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm_first = cfg.norm_first
        self.self_attn = Attention(cfg, cross=False)
        self.self_norm = make_norm(cfg)
        self.cross_attn = Attention(cfg, cross=True) if cfg.cross_attention else None
        self.cross_norm = make_norm(cfg) if cfg.cross_attention else None
        self.ffn = FeedForward(cfg)
        self.ffn_norm = make_norm(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def _sublayer(self, x: torch.Tensor, norm: nn.Module, fn, residual: torch.Tensor | None = None) -> torch.Tensor:
        # residual: the rows of x that fn answers, when it answers fewer than it reads (first_only)
        residual = x if residual is None else residual
        if self.norm_first:
            return residual + self.dropout(fn(norm(x)))  # x + F(LN(x))
        return norm(residual + self.dropout(fn(x)))  # LN(x + F(x)), the article's form

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None,
        *,
        is_causal: bool = False,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: tuple[KVCache, int] | None = None,
        unpadded: Unpadded | None = None,
        first_only: bool = False,  # outputs at the first position only: (B, 1, D), or (B, D) when unpadded
    ) -> torch.Tensor:
        residual = None
        if first_only:
            residual = x[unpadded.first] if unpadded is not None else x[:, :1]
        x = self._sublayer(x, self.self_norm,
                           lambda h: self.self_attn(h, self_mask, is_causal=is_causal, rotary=rotary, cache=cache,
                                                    unpadded=unpadded, first_only=first_only),
                           residual)
        if self.cross_attn is not None:
            x = self._sublayer(x, self.cross_norm, lambda h: self.cross_attn(h, memory_mask, memory=memory))
        return self._sublayer(x, self.ffn_norm, self.ffn)


class Transformer(nn.Module):
    """Embeddings and a stack of blocks: an encoder, or a decoder when ``cfg.causal``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg)
        self.rotary = Rotary(cfg) if cfg.position == "rotary" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.final_norm = make_norm(cfg) if cfg.norm_first else nn.Identity()
        self.apply(self._init_weights)
        store_linear_weights(self)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm.
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        padding_mask: torch.Tensor | None = None,  # (B, S), 1 at real tokens; S = cached + T
        segment_ids: torch.Tensor | None = None,  # (B, T)
        *,
        position_ids: torch.Tensor | None = None,  # (B, T); None means cached .. cached + T - 1
        cache: KVCache | None = None,  # keys and values of earlier positions (generation)
        memory: torch.Tensor | None = None,  # (B, S, D) encoder output for cross-attention
        memory_padding_mask: torch.Tensor | None = None,  # (B, S)
        document_ids: torch.Tensor | None = None,  # (B, T): packed documents; none attends to another
        first_only: bool = False,  # return only the first position's state, (B, 1, D)
    ) -> torch.Tensor:
        """Hidden states (B, T, D).

        With ``first_only`` the last block computes its output at the first position alone (keys and values
        still come from every position), and (B, 1, D) comes back: all that a classifier pooled on [CLS]
        reads. Its attention output, feed-forward and norms then run on one row per sequence instead of T,
        which saves most of a block's work, in training and in inference; the values are those of the full
        computation (to float rounding).
        """
        if first_only and cache is not None:
            raise ValueError("first_only is for encoders read at their first position, not for cached generation")
        length = input_ids.shape[1]
        offset = cache.length if cache is not None else 0
        explicit_positions = position_ids
        if position_ids is None and offset:
            position_ids = torch.arange(offset, offset + length, device=input_ids.device)[None]
        if document_ids is not None and position_ids is None:
            position_ids = positions_in_documents(document_ids)  # every document starts at position 0
        x = self.embed(input_ids, segment_ids, position_ids)  # (B, T, D)
        rotary = None
        if self.rotary is not None:
            if position_ids is None:
                position_ids = torch.arange(length, device=input_ids.device)[None]
            rotary = self.rotary(position_ids)
        unpadded = None
        if cache is None and memory is None and document_ids is None and explicit_positions is None \
                and Unpadded.worth_it(padding_mask) \
                and (not first_only or bool(padding_mask[:, 0].all())):  # type: ignore[index]  (worth_it: a mask)
            unpadded = Unpadded(padding_mask, causal=self.cfg.causal)  # type: ignore[arg-type]  (its own masks)
            x = unpadded.unpad(x)  # (N, D)
            mask, is_causal = None, False
        else:
            mask, is_causal = attention_mask(padding_mask, length, causal=self.cfg.causal, device=x.device,
                                             offset=offset)
        if document_ids is not None:
            if cache is not None:
                raise ValueError("packed documents (document_ids) are for training, not for cached generation")
            same = (document_ids[:, :, None] == document_ids[:, None, :])[:, None]  # (B, 1, T, T)
            if is_causal:
                mask = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()[None, None]
            mask = same if mask is None else mask & same
            is_causal = False
        memory_mask = None
        if memory_padding_mask is not None and not bool(memory_padding_mask.all()):
            memory_mask = memory_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, mask, is_causal=is_causal, memory=memory, memory_mask=memory_mask, rotary=rotary,
                      cache=(cache, i) if cache is not None else None, unpadded=unpadded,
                      first_only=first_only and i == last)
        if cache is not None:
            cache.length += length
        x = self.final_norm(x)
        if first_only and unpadded is not None:
            return x[:, None]  # (B, D) -> (B, 1, D)
        return x if unpadded is None else unpadded.pad(x)  # (B, T, D); zeros at padding when unpadded
