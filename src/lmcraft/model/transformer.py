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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Named sizes are data, not subclasses. d_ff is 4 × d_model throughout, as in BERT.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "d_model": 128, "n_head": 2, "d_ff": 512},
    "mini": {"n_layer": 4, "d_model": 256, "n_head": 4, "d_ff": 1024},
    "small": {"n_layer": 4, "d_model": 512, "n_head": 8, "d_ff": 2048},
    "base": {"n_layer": 12, "d_model": 768, "n_head": 12, "d_ff": 3072},
}


@dataclass
class TransformerConfig:
    """Architecture of one Transformer stack (encoder or decoder)."""

    vocab_size: int  # number of token ids the embedding table holds
    n_layer: int = 4  # number of blocks
    d_model: int = 256  # width of the residual stream
    n_head: int = 4  # attention heads; d_model must divide evenly by it
    d_ff: int = 1024  # hidden width of the feed-forward network
    max_len: int = 512  # longest sequence the position table covers
    n_segment: int = 2  # segment (token type) embeddings for text pairs; 0 turns them off
    dropout: float = 0.1  # dropout on embeddings, attention weights and sub-layer outputs
    norm_first: bool = False  # False: post-LN (the article, BERT); True: pre-LN (GPT-2, more stable when deep)
    position: str = "learned"  # "learned" table, fixed "sinusoidal" encodings, or "rotary"
    activation: str = "gelu"  # "gelu" (erf), "gelu_tanh", "relu", or "swiglu" (gated, three matrices)
    norm_eps: float = 1e-12  # epsilon of the norms
    causal: bool = False  # True makes a decoder: no position attends to a later one
    cross_attention: bool = False  # True adds attention to an encoder's output (encoder-decoder)
    pad_id: int = 0  # token id of padding, kept at a zero embedding gradient-free
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
    n_kv_head: int = 0  # key/value heads (grouped-query attention); 0 means as many as n_head
    head_dim: int = 0  # size of one head; 0 means d_model // n_head
    rope_theta: float = 10000.0  # base of the rotary frequencies
    position_offset: int = 0  # first position index (RoBERTa counts from pad_id + 1)
    qkv_bias: bool = True  # biases of the query, key and value projections
    out_bias: bool = True  # bias of the attention output projection
    ffn_bias: bool = True  # biases of the feed-forward network

    def __post_init__(self) -> None:
        if self.n_layer < 1:
            raise ValueError(f"n_layer must be at least 1, not {self.n_layer}")
        if not self.head_dim and self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} does not divide into n_head={self.n_head} heads")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}")
        choices = {"position": ("learned", "sinusoidal", "rotary"), "norm": ("layernorm", "rmsnorm"),
                   "activation": ("gelu", "gelu_tanh", "relu", "swiglu")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")

    @property
    def dh(self) -> int:
        return self.head_dim or self.d_model // self.n_head

    @property
    def max_tokens(self) -> int:
        """The longest input, in tokens (RoBERTa's position table starts at an offset)."""
        return self.max_len - self.position_offset

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @classmethod
    def from_size(cls, size: str, vocab_size: int, **overrides: object) -> TransformerConfig:
        if size not in SIZES:
            raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
        return cls(vocab_size=vocab_size, **{**SIZES[size], **overrides})  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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
