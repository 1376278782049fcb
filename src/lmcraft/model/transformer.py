"""The Transformer of the article's section 4, as one block with two switches.

Features and where they come from:
- scaled dot-product attention, softmax(Q Kᵀ / sqrt(d_k) + M) V, with several heads
  (Vaswani et al. 2017, "Attention Is All You Need"), computed by
  ``torch.nn.functional.scaled_dot_product_attention``;
- the position-wise feed-forward network FFN(x) = act(x W1 + b1) W2 + b2;
- residual connections and LayerNorm after each sub-layer (post-LN, as in the article and in BERT),
  or before it (pre-LN, Xiong et al. 2020) as an option;
- learned positions (BERT, GPT) or fixed sinusoidal positions (Vaswani et al.);
- one ``Block`` with ``causal`` (the decoder's mask M) and ``cross_attention`` (attending to the encoder's
  output H) switches, so that the encoder, the decoder and the encoder-decoder share one code path.

Notation in shape comments: B batch, T target (query) length, S source (key) length, D d_model,
H heads, Dh head size (D / H), F feed-forward size, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

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
    position: str = "learned"  # "learned" table or fixed "sinusoidal" encodings
    activation: str = "gelu"  # "gelu" or "relu" in the feed-forward network
    norm_eps: float = 1e-12  # LayerNorm epsilon
    causal: bool = False  # True makes a decoder: no position attends to a later one
    cross_attention: bool = False  # True adds attention to an encoder's output (encoder-decoder)
    pad_id: int = 0  # token id of padding, kept at a zero embedding gradient-free

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} does not divide into n_head={self.n_head} heads")
        if self.position not in ("learned", "sinusoidal"):
            raise ValueError(f"position must be 'learned' or 'sinusoidal', not {self.position!r}")
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', not {self.activation!r}")

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


class Embeddings(nn.Module):
    """Token + position (+ segment) embeddings, then LayerNorm (post-LN only) and dropout."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        if cfg.position == "learned":
            self.position = nn.Embedding(cfg.max_len, cfg.d_model)
        else:
            self.register_buffer("position_table", sinusoidal_table(cfg.max_len, cfg.d_model), persistent=False)
            self.position = None
        self.segment = nn.Embedding(cfg.n_segment, cfg.d_model) if cfg.n_segment else None
        # Pre-LN stacks normalise inside every block, so the embedding sum goes in raw.
        self.norm = nn.Identity() if cfg.norm_first else nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.max_len = cfg.max_len

    def forward(self, input_ids: torch.Tensor, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence of {length} tokens is longer than the model's max_len={self.max_len}")
        x = self.token(input_ids)  # (B, T, D)
        if self.position is not None:
            x = x + self.position.weight[:length]
        else:
            x = x + self.position_table[:length].to(x.dtype)
        if self.segment is not None and segment_ids is not None:
            x = x + self.segment(segment_ids)
        return self.dropout(self.norm(x))


class Attention(nn.Module):
    """Multi-head attention. Self-attention projects Q, K, V with one fused matmul."""

    def __init__(self, cfg: TransformerConfig, *, cross: bool) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.cross = cross
        if cross:
            self.query = nn.Linear(cfg.d_model, cfg.d_model)
            self.key_value = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        else:
            self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.attn_dropout = cfg.dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.n_head, d // self.n_head).transpose(1, 2)  # (B, H, n, Dh)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D)
        mask: torch.Tensor | None,  # (B, 1, T or 1, S) bool, True where attending is allowed
        *,
        is_causal: bool = False,
        memory: torch.Tensor | None = None,  # (B, S, D) encoder output, for cross-attention
    ) -> torch.Tensor:
        if self.cross:
            assert memory is not None, "cross-attention needs the encoder output"
            q = self.query(x)
            k, v = self.key_value(memory).chunk(2, dim=-1)
        else:
            q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (B, T, D)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, H, T|S, Dh)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )  # (B, H, T, Dh)
        b, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, -1))  # (B, T, D)


class FeedForward(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model)
        self.act = nn.GELU() if cfg.activation == "gelu" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))  # (B, T, F) -> (B, T, D)


class Block(nn.Module):
    """Self-attention (masked when causal), optional cross-attention, feed-forward; each sub-layer
    wrapped in dropout, a residual connection and LayerNorm (after it, or before it when norm_first)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm_first = cfg.norm_first
        self.self_attn = Attention(cfg, cross=False)
        self.self_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.cross_attn = Attention(cfg, cross=True) if cfg.cross_attention else None
        self.cross_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.cross_attention else None
        self.ffn = FeedForward(cfg)
        self.ffn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def _sublayer(self, x: torch.Tensor, norm: nn.Module, fn) -> torch.Tensor:
        if self.norm_first:
            return x + self.dropout(fn(norm(x)))  # x + F(LN(x))
        return norm(x + self.dropout(fn(x)))  # LN(x + F(x)), the article's form

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None,
        *,
        is_causal: bool = False,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self._sublayer(x, self.self_norm, lambda h: self.self_attn(h, self_mask, is_causal=is_causal))
        if self.cross_attn is not None:
            x = self._sublayer(x, self.cross_norm, lambda h: self.cross_attn(h, memory_mask, memory=memory))
        return self._sublayer(x, self.ffn_norm, self.ffn)


def attention_mask(
    padding_mask: torch.Tensor | None, length: int, *, causal: bool, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """Turn a (B, S) padding mask (True/1 at real tokens) into an SDPA mask.

    Returns (mask, is_causal). Without padding the mask is None so that SDPA may pick a fused kernel.
    Each position may always attend to itself, so that a query row at a padding position is never fully
    masked (a fully masked softmax row would give NaN); real positions are unaffected by this.
    """
    if padding_mask is None or bool(padding_mask.all()):
        return None, causal
    keys = padding_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
    eye = torch.eye(length, dtype=torch.bool, device=device)  # (T, S)
    mask = keys | eye
    if causal:
        mask = mask & torch.ones(length, length, dtype=torch.bool, device=device).tril()
    return mask, False  # (B, 1, T, S)


class Transformer(nn.Module):
    """Embeddings and a stack of blocks: an encoder, or a decoder when ``cfg.causal``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.norm_first else nn.Identity()
        self.apply(self._init_weights)

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
        padding_mask: torch.Tensor | None = None,  # (B, T), 1 at real tokens
        segment_ids: torch.Tensor | None = None,  # (B, T)
        *,
        memory: torch.Tensor | None = None,  # (B, S, D) encoder output for cross-attention
        memory_padding_mask: torch.Tensor | None = None,  # (B, S)
    ) -> torch.Tensor:
        x = self.embed(input_ids, segment_ids)  # (B, T, D)
        length = input_ids.shape[1]
        mask, is_causal = attention_mask(padding_mask, length, causal=self.cfg.causal, device=x.device)
        memory_mask = None
        if memory_padding_mask is not None and not bool(memory_padding_mask.all()):
            memory_mask = memory_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        for block in self.blocks:
            x = block(x, mask, is_causal=is_causal, memory=memory, memory_mask=memory_mask)
        return self.final_norm(x)  # (B, T, D)


@dataclass
class EncoderDecoderConfig:
    """An encoder and a decoder sharing one vocabulary; the decoder is causal with cross-attention."""

    encoder: TransformerConfig
    decoder: TransformerConfig = field(init=False)

    def __post_init__(self) -> None:
        self.decoder = TransformerConfig(**{**self.encoder.to_dict(), "causal": True, "cross_attention": True})
        self.encoder.causal = False
        self.encoder.cross_attention = False


class EncoderDecoder(nn.Module):
    """The article's full Transformer: H = Encoder(X); O = Decoder(Y, H)."""

    def __init__(self, cfg: EncoderDecoderConfig) -> None:
        super().__init__()
        self.encoder = Transformer(cfg.encoder)
        self.decoder = Transformer(cfg.decoder)

    def forward(
        self,
        source_ids: torch.Tensor,  # (B, S)
        target_ids: torch.Tensor,  # (B, T)
        source_padding_mask: torch.Tensor | None = None,
        target_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        memory = self.encoder(source_ids, source_padding_mask)  # (B, S, D)
        return self.decoder(
            target_ids, target_padding_mask, memory=memory, memory_padding_mask=source_padding_mask
        )  # (B, T, D)
