"""Vocabulary extension: new words become single tokens whose embeddings start at the mean of their old
pieces, every old token's outputs stay exactly as they were, and continued pretraining runs from a saved
model with the extended vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmcraft.config import ModelOptions, PretrainConfig, TrainConfig
from lmcraft.model.heads import Model
from lmcraft.model.io import load_model_dir, save_model_dir
from lmcraft.model.vocab import extend_vocabulary
from lmcraft.pretrain import run_pretrain
from lmcraft.tokenizer import TextTokenizer, train_tokenizer
from tests.conftest import tiny_config


@pytest.fixture()
def tokenizer(peoples_daily: Path) -> TextTokenizer:  # a fresh one: extension changes it in place
    lines = peoples_daily.read_text(encoding="utf-8").splitlines()[:2000]
    return TextTokenizer(train_tokenizer(lines, kind="wordpiece", vocab_size=1500))


def test_old_outputs_unchanged_and_new_rows_from_pieces(tokenizer: TextTokenizer) -> None:
    model = Model(tiny_config(vocab_size=tokenizer.vocab_size), {"mlm": {"kind": "mlm"}}).eval()
    text = "中国人民在新的一年里继续前进。"
    ids = torch.tensor(tokenizer.encode([text], max_len=None))  # (1, T)
    selected = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        before = model.heads["mlm"](model(ids), selected, model.backbone.embed.token.weight)  # (T, V)
    old_size = tokenizer.vocab_size
    pieces = tokenizer.encode(["心肌梗死"], max_len=None, special_tokens=False)[0]
    old_rows = model.backbone.embed.token.weight[pieces].detach().clone()
    added = extend_vocabulary(model, tokenizer, ["心肌梗死", "中", "心肌梗死"])  # repeats and single tokens skipped
    assert added == ["心肌梗死"] and tokenizer.vocab_size == old_size + 1 == model.cfg.vocab_size
    new_id = tokenizer.encode(["心肌梗死"], max_len=None, special_tokens=False)[0]
    assert new_id == [old_size]
    torch.testing.assert_close(model.backbone.embed.token.weight[old_size], old_rows.mean(0))
    assert tokenizer.encode([text], max_len=None) == ids.tolist()  # old text tokenizes as before
    with torch.no_grad():
        after = model.heads["mlm"](model(ids), selected, model.backbone.embed.token.weight)  # (T, V + 1)
    assert after.shape[1] == before.shape[1] + 1
    torch.testing.assert_close(after[:, :old_size], before, rtol=0, atol=0)  # old outputs exactly unchanged


def test_continued_pretraining_with_added_words(tokenizer: TextTokenizer, peoples_daily: Path,
                                                tmp_path: Path) -> None:
    base = tmp_path / "base"
    save_model_dir(base, Model(tiny_config(vocab_size=tokenizer.vocab_size, max_len=64), {"mlm": {"kind": "mlm"}}),
                   tokenizer)
    words = tmp_path / "words.txt"
    words.write_text("# domain words\n心肌梗死\n人工智能\n", encoding="utf-8")
    corpus = tmp_path / "domain.txt"
    lines = peoples_daily.read_text(encoding="utf-8").splitlines()[:200]
    corpus.write_text("\n".join(line + "人工智能" for line in lines) + "\n", encoding="utf-8")
    summary = run_pretrain(PretrainConfig(corpus=[str(corpus)], init=str(base), add_words=str(words),
                                          out=str(tmp_path / "pt"), model=ModelOptions(max_len=64),
                                          train=TrainConfig(lr=1e-3, max_steps=3, eval_every=3, batch_size=8,
                                                            progress=False, tensorboard=False)))
    assert summary["added_words"] == 2 and summary["steps"] == 3
    model, extended, _ = load_model_dir(tmp_path / "pt" / "best")
    assert extended.vocab_size == tokenizer.vocab_size + 2 == model.cfg.vocab_size
    assert len(extended.encode(["人工智能"], max_len=None, special_tokens=False)[0]) == 1
    config = json.loads((tmp_path / "pt" / "best" / "config.json").read_text(encoding="utf-8"))
    assert config["architecture"]["vocab_size"] == tokenizer.vocab_size + 2
    with pytest.raises(ValueError, match="give --init MODEL_DIR"):
        run_pretrain(PretrainConfig(corpus=[str(corpus)], tokenizer=str(base), add_words=str(words)))


def test_replay_mixes_general_text_and_reports_both_losses(tokenizer: TextTokenizer, peoples_daily: Path,
                                                           sentiment_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    save_model_dir(base, Model(tiny_config(vocab_size=tokenizer.vocab_size, max_len=64), {"mlm": {"kind": "mlm"}}),
                   tokenizer)
    domain = tmp_path / "reviews.txt"
    reviews = [json.loads(x)["text"] for x in (sentiment_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    domain.write_text("\n".join(reviews[:400]) + "\n", encoding="utf-8")
    general = tmp_path / "news.txt"
    general.write_text("\n".join(peoples_daily.read_text(encoding="utf-8").splitlines()[:400]) + "\n",
                       encoding="utf-8")
    summary = run_pretrain(PretrainConfig(corpus=[str(domain)], replay=[str(general)], replay_ratio=0.25,
                                          init=str(base), out=str(tmp_path / "pt"), dev_fraction=0.1,
                                          model=ModelOptions(max_len=64),
                                          train=TrainConfig(lr=1e-3, max_steps=4, eval_every=2, batch_size=8,
                                                            progress=False, tensorboard=False)))
    for metrics in (summary["dev_before"], summary["dev"]):
        assert {"domain/loss", "general/loss", "domain/perplexity"} <= set(metrics)
        assert metrics["domain/loss"] != metrics["general/loss"]  # each corpus is scored on its own blocks
    history = [json.loads(x) for x in (tmp_path / "pt" / "metrics.jsonl").read_text().splitlines()]
    assert any("general/loss" in h for h in history if h["split"] == "dev")
    # the best checkpoint is chosen on the domain's loss
    best = min((h for h in history if h["split"] == "dev"), key=lambda h: h["domain/loss"])
    assert summary["best_step"] == best["step"]
    with pytest.raises(ValueError, match=r"replay_ratio must lie in \[0, 1\)"):
        run_pretrain(PretrainConfig(corpus=[str(domain)], replay=[str(general)], replay_ratio=1.0, init=str(base),
                                    out=str(tmp_path / "x")))
