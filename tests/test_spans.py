"""T5 span corruption: the spans cut out of the input come back in the target after their sentinels, the
noise density and span length are near their targets, the shipped encoder-decoder (backbone + decoder head)
learns the objective, and `lmcraft pretrain --objective span` saves a model that seq2seq fine-tuning starts
from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmcraft.config import TrainConfig
from lmcraft.model.heads import Model
from lmcraft.objectives.mlm import pack
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
    model = Model(tiny_config(vocab_size=100, max_len=80), {"decoder": {"kind": "decoder"}})
    objective = SpanCorruption(SENTINELS, bos_id=2, pad_id=0)
    documents = [[5 + (i * 11 + k * 3) % 70 for k in range(30 + i % 20)] for i in range(240)]
    items = pack(documents, block=48, cls_id=2, sep_id=3)
    batch = objective.collate(items[:4], torch.Generator().manual_seed(0))
    assert (batch["input_ids"][:, 0] == 2).all() and (batch["decoder_ids"][:, 0] == 2).all()
    for row, item in zip(batch["input_ids"].tolist(), items[:4], strict=True):
        row = [t for t in row if t != 0]
        assert row[-1] == 3 and SENTINELS[0] in row and len(row) < len(item)  # [CLS] corrupted [SEP]
    result = train(model, objective, items[:-16], items[-16:],
                   TrainConfig(lr=3e-3, batch_size=16, max_steps=30, eval_every=15, progress=False, tensorboard=False),
                   run_dir=tmp_path, save_best=lambda path, state: None)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


@pytest.mark.slow
def test_pretrain_span_then_finetune_seq2seq(tmp_path: Path, peoples_daily: Path, zh_tokenizer_dir: Path) -> None:
    """`lmcraft pretrain --objective span` saves a model directory with a decoder head and the sentinels in its
    tokenizer; its dev loss falls; `lmcraft finetune --task seq2seq --layout encoder-decoder` starts from it."""
    from lmcraft.cli import main
    from lmcraft.data.readers import write_jsonl
    from lmcraft.model.io import load_model_dir
    from lmcraft.objectives.spans import SENTINEL_TOKENS

    lines = peoples_daily.read_text(encoding="utf-8").splitlines()[:300]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = tmp_path / "t5"
    assert main(["pretrain", "--objective", "span", "--corpus", str(corpus), "--tokenizer", str(zh_tokenizer_dir),
                 "--out", str(run), "--size", "tiny", "--max-len", "64", "--max-steps", "40", "--eval-every", "20",
                 "--batch-size", "16", "--lr", "2e-3", "--no-progress", "--no-tensorboard"]) == 0
    model, tokenizer, _ = load_model_dir(run / "best")
    assert set(model.head_specs) == {"decoder"} and not model.cfg.causal
    assert tokenizer.tokenizer.token_to_id(SENTINEL_TOKENS[0]) is not None
    assert model.cfg.vocab_size == tokenizer.vocab_size == model.heads["decoder"].decoder.cfg.vocab_size
    history = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    dev = [h["loss"] for h in history if h.get("split") == "dev"]
    assert len(dev) >= 2 and dev[-1] < dev[0], dev

    data = tmp_path / "pairs"
    data.mkdir()
    pairs = [{"source": line[:20], "target": line[:10]} for line in lines if len(line) >= 20]
    for split, part in {"train": pairs[:60], "dev": pairs[60:70], "test": pairs[70:80]}.items():
        write_jsonl(data / f"{split}.jsonl", part)
    out = tmp_path / "ft"
    assert main(["finetune", "--task", "seq2seq", "--layout", "encoder-decoder", "--init", str(run / "best"),
                 "--data", str(data), "--out", str(out), "--max-steps", "4", "--eval-every", "2", "--batch-size", "16",
                 "--max-target-tokens", "12", "--num-beams", "1", "--no-baseline", "--no-progress",
                 "--no-tensorboard"]) == 0
    finetuned, _, _ = load_model_dir(out / "best")
    assert finetuned.head_specs["decoder"]["task"] == "seq2seq"
    assert finetuned.cfg.vocab_size == model.cfg.vocab_size  # the encoder, sentinels and all, carried over
