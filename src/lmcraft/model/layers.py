"""The parts of a Transformer block other than attention: norms, the embeddings (learned, sinusoidal or
rotary positions), the feed-forward network, and the (in, out) memory layout of linear weights.

Notation in shape comments: B batch, T target (query) length, S source (key) length, D d_model,
H heads, Hkv key/value heads, Dh head size (D / H unless set), F feed-forward size, V vocabulary.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmcraft.model.architecture import TransformerConfig


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(...), shape (max_len, D)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]  # (L, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])
    return table


def store_linear_weights(module: nn.Module, *, transposed: bool = True) -> nn.Module:
    """Lay the (out, in) weight of every linear layer in ``module`` in memory as its (in, out) transpose
    (or back in plain row-major order, ``transposed=False``), in place; returns ``module``.

    Values, shapes, parameters and state dicts stay those of ``nn.Linear``: only the strides change, to
    (1, out), and they survive ``load_state_dict``, ``.to()``, deep copies and optimizer states. F.linear
    then multiplies x (N, in) by a row-major (in, out) matrix, which MKL does faster on this project's
    CPUs than the transpose of a row-major (out, in) one when x has few rows (a decode step has one; see
    docs/performance.md), and as fast or a few per cent faster at training sizes. FSDP shards only
    row-major parameters, so the sharded training puts them back.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Linear) and layer.out_features > 1:
            weight = layer.weight.data  # (out, in)
            if transposed and weight.stride(-1) == 1:
                layer.weight.data = weight.t().contiguous().t()  # stored (in, out)
            elif not transposed and not weight.is_contiguous():
                layer.weight.data = weight.contiguous()
    return module


def make_norm(cfg: TransformerConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)  # x / sqrt(mean(x²) + eps) · g
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)


class Embeddings(nn.Module):
    """Token + position (+ segment) embeddings, then LayerNorm (post-LN only) and dropout. Rotary
    positions are not added here but applied to queries and keys in attention."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.position = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.position == "learned" else None
        if cfg.position == "sinusoidal":
            self.register_buffer("position_table", sinusoidal_table(cfg.max_len, cfg.d_model), persistent=False)
        self.segment = nn.Embedding(cfg.n_segment, cfg.d_model) if cfg.n_segment else None
        # Pre-LN stacks normalise inside every block, so the embedding sum goes in raw.
        self.norm = nn.Identity() if cfg.norm_first else make_norm(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.kind = cfg.position
        self.offset = cfg.position_offset
        self.max_len = cfg.max_len

    def forward(
        self, input_ids: torch.Tensor, segment_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,  # (B or 1, T); None means 0 .. T-1
    ) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.token(input_ids)  # (B, T, D)
        if self.kind != "rotary":
            table = self.position.weight if self.position is not None else self.position_table.to(x.dtype)
            if position_ids is None:
                if length + self.offset > self.max_len:
                    raise ValueError(f"sequence of {length} tokens is longer than the model's max_len="
                                     f"{self.max_len - self.offset}")
                x = x + table[self.offset : self.offset + length]  # a view: positions 0 .. T-1
            else:
                index = position_ids + self.offset
                if int(index.max()) >= self.max_len:
                    raise ValueError(f"position {int(index.max())} is beyond the model's max_len={self.max_len}")
                x = x + table[index]
        if self.segment is not None:  # a single text is segment 0 throughout, as in BERT
            x = x + (self.segment(segment_ids) if segment_ids is not None else self.segment.weight[0])
        return self.dropout(self.norm(x))


class Rotary(nn.Module):
    """Rotary position embedding: each pair of query/key features (i, i + Dh/2) is rotated by the angle
    pos · θ^(-2i/Dh), so that q·k depends on the positions only through their difference."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.dh, 2, dtype=torch.float32) / cfg.dh)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = position_ids.float()[..., None] * self.inv_freq  # (B, T, Dh/2)
        angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, Dh)
        return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)  # (x1, x2) -> (-x2, x1)
    return (x * cos + rotated * sin).to(x.dtype)


class FeedForward(nn.Module):
    """FFN(x) = act(x W1 + b1) W2 + b2, or with SwiGLU: (silu(x Wg) ⊙ x W1) W2."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.ffn_bias)
        self.gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.ffn_bias) if cfg.activation == "swiglu" else None
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.ffn_bias)
        acts = {"gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"), "relu": nn.ReLU(), "swiglu": nn.SiLU()}
        self.act = acts[cfg.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            return self.down(self.act(self.gate(x)) * self.up(x))
        return self.down(self.act(self.up(x)))  # (B, T, F) -> (B, T, D)
