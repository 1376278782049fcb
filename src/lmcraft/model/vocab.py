"""Vocabulary extension for domain adaptation: new whole-word tokens, and new embedding rows initialised
from the mean of the sub-tokens each word used to be split into.

A domain word that the general tokenizer cuts into pieces (心肌梗死 → 心 肌 梗 死) costs sequence length and
must be assembled by the model each time. Adding it as one token and starting its embedding at the
mean of its old pieces' embeddings keeps what the model knew; every old token keeps its id, embedding,
and output weights, so on text without the new words the model computes exactly what it did before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lmcraft.model.heads import LMHead, MaskedLMHead, Model
from lmcraft.model.transformer import store_linear_weights
from lmcraft.tokenizer import TextTokenizer


def read_words(path: str) -> list[str]:
    """One word a line; blank lines and lines starting with # are skipped."""
    with open(path, encoding="utf-8") as f:
        words = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    if not words:
        raise ValueError(f"{path}: no words to add (one word a line)")
    return words


@torch.no_grad()
def extend_vocabulary(model: Model, tokenizer: TextTokenizer, words: Sequence[str]) -> list[str]:
    """Add ``words`` as tokens (those that are not single tokens already); grow the token embeddings and
    every output layer over the vocabulary in place. Returns the words added."""
    pieces = {}
    for word in dict.fromkeys(w.strip() for w in words if w.strip()):
        ids = tokenizer.encode([word], max_len=None, special_tokens=False)[0]
        if len(ids) > 1:
            pieces[word] = ids
    if not pieces:
        return []
    old_size = tokenizer.vocab_size
    added = tokenizer.tokenizer.add_tokens(list(pieces))
    if added != len(pieces) or tokenizer.vocab_size != old_size + added:
        raise ValueError(f"the tokenizer took {added} of {len(pieces)} new words; the vocabulary is inconsistent")
    _grow(model, old_size, list(pieces.values()))
    return list(pieces)


@torch.no_grad()
def add_special_tokens(model: Model, tokenizer: TextTokenizer, tokens: Sequence[str]) -> list[str]:
    """Add ``tokens`` (e.g. chat role tokens) as special tokens, never split and skipped when decoding, if the
    tokenizer lacks them; their embedding rows start at the mean of all old rows. Returns the tokens added."""
    missing = [t for t in tokens if tokenizer.tokenizer.token_to_id(t) is None]
    if not missing:
        return []
    old_size = tokenizer.vocab_size
    if tokenizer.tokenizer.add_special_tokens(missing) != len(missing):
        raise ValueError(f"the tokenizer did not take the special tokens {missing}")
    _grow(model, old_size, [list(range(old_size))] * len(missing))
    return missing


def _grow(model: Model, old_size: int, sources: Sequence[Sequence[int]]) -> None:
    """Grow the token embeddings and every output layer over the vocabulary by one row per entry of
    ``sources``, each the mean of the old rows it names."""
    added = len(sources)
    embedding = model.backbone.embed.token
    if embedding.num_embeddings != old_size:
        raise ValueError(f"the model's embedding has {embedding.num_embeddings} rows but the tokenizer "
                         f"{old_size} tokens; they must match before extending")
    rows = torch.stack([embedding.weight[list(ids)].mean(0) for ids in sources])  # (N, D)
    grown = nn.Embedding(old_size + added, embedding.embedding_dim, padding_idx=embedding.padding_idx)
    grown.weight.copy_(torch.cat([embedding.weight, rows]))
    model.backbone.embed.token = grown
    for head in model.heads.values():
        if isinstance(head, MaskedLMHead):  # tied weights grow with the embedding; the bias grows here
            bias = torch.stack([head.bias[list(ids)].mean() for ids in sources])
            head.bias = nn.Parameter(torch.cat([head.bias, bias]))
        elif isinstance(head, LMHead) and head.proj is not None:
            proj = nn.Linear(head.proj.in_features, old_size + added, bias=False)
            extra = torch.stack([head.proj.weight[list(ids)].mean(0) for ids in sources])
            proj.weight.copy_(torch.cat([head.proj.weight, extra]))
            head.proj = store_linear_weights(proj)
    model.cfg.vocab_size = old_size + added
