"""The Transformer's architecture as data: ``TransformerConfig`` (a comment per field, invariants checked
on construction) and the named sizes, a table of presets rather than subclasses."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lmcraft.config import ModelOptions

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

    @classmethod
    def for_new_model(cls, options: ModelOptions, vocab_size: int, pad_id: int, *, causal: bool) -> TransformerConfig:
        """The architecture of a model trained from scratch, from the stages' ``ModelOptions``."""
        return cls.from_size(options.size, vocab_size, max_len=options.max_len, norm_first=options.norm_first,
                             position=options.position, dropout=options.dropout, pad_id=pad_id, causal=causal)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
