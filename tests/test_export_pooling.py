"""Every classifier lmcraft trains exports to transformers: mean- and cls-pooled ones with modeling_lmcraft.py
(trust_remote_code), pooler ones as transformers' own class; the logits equal lmcraft's within 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from lmcraft.data.batching import pad
from lmcraft.model.export import export_hf
from lmcraft.model.heads import Model
from lmcraft.model.io import save_model_dir
from lmcraft.tokenizer import TextTokenizer
from tests.conftest import tiny_config

CASES = [("bert", "mean"), ("bert", "cls"), ("bert", "pooler"), ("roberta", "mean")]


def classifier(tokenizer: TextTokenizer, family: str, pooling: str) -> Model:
    """A tiny classifier with wide random weights (norm gains and biases too), so a dropped tensor shows."""
    torch.manual_seed(0)
    roberta = {"position_offset": tokenizer.pad_id + 1, "n_segment": 1, "max_len": 64 + tokenizer.pad_id + 1}
    cfg = tiny_config(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, **(roberta if family == "roberta"
                                                                                  else {"max_len": 64}))
    model = Model(cfg, {"classify": {"kind": "classify", "task": "classify", "n_labels": 3,
                                     "labels": ["neg", "pos", "mid"], "pooling": pooling}})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


@pytest.mark.parametrize(("family", "pooling"), CASES, ids=["-".join(c) for c in CASES])
def test_classifier_exports_with_the_same_logits(family: str, pooling: str, zh_tokenizer: TextTokenizer,
                                                 peoples_daily: Path, tmp_path: Path) -> None:
    model = classifier(zh_tokenizer, family, pooling)
    save_model_dir(tmp_path / "model", model, zh_tokenizer)
    summary = export_hf(tmp_path / "model", tmp_path / "hf")
    remote = pooling != "pooler"
    assert summary["remote_code"] == remote
    assert (tmp_path / "hf" / "modeling_lmcraft.py").exists() == remote
    config = json.loads((tmp_path / "hf" / "config.json").read_text(encoding="utf-8"))
    assert ("auto_map" in config) == remote
    back = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf",
                                                                           trust_remote_code=remote).eval()
    assert type(back).__name__ == summary["class"]
    assert back.config.id2label == {0: "neg", 1: "pos", 2: "mid"}
    lines = [line[: 4 + 23 * i % 90] for i, line in
             enumerate(peoples_daily.read_text(encoding="utf-8").splitlines()[:7])]  # mixed lengths
    ids, mask = pad(zh_tokenizer.encode(lines, max_len=64), zh_tokenizer.pad_id)  # (B, T) each
    with torch.no_grad():
        ours = model.heads["classify"](model(ids, mask), mask)
        theirs = back(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)
    assert float(ours.softmax(-1).std(0).max()) > 0.01, "texts should get clearly different probabilities"


def test_remote_code_is_refused_without_trust(zh_tokenizer: TextTokenizer, tmp_path: Path) -> None:
    save_model_dir(tmp_path / "model", classifier(zh_tokenizer, "bert", "mean"), zh_tokenizer)
    export_hf(tmp_path / "model", tmp_path / "hf")
    with pytest.raises(ValueError, match="trust_remote_code"):
        transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", trust_remote_code=False)
