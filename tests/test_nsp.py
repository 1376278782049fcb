"""Sentence-pair objectives: NSP and SOP labels are balanced and say what was done to the pair, and
pretraining with MLM + SOP runs and reports the sentence task's accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmcraft.config import ModelOptions, PretrainConfig, TrainConfig
from lmcraft.model.io import load_model_dir
from lmcraft.objectives.nsp import make_pairs
from lmcraft.pretrain import run_pretrain
from lmcraft.text import split_sentences


@pytest.fixture(scope="module")
def documents(peoples_daily: Path) -> list[str]:
    return [line for line in peoples_daily.read_text(encoding="utf-8").splitlines()[:3000]
            if len(split_sentences(line)) >= 2]


def test_nsp_labels_are_balanced_and_correct(documents: list[str]) -> None:
    pairs = make_pairs(documents, "nsp", seed=0)
    assert len(pairs) == len(documents)
    share = sum(label for _, _, label in pairs) / len(pairs)
    assert share == pytest.approx(0.5, abs=0.04)
    for doc, (a, b, label) in zip(documents, pairs, strict=True):
        joined = "".join(split_sentences(doc))
        if label == 1:
            assert a + b == joined  # B is what follows A
        else:
            assert joined.startswith(a) and b not in split_sentences(doc)  # B comes from another document


def test_sop_labels_are_balanced_and_correct(documents: list[str]) -> None:
    pairs = make_pairs(documents, "sop", seed=1)
    assert sum(label for _, _, label in pairs) / len(pairs) == pytest.approx(0.5, abs=0.04)
    for doc, (a, b, label) in zip(documents, pairs, strict=True):
        joined = "".join(split_sentences(doc))
        assert (a + b if label == 1 else b + a) == joined  # both halves from the same document, one order


def test_pretraining_with_sop(documents: list[str], zh_tokenizer_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(documents[:300]) + "\n", encoding="utf-8")
    summary = run_pretrain(PretrainConfig(corpus=[str(corpus)], tokenizer=str(zh_tokenizer_dir), sentence_task="sop",
                                          out=str(tmp_path / "pt"), dev_fraction=0.1,
                                          model=ModelOptions(size="tiny", max_len=96),
                                          train=TrainConfig(lr=1e-3, max_steps=4, eval_every=2, batch_size=8,
                                                            progress=False, tensorboard=False)))
    assert 0 <= summary["dev"]["sop_accuracy"] <= 1 and summary["dev"]["loss"] > 0
    model, _, _ = load_model_dir(tmp_path / "pt" / "best")
    assert set(model.head_specs) == {"mlm", "sop"} and model.head_specs["sop"]["labels"] == ["swapped", "ordered"]
    with pytest.raises(ValueError, match="nsp or sop"):
        make_pairs(documents, "xyz", seed=0)
