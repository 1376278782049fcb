"""Speed-ups must not change results: fine-tuning on real reviews with the fast path (the default: shuffled
batches whose padding the model skips, SDPA's fused attention kernel, foreach AdamW, transposed weight
storage) and with the plain path (every batch padded to the full length and computed whole, attention by the
textbook softmax(QKᵀ/√d)V, a per-tensor AdamW, row-major weights) over the same batches gives test
accuracies within 0.5 points. Length bucketing (off by default) changes which texts share a batch, not the
arithmetic; its cost over seeds is measured by bench/accuracy_parity.py."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import lmcraft.train.loop as loop
from lmcraft.config import TrainConfig
from lmcraft.data.readers import Fields, read_examples
from lmcraft.model.heads import Model
from lmcraft.model.transformer import TransformerConfig, Unpadded, store_linear_weights
from lmcraft.tasks.classify.task import Classify
from lmcraft.tokenizer import TextTokenizer
from lmcraft.train.optim import param_groups

MAX_LEN = 64


def fine_tune(plain: bool, tokenizer: TextTokenizer, splits: dict[str, list], tmp: Path,
              monkeypatch: pytest.MonkeyPatch) -> float:
    torch.manual_seed(0)
    task = Classify(["neg", "pos"], pad_id=tokenizer.pad_id, pooling="mean", pad_to=MAX_LEN if plain else 0)
    train_items, test_items = (task.encode(tokenizer, splits[s], MAX_LEN) for s in ("train", "test"))
    # No dropout: its random masks depend on the padded shape, so the two paths would draw different ones.
    cfg = TransformerConfig.from_size("tiny", tokenizer.vocab_size, max_len=MAX_LEN, pad_id=tokenizer.pad_id,
                                      dropout=0.0)
    model = Model(cfg, {task.head: task.head_spec()})
    if plain:
        monkeypatch.setattr(Unpadded, "WORTH_IT", 0.0)  # compute the padding too
        store_linear_weights(model, transposed=False)  # weights in plain row-major order
        monkeypatch.setattr(loop, "build_optimizer", lambda m, *, lr, weight_decay: torch.optim.AdamW(
            param_groups(m, weight_decay), lr=lr, foreach=False))
    attention = sdpa_kernel(SDPBackend.MATH) if plain else nullcontext()
    with attention:
        loop.train(model, task, train_items, test_items[:64],
                   TrainConfig(lr=1e-3, batch_size=32, epochs=2, eval_every=10**6, patience=0, progress=False,
                               tensorboard=False, save_every=10**6, bf16="off"),
                   run_dir=tmp / ("plain" if plain else "fast"), save_best=lambda p, s: None)  # shuffled batches
        model.eval()
        with torch.no_grad():
            batch = task.collate(test_items)
            predicted = task.logits(model, batch).argmax(-1)
    return float((predicted == batch["labels"]).float().mean())


def test_fast_and_plain_fine_tuning_agree(sentiment_dir: Path, zh_tokenizer: TextTokenizer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    splits = {s: read_examples(sentiment_dir / f"{s}.jsonl", Fields()) for s in ("train", "test")}
    splits["train"] = splits["train"][:2000]
    fast = fine_tune(False, zh_tokenizer, splits, tmp_path, monkeypatch)
    plain = fine_tune(True, zh_tokenizer, splits, tmp_path, monkeypatch)
    assert fast > 0.7, fast  # it learned: two epochs on 2,000 reviews
    assert abs(fast - plain) <= 0.005, (fast, plain)
