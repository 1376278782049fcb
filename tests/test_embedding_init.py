"""Co-occurrence (PPMI-SVD) token embeddings: counts and PPMI against brute force, neighbours on real news,
and a pretraining run that starts from them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcraft.config import ModelOptions, PretrainConfig, TrainConfig
from lmcraft.model.embedding_init import cooccurrence_counts, cooccurrence_embeddings, init_token_embeddings, ppmi
from lmcraft.model.io import load_model_dir
from lmcraft.pretrain import run_pretrain
from lmcraft.tokenizer import TextTokenizer


def brute_counts(sequences: list[list[int]], vocab: int, window: int, special: set[int]) -> np.ndarray:
    counts = np.zeros((vocab, vocab))
    for seq in sequences:
        segments, current = [], []
        for t in seq:
            if t in special:
                segments.append(current)
                current = []
            else:
                current.append(t)
        segments.append(current)
        for seg in segments:
            for i, a in enumerate(seg):
                for j in range(i + 1, min(i + window + 1, len(seg))):
                    counts[a, seg[j]] += 1 / (j - i)
                    counts[seg[j], a] += 1 / (j - i)
    return counts


def neighbour_rank(vectors: torch.Tensor, tokenizer: TextTokenizer, a: str, b: str,
                   rows: torch.Tensor | None = None) -> int:
    """How many tokens are closer (cosine) to ``a`` than ``b`` is; ``rows`` maps token ids to the rows of
    ``vectors`` when it holds only some tokens."""
    i, j = (tokenizer.encode([t], max_len=None, special_tokens=False)[0][0] for t in (a, b))
    if rows is not None:
        index = torch.cumsum(rows.long(), 0) - 1
        i, j = int(index[i]), int(index[j])
    unit = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-9)
    sims = unit @ unit[i]
    return int((sims > sims[j]).sum()) - 1  # not counting ``a`` itself


def test_counts_and_ppmi_equal_brute_force() -> None:
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 12, size=int(rng.integers(1, 30))).tolist() for _ in range(40)]
    special = {0, 1}
    counts = cooccurrence_counts(sequences, 12, window=3, special_ids=sorted(special))
    expected = brute_counts(sequences, 12, 3, special)
    np.testing.assert_allclose(counts.toarray(), expected, atol=1e-9)
    assert counts[0].sum() == 0 and counts[:, 1].sum() == 0  # no pair with a special token

    dense = expected
    word = dense.sum(1)
    context = dense.sum(0) ** 0.75
    context = context / context.sum()
    reference = np.zeros_like(dense)
    for w in range(12):
        for c in range(12):
            if dense[w, c] > 0:
                reference[w, c] = max(0.0, math.log(dense[w, c] / (word[w] * context[c])))
    np.testing.assert_allclose(ppmi(counts).toarray(), reference, atol=1e-9)


def test_neighbours_on_real_news(zh_tokenizer: TextTokenizer, peoples_daily: Path) -> None:
    lines = peoples_daily.read_text(encoding="utf-8").splitlines()[:3000]
    ids = zh_tokenizer.encode(lines, max_len=None, special_tokens=False)
    vectors, seen = cooccurrence_embeddings(ids, zh_tokenizer.vocab_size, 32, special_ids=zh_tokenizer.special_ids)
    # Digits go with digits and months with days: among ~2,000 characters, each pair ranks near the top.
    assert neighbour_rank(vectors[seen], zh_tokenizer, "１", "２", rows=seen) < 20
    assert neighbour_rank(vectors[seen], zh_tokenizer, "月", "日", rows=seen) < 40
    assert neighbour_rank(vectors[seen], zh_tokenizer, "北", "南", rows=seen) < 60

    embedding = torch.nn.Embedding(zh_tokenizer.vocab_size, 32, padding_idx=zh_tokenizer.pad_id)
    before = embedding.weight.detach().clone()
    n = init_token_embeddings(embedding, vectors, seen)
    assert n == int(seen.sum()) < zh_tokenizer.vocab_size
    assert embedding.weight[seen].std().item() == pytest.approx(0.02, rel=1e-3)
    untouched = ~seen
    untouched[zh_tokenizer.pad_id] = False
    assert torch.equal(embedding.weight[untouched], before[untouched])  # tokens never seen keep their start
    assert embedding.weight[zh_tokenizer.pad_id].abs().sum() == 0


def test_pretraining_starts_from_cooccurrence_vectors(zh_tokenizer: TextTokenizer, zh_tokenizer_dir: Path,
                                                      peoples_daily: Path, tmp_path: Path) -> None:
    """A few steps at a tiny learning rate barely move the weights: the saved model's embeddings keep the
    neighbourhoods of the co-occurrence vectors, which a random start does not have."""
    corpus = tmp_path / "news.txt"
    corpus.write_text("\n".join(peoples_daily.read_text(encoding="utf-8").splitlines()[:3000]) + "\n",
                      encoding="utf-8")
    ranks = {}
    for init in ("random", "cooccurrence"):
        cfg = PretrainConfig(corpus=[str(corpus)], tokenizer=str(zh_tokenizer_dir), out=str(tmp_path / init),
                             embedding_init=init, model=ModelOptions(size="tiny", max_len=64),
                             train=TrainConfig(lr=1e-6, batch_size=8, max_steps=2, eval_every=2,
                                               progress=False, tensorboard=False))
        run_pretrain(cfg)
        model, _, _ = load_model_dir(tmp_path / init / "best")
        weights = model.backbone.embed.token.weight.detach()
        ranks[init] = neighbour_rank(weights, zh_tokenizer, "１", "２")
        card = json.loads((tmp_path / init / "best" / "run_card.json").read_text(encoding="utf-8"))
        assert card["config"]["embedding_init"] == init
    assert ranks["cooccurrence"] < 20 < ranks["random"], ranks


def test_embedding_init_errors(zh_tokenizer_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="random or cooccurrence"):
        run_pretrain(PretrainConfig(corpus=["x.txt"], tokenizer=str(zh_tokenizer_dir), embedding_init="glove"))
    with pytest.raises(ValueError, match="more than 32 distinct tokens"):
        cooccurrence_embeddings([[5, 6, 7, 8]], 100, 32)
