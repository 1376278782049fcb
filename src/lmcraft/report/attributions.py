"""Which tokens made the model say what it said: integrated gradients (Sundararajan et al. 2017) of the
predicted class's logit with respect to the token embeddings, through Captum's ``LayerIntegratedGradients``.

The baseline is the same sequence with every token but the special ones replaced by [PAD]; each token's
attribution is the sum over the embedding dimensions, scaled so that the largest magnitude of an example
is 1 (the shade of its highlight). The most confident mistakes and a seeded sample of correct answers are
explained; ``--no-attributions`` skips the section, which costs ``steps`` forward and backward passes per
example.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lmcraft.inference.predictor import Predictor
from lmcraft.report.scored import Scored

STEPS = 32  # integration steps (Captum's default is 50; the ranking of tokens settles well before)


def _explain(predictor: Predictor, example: Any, target: int) -> tuple[list[str], list[float]]:
    from captum.attr import LayerIntegratedGradients

    task, model, tokenizer = predictor.task, predictor.model, predictor.tokenizer
    assert task is not None
    batch = task.class_batches(tokenizer, [example], predictor.max_len)[0]
    ids = batch["input_ids"]  # (1, T)
    special = torch.tensor([int(i) in tokenizer.special_ids for i in ids[0]])
    baseline = torch.where(special, ids, torch.full_like(ids, tokenizer.pad_id))

    def forward(input_ids: torch.Tensor) -> torch.Tensor:  # (S, T) -> (S, C); S: the integration steps
        rows = input_ids.shape[0]
        others = {k: v.expand(rows, *v.shape[1:]) for k, v in batch.items() if k not in ("input_ids", "labels")}
        return task.class_logits(model, {**others, "input_ids": input_ids})

    ig = LayerIntegratedGradients(forward, model.backbone.embed.token)
    with torch.enable_grad():
        attributions = ig.attribute(ids, baselines=baseline, target=target, n_steps=STEPS,
                                    internal_batch_size=STEPS)  # (1, T, D)
    scores = attributions.sum(-1)[0].detach().float()  # (T,)
    scores = scores / scores.abs().max().clamp_min(1e-12)
    tokens = [tokenizer.tokenizer.id_to_token(int(i)) or "?" for i in ids[0]]
    keep = [k for k in range(len(tokens)) if not special[k]]
    return [tokens[k] for k in keep], [round(float(scores[k]), 4) for k in keep]


def attributions(predictor: Predictor, examples: Sequence[Any], scored: Scored, mistakes: Sequence[int], *,
                 n_correct: int = 5, seed: int = 0) -> dict[str, Any]:
    """Highlighted tokens of the examples at ``mistakes`` and of ``n_correct`` correct answers."""
    start = time.perf_counter()
    right = np.flatnonzero(scored.correct)
    sample = np.random.default_rng(seed).choice(right, min(n_correct, len(right)), replace=False) if len(right) else []
    chosen = [("mistake", int(i)) for i in mistakes] + [("correct", int(i)) for i in sorted(sample)]
    out = []
    model = predictor.model
    was_training = model.training
    model.eval()
    for kind, i in chosen:
        predicted = int(scored.pred[i])
        tokens, weights = _explain(predictor, examples[i], predicted)
        out.append({"kind": kind, "index": i, "gold": scored.labels[scored.gold[i]],
                    "predicted": scored.labels[predicted], "tokens": list(zip(tokens, weights, strict=True))})
    model.train(was_training)
    return {"steps": STEPS, "examples": out, "seconds": time.perf_counter() - start}
