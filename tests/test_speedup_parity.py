"""Speed-ups must not change results: fine-tuning on real reviews with the fast path (dynamic padding to
each batch's longest text, SDPA's fused attention kernel, foreach AdamW) and with the plain path (every
batch padded to the full length, attention by the textbook softmax(QKᵀ/√d)V, a per-tensor AdamW) over the
same batches gives test accuracies within 0.5 points. Length bucketing changes which texts share a batch,
not the arithmetic; its effect over seeds is measured by bench/accuracy_parity.py."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import lmcraft.train.loop as loop
from lmcraft.config import TrainConfig
from lmcraft.data.readers import Fields, read_examples
from lmcraft.model.heads import Model
from lmcraft.model.transformer import TransformerConfig
from lmcraft.tasks.classify import Classify
from lmcraft.tokenizer import TextTokenizer
from lmcraft.train.optim import param_groups

MAX_LEN = 64


class PaddedToFullLength(Classify):
    """The plain path's collation: every batch padded to MAX_LEN tokens."""

    def collate(self, items: Any, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        batch = super().collate(items, generator)
        extra = MAX_LEN - batch["input_ids"].shape[1]
        batch["input_ids"] = torch.nn.functional.pad(batch["input_ids"], (0, extra), value=self.pad_id)
        batch["padding_mask"] = torch.nn.functional.pad(batch["padding_mask"], (0, extra), value=False)
        return batch


def fine_tune(plain: bool, tokenizer: TextTokenizer, splits: dict[str, list], tmp: Path,
              monkeypatch: pytest.MonkeyPatch) -> float:
    torch.manual_seed(0)
    task_type = PaddedToFullLength if plain else Classify
    task = task_type(["neg", "pos"], pad_id=tokenizer.pad_id, pooling="mean")
    train_items, test_items = (task.encode(tokenizer, splits[s], MAX_LEN) for s in ("train", "test"))
    cfg = TransformerConfig.from_size("tiny", tokenizer.vocab_size, max_len=MAX_LEN, pad_id=tokenizer.pad_id)
    model = Model(cfg, {task.head: task.head_spec()})
    if plain:
        monkeypatch.setattr(loop, "build_optimizer", lambda m, *, lr, weight_decay: torch.optim.AdamW(
            param_groups(m, weight_decay), lr=lr, foreach=False))
    attention = sdpa_kernel(SDPBackend.MATH) if plain else nullcontext()
    with attention:
        loop.train(model, task, train_items, test_items[:64],
                   TrainConfig(lr=1e-3, batch_size=32, epochs=2, eval_every=10**6, patience=0, progress=False,
                               tensorboard=False, save_every=10**6),
                   run_dir=tmp / ("plain" if plain else "fast"), save_best=lambda p, s: None,
                   lengths=[len(it.ids) for it in train_items])  # the same length-bucketed batches on both paths
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
