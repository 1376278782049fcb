"""T5 span corruption: the spans cut out of the input come back in the target after their sentinels, the
noise density and span length are near their targets, and an encoder-decoder learns the objective."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmcraft.config import TrainConfig
from lmcraft.model.transformer import EncoderDecoder, EncoderDecoderConfig
from lmcraft.objectives.spans import SpanCorruption, corrupt_spans
from lmcraft.train.loop import train
from tests.conftest import tiny_config

SENTINELS = list(range(80, 97))


def _restore(source: list[int], target: list[int]) -> list[int]:
    """Put every span of the target back where its sentinel stands in the source."""
    spans: dict[int, list[int]] = {}
    current = None
    for token in target:
        if token in SENTINELS:
            current = token
            spans[current] = []
        else:
            spans[current].append(token)  # type: ignore[index]
    return [t for token in source for t in (spans[token] if token in SENTINELS else [token])]


def test_spans_round_trip_and_rates() -> None:
    g = torch.Generator().manual_seed(0)
    noise, spans, total = 0, 0, 0
    for trial in range(300):
        ids = [5 + (trial * 13 + k * 7) % 70 for k in range(20 + trial % 60)]
        source, target = corrupt_spans(ids, sentinels=SENTINELS, generator=g)
        assert _restore(source, target) == ids
        assert target[-1] in SENTINELS and source.count(SENTINELS[0]) == 1
        n_spans = sum(t in SENTINELS for t in source)
        noise += len(target) - n_spans - 1
        spans += n_spans
        total += len(ids)
    assert noise / total == pytest.approx(0.15, abs=0.01)
    assert noise / spans == pytest.approx(3.0, abs=0.4)


def test_encoder_decoder_learns_span_corruption(tmp_path: Path) -> None:
    model = EncoderDecoder(EncoderDecoderConfig(tiny_config(vocab_size=100, max_len=80)))
    objective = SpanCorruption(SENTINELS, bos_id=2, pad_id=0)
    items = [[5 + (i * 11 + k * 3) % 70 for k in range(30 + i % 20)] for i in range(240)]
    result = train(model, objective, items[:-16], items[-16:],
                   TrainConfig(lr=3e-3, batch_size=16, max_steps=30, eval_every=15, progress=False, tensorboard=False),
                   run_dir=tmp_path, save_best=lambda path, state: None)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
