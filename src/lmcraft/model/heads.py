"""Task heads and the model that carries them.

Every head has the same thin shape (as in BERT): it reads the backbone's hidden states and returns
logits. Losses live in the objectives and tasks, not here, so a head never changes its output type.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lmcraft.model.crf import CRF, scheme_rules
from lmcraft.model.ngrams import NGRAM_LR, HashedNgrams
from lmcraft.model.transformer import Block, Transformer, TransformerConfig, attention_mask, store_linear_weights


class MaskedLMHead(nn.Module):
    """dense → GELU → LayerNorm → projection onto the vocabulary, tied to the token embeddings.

    It is applied only to the selected positions: over a vocabulary of tens of thousands this projection
    is the largest matmul of the model, and MLM needs it at ~15% of the positions.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        # hidden (B, T, D); positions (B, T) bool; token_embedding (V, D), passed in so that the output
        # projection is tied to the input embeddings without a second copy in the checkpoint.
        h = self.norm(self.act(self.dense(hidden[positions])))  # (N, D)
        return h @ token_embedding.T + self.bias  # (N, V) for the N selected positions


class GeneratorHead(nn.Module):
    """ELECTRA's generator (Clark et al. 2020): a small masked-LM beside the encoder, whose samples the
    encoder learns to tell from the original tokens. It shares the backbone's embeddings: it reads their
    output (B, T, D), narrows it to its own width, runs as many post-LN blocks as the backbone has at
    ``share`` of its heads (and width, and FFN width), and predicts the masked tokens with the shared token
    embeddings (dense → GELU → LayerNorm at width D → tied projection), as in BERT's MLM head."""

    def __init__(self, cfg: TransformerConfig, share: float = 0.25) -> None:
        super().__init__()
        heads = max(1, round(cfg.n_head * share))
        width = heads * cfg.dh
        small = TransformerConfig(**{**cfg.to_dict(), "d_model": width, "n_head": heads, "n_kv_head": 0,
                                     "head_dim": 0, "d_ff": 4 * width, "norm_first": False, "causal": False,
                                     "cross_attention": False})
        self.down = nn.Linear(cfg.d_model, width)
        self.blocks = nn.ModuleList(Block(small) for _ in range(cfg.n_layer))
        self.dense = nn.Linear(width, cfg.d_model)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.apply(Transformer._init_weights)

    def forward(self, embedded: torch.Tensor, padding_mask: torch.Tensor | None, positions: torch.Tensor,
                token_embedding: torch.Tensor) -> torch.Tensor:
        # embedded (B, T, D): the backbone's embeddings of the masked input; positions (B, T) bool
        x = self.down(embedded)  # (B, T, W)
        mask, is_causal = attention_mask(padding_mask, x.shape[1], causal=False, device=x.device)
        for block in self.blocks:
            x = block(x, mask, is_causal=is_causal)
        h = self.norm(self.act(self.dense(x[positions])))  # (N, D)
        return h @ token_embedding.T + self.bias  # (N, V)


ACTIVATIONS = {"gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU}


class ReplacedTokenHead(nn.Module):
    """ELECTRA's discriminator head: dense → activation → one logit per token, "was this token replaced?"
    (the layout of transformers' ``ElectraForPreTraining``)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = ACTIVATIONS.get(cfg.activation, nn.GELU)()
        self.dense_prediction = nn.Linear(cfg.d_model, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden (B, T, D) -> logits (B, T)
        return self.dense_prediction(self.act(self.dense(hidden))).squeeze(-1)


class LMHead(nn.Module):
    """Next-token logits of a decoder: a projection onto the vocabulary, either tied to the token
    embeddings (GPT-2) or a matrix of its own (most Llama-style models)."""

    def __init__(self, cfg: TransformerConfig, tied: bool = True) -> None:
        super().__init__()
        self.proj = None if tied else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, hidden: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        # hidden (B, T, D) -> logits (B, T, V)
        return hidden @ token_embedding.T if self.proj is None else self.proj(hidden)


POOLINGS = ("cls", "mean", "pooler")


class ClassificationHead(nn.Module):
    """dropout → linear on a pooled state: the first token's ([CLS]), the mean over real tokens (as in
    Sentence-BERT, which small models trained briefly often use better), or BERT's pooler, tanh(W h_[CLS]
    + b), which BERT checkpoints bring pretrained and transformers' classifiers expect."""

    def __init__(self, cfg: TransformerConfig, n_labels: int, pooling: str = "cls") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        self.pooling = pooling
        self.reads_first_only = pooling != "mean"  # the backbone may compute its last block at [CLS] alone
        self.pooler = nn.Linear(cfg.d_model, cfg.d_model) if pooling == "pooler" else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(cfg.d_model, n_labels)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pooler is not None:
            pooled = torch.tanh(self.pooler(hidden[:, 0]))  # (B, D)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]  # (B, D)
        elif padding_mask is None:
            pooled = hidden.mean(1)
        else:
            weights = padding_mask.to(hidden.dtype)[:, :, None]  # (B, T, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1)  # (B, D)
        return self.proj(self.dropout(pooled))  # (B, C)


class TokenClassificationHead(nn.Module):
    """dropout → linear at every position: one label per token (named-entity tags). With ``crf`` the head
    also holds a CRF's transition scores, which the tagging task uses for its loss and decoding.

    With ``ngrams`` (a number of hash buckets) the head also scores the token unigrams and bigrams within
    two positions of each token (model/ngrams.py) and adds those scores to the encoder's: the features of
    the classic feature CRF, at the cost of one table lookup.
    """

    def __init__(self, cfg: TransformerConfig, n_labels: int, crf: bool = False, ngrams: int = 0,
                 ngram_lr: float = NGRAM_LR, labels: Sequence[str] | None = None, scheme: str = "BIO") -> None:
        super().__init__()
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(cfg.d_model, n_labels)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        # with the tags' names, the CRF keeps to the scheme's rules (no I-PER after O)
        self.crf = CRF(n_labels, scheme_rules(labels, scheme) if labels else None) if crf else None
        self.ngrams = (HashedNgrams(cfg.vocab_size, cfg.pad_id, ngrams, n_labels, ngram_lr)
                       if ngrams else None)

    def forward(self, hidden: torch.Tensor, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.proj(self.dropout(hidden))  # (B, T, D) -> (B, T, C)
        if self.ngrams is None:
            return scores
        if input_ids is None:
            raise ValueError("this tagger reads token n-grams: call its head with the input ids too")
        return scores + self.ngrams(input_ids).to(scores.dtype)


class RelationHead(nn.Module):
    """Relation classification over a marked entity pair: the states at the two entities' start markers,
    concatenated, then dropout and a linear layer (the "entity start" representation of Baldini Soares et
    al. 2019 and Zhou & Chen 2021)."""

    def __init__(self, cfg: TransformerConfig, n_labels: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(2 * cfg.d_model, n_labels)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor, marker_positions: torch.Tensor) -> torch.Tensor:
        # hidden (B, T, D); marker_positions (B, 2): index of the first and of the second entity's start marker
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]  # (B, 1)
        pair = hidden[rows, marker_positions].flatten(1)  # (B, 2D)
        return self.proj(self.dropout(pair))  # (B, C)


class SpanHead(nn.Module):
    """Extractive question answering: a start and an end logit at every position."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(cfg.d_model, 2)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.proj(hidden).unbind(-1)  # (B, T) each
        return start, end


class DecoderHead(nn.Module):
    """The decoder of an encoder-decoder, carried as a head of the encoder: O = Decoder(Y, H), where H is
    the backbone's output. It is a causal Transformer with cross-attention, of the backbone's width, with
    token embeddings of its own (tied to its output projection). An encoder pretrained with MLM thus becomes
    the encoder of a sequence-to-sequence model whose decoder learns from the start (as in BERT2BERT-style
    warm starts), and the whole saves and loads as one model directory."""

    def __init__(self, cfg: TransformerConfig, n_layer: int = 0) -> None:
        super().__init__()
        overrides = {"causal": True, "cross_attention": True, "n_segment": 0, "n_layer": n_layer or cfg.n_layer}
        self.decoder = Transformer(TransformerConfig(**{**cfg.to_dict(), **overrides}))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden (..., D) -> logits (..., V), tied to the decoder's token embeddings
        return hidden @ self.decoder.embed.token.weight.T

    def forward(self, target_ids: torch.Tensor, target_mask: torch.Tensor | None, memory: torch.Tensor,
                memory_mask: torch.Tensor | None) -> torch.Tensor:
        # target_ids (B, T), memory (B, S, D) -> decoder states (B, T, D)
        return self.decoder(target_ids, target_mask, memory=memory, memory_padding_mask=memory_mask)


class Model(nn.Module):
    """A backbone with named heads. ``head_specs`` maps a head name to what builds it, e.g.
    ``{"mlm": {"kind": "mlm"}, "classify": {"kind": "classify", "n_labels": 2}}``; it is stored in
    ``config.json`` so that a saved model rebuilds itself."""

    def __init__(self, cfg: TransformerConfig, head_specs: dict[str, dict[str, object]]) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_tokens = cfg.max_tokens  # where inputs are cut: the fine-tuning length once fine-tuned
        self.backbone = Transformer(cfg)
        self.head_specs = {name: dict(spec) for name, spec in head_specs.items()}  # any mapping, stored as dicts
        self.heads = nn.ModuleDict({name: self._build_head(spec) for name, spec in head_specs.items()})
        store_linear_weights(self.heads)

    def _build_head(self, spec: dict[str, object]) -> nn.Module:
        kind = spec.get("kind")
        if kind == "mlm":
            return MaskedLMHead(self.cfg)
        if kind == "lm":
            return LMHead(self.cfg, bool(spec.get("tied", True)))
        if kind == "tag":
            if "ngram_dim" in spec:
                raise ValueError("this tagger's n-gram head was saved by an older lmcraft (vectors of ngram_dim "
                                 "columns); the head now holds one weight per n-gram and tag: fine-tune it again")
            return TokenClassificationHead(self.cfg, int(spec["n_labels"]), bool(spec.get("crf", False)),  # type: ignore[arg-type]
                                           int(spec.get("ngrams", 0)), float(spec.get("ngram_lr", NGRAM_LR)),  # type: ignore[arg-type]
                                           spec.get("labels"), str(spec.get("scheme", "BIO")))  # type: ignore[arg-type]
        if kind == "span":
            return SpanHead(self.cfg)
        if kind == "relate":
            return RelationHead(self.cfg, int(spec["n_labels"]))  # type: ignore[arg-type]
        if kind == "decoder":
            return DecoderHead(self.cfg, int(spec.get("n_layer", 0)))  # type: ignore[arg-type]
        if kind == "classify":
            return ClassificationHead(self.cfg, int(spec["n_labels"]), str(spec.get("pooling", "cls")))  # type: ignore[arg-type]
        if kind == "generator":
            return GeneratorHead(self.cfg, float(spec.get("share", 0.25)))  # type: ignore[arg-type]
        if kind == "rtd":
            return ReplacedTokenHead(self.cfg)
        raise ValueError(f"unknown head kind {kind!r}; known: mlm, lm, classify, tag, span, relate, decoder, "
                         "generator, rtd")

    def compile_backbone(self) -> None:
        """Compile the backbone in place with torch.compile (its parameters and state dict stay as they are)
        for inputs of any batch size and length; the heads and losses stay eager."""
        self.backbone.compile(dynamic=True)

    def add_head(self, name: str, spec: dict[str, object]) -> None:
        """Put a new head on the backbone (e.g. a classifier on a pretrained encoder)."""
        self.head_specs[name] = dict(spec)
        self.heads[name] = store_linear_weights(self._build_head(spec))

    def forward(
        self,
        input_ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,  # (B, T) packed documents that may not see each other
        first_only: bool = False,  # only the first position's state, (B, 1, D): see Transformer.forward
    ) -> torch.Tensor:
        """Hidden states of the backbone, (B, T, D); heads are applied by the task."""
        return self.backbone(input_ids, padding_mask, segment_ids, document_ids=document_ids, first_only=first_only)
