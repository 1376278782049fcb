"""Multi-head attention (Vaswani et al. 2017) through ``F.scaled_dot_product_attention``, with grouped-query
heads (Ainslie et al. 2023), rotary positions, cross-attention and the key/value cache of generation (the
masks are ``masks.py``).

Notation in shape comments: B batch, T target (query) length, S source (key) length, D d_model,
H heads, Hkv key/value heads, Dh head size (D / H unless set), F feed-forward size, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmcraft.model.architecture import TransformerConfig
from lmcraft.model.layers import rotate
from lmcraft.model.unpadded import Unpadded


class KVCache:
    """Keys and values of the positions seen so far, for every layer, in buffers filled in place.

    ``length`` is the number of positions stored; the Transformer advances it after each forward.
    """

    def __init__(self, cfg: TransformerConfig, batch: int, max_len: int, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        shape = (batch, cfg.kv_heads, max_len, cfg.dh)  # (B, Hkv, L, Dh)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.max_len = max_len
        self.length = 0

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new positions' k, v (B, Hkv, T, Dh); return all keys and values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} positions; {end} were asked for")
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the rows ``index`` (beam search picks which hypotheses continue). Only the filled positions
        are moved, in place: a beam step copies what it has written so far, not the whole buffer."""
        n = self.length
        for buffer in (*self.keys, *self.values):
            buffer[:, :, :n] = buffer[:, :, :n].index_select(0, index)

    def repeat(self, times: int) -> None:
        """Repeat every row ``times`` times in place of the one (a prompt read once, then shared by its beams)."""
        self.keys = [k.repeat_interleave(times, 0) for k in self.keys]
        self.values = [v.repeat_interleave(times, 0) for v in self.values]


class Attention(nn.Module):
    """Multi-head attention. Self-attention projects Q, K, V with one fused matmul; with fewer key/value
    heads than query heads, each key/value head serves a group of query heads."""

    def __init__(self, cfg: TransformerConfig, *, cross: bool) -> None:
        super().__init__()
        self.n_head, self.n_kv, self.dh = cfg.n_head, cfg.kv_heads, cfg.dh
        self.cross = cross
        q_size, kv_size = self.n_head * self.dh, self.n_kv * self.dh
        self.sizes = (q_size, kv_size, kv_size)
        if cross:
            self.query = nn.Linear(cfg.d_model, q_size, bias=cfg.qkv_bias)
            self.key_value = nn.Linear(cfg.d_model, 2 * kv_size, bias=cfg.qkv_bias)
        else:
            self.qkv = nn.Linear(cfg.d_model, q_size + 2 * kv_size, bias=cfg.qkv_bias)
        self.out = nn.Linear(q_size, cfg.d_model, bias=cfg.out_bias)
        self.attn_dropout = cfg.dropout

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, n, self.dh).transpose(1, 2)  # (B, n, T, Dh)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D)
        mask: torch.Tensor | None,  # (B, 1, T or 1, S) bool, True where attending is allowed
        *,
        is_causal: bool = False,
        memory: torch.Tensor | None = None,  # (B, S, D) encoder output, for cross-attention
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,  # cos, sin (B, 1, T, Dh)
        cache: tuple[KVCache, int] | None = None,  # the cache and this block's layer index
        unpadded: Unpadded | None = None,  # x holds the (N, D) real tokens of a padded batch
        first_only: bool = False,  # answer only the first position: (B, 1, D), or (B, D) when unpadded
    ) -> torch.Tensor:
        if self.cross:
            assert memory is not None, "cross-attention needs the encoder output"
            k, v = self.key_value(memory).chunk(2, dim=-1)
            return self.out(self._attend(self.query(x), k, v, mask, is_causal, rotary, cache))
        qkv = self.qkv(x)  # (B, T, H·Dh + 2·Hkv·Dh), or (N, ...) unpadded
        if unpadded is not None:
            def core(part: torch.Tensor, part_mask: torch.Tensor | None, part_causal: bool) -> torch.Tensor:
                t = part.shape[1]
                part_rotary = None if rotary is None else (rotary[0][..., :t, :], rotary[1][..., :t, :])
                return self._attend(*part.split(self.sizes, dim=-1), part_mask, part_causal, part_rotary, None,
                                    first_only)

            attend = unpadded.attend_first if first_only else unpadded.attend
            return self.out(attend(qkv, core))  # (N, D), or (B, D) first_only
        return self.out(self._attend(*qkv.split(self.sizes, dim=-1), mask, is_causal, rotary, cache,
                                     first_only))  # (B, T or 1, D)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,  # (B, T, H·Dh), (B, S, Hkv·Dh) × 2
        mask: torch.Tensor | None, is_causal: bool, rotary: tuple[torch.Tensor, torch.Tensor] | None,
        cache: tuple[KVCache, int] | None, first_only: bool = False,
    ) -> torch.Tensor:
        q, k, v = self._heads(q, self.n_head), self._heads(k, self.n_kv), self._heads(v, self.n_kv)
        if rotary is not None:
            q, k = rotate(q, *rotary), rotate(k, *rotary)
        if first_only:  # one query, at position 0, against every key
            q = q[:, :, :1]  # (B, H, 1, Dh)
            if mask is not None:
                mask = mask[:, :, :1]  # (B, 1, 1, S)
        if cache is not None:
            k, v = cache[0].store(cache[1], k, v)  # (B, Hkv, S, Dh): the earlier positions too
        if self.n_kv != self.n_head:
            k = k.repeat_interleave(self.n_head // self.n_kv, dim=1)  # (B, H, S, Dh)
            v = v.repeat_interleave(self.n_head // self.n_kv, dim=1)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )  # (B, H, T, Dh)
        b, _, t, _ = y.shape
        return y.transpose(1, 2).reshape(b, t, -1)  # (B, T, H·Dh)
