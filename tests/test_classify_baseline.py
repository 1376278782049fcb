"""The classification baseline chooses its features, classifier and C on dev alone, and names its choice; a
from-scratch fine-tuning run without --tokenizer trains one on its training texts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lmcraft.cli import main
from lmcraft.data.readers import Fields
from lmcraft.tasks.classify.baseline import tfidf_baseline
from lmcraft.tasks.classify.task import Classify
from lmcraft.text import cjk_share
from lmcraft.tokenizer import TextTokenizer, recommended_kind


def _splits(sentiment_dir: Path, n: dict[str, int]) -> dict[str, list]:
    return {split: Classify.read(sentiment_dir / f"{split}.jsonl", Fields())[:k] for split, k in n.items()}


def test_language_is_the_share_of_cjk_characters() -> None:
    assert cjk_share(["这部手机很好用", "电池 OK"]) == pytest.approx(9 / 11)
    assert cjk_share(["A fine phone, really."]) == 0 and cjk_share([]) == 0
    assert recommended_kind(["这部手机很好用"]) == "wordpiece"
    assert recommended_kind(["A fine phone", "好"]) == "bpe"


def test_the_baseline_is_chosen_on_dev_only(sentiment_dir: Path) -> None:
    splits = _splits(sentiment_dir, {"train": 600, "dev": 200, "test": 200})
    result = tfidf_baseline(splits["train"], splits["dev"], splits["test"])
    flip = {"pos": "neg", "neg": "pos"}
    flipped = [replace(ex, label=flip[ex.label]) for ex in splits["test"]]
    again = tfidf_baseline(splits["train"], splits["dev"], flipped)

    assert again["name"] == result["name"] and again["chosen"] == result["chosen"]
    assert again["dev"] == result["dev"] and again["search"] == result["search"]
    assert again["test"]["accuracy"] == pytest.approx(1 - result["test"]["accuracy"])  # only the test score moved
    assert result["language"]["chinese"] and "char_wb" not in result["name"]  # Chinese: no word boundaries
    assert f"chosen on dev: {result['dev']['accuracy']:.3f}" in result["name"]
    assert len(result["search"]) == 18 and all("test" not in row for row in result["search"])
    assert result["dev"]["accuracy"] == max(row["dev_accuracy"] for row in result["search"])
    assert Classify.baseline(splits, {})["name"] == result["name"]  # the one the fine-tuning summary prints


def test_finetune_from_scratch_without_tokenizer_trains_one(sentiment_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for split, k in (("train", 200), ("dev", 40), ("test", 40)):
        lines = (sentiment_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:k]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    assert main(["finetune", "--data", str(data), "--out", str(out), "--size", "tiny", "--max-len", "64",
                 "--max-steps", "4", "--eval-every", "2", "--batch-size", "8", "--no-progress",
                 "--no-tensorboard"]) == 0
    printed = capsys.readouterr().out
    assert "no --tokenizer given: trained a wordpiece tokenizer" in printed
    tokenizer = TextTokenizer.load(out / "tokenizer")
    assert tokenizer.vocab_size > 100
    assert TextTokenizer.load(out / "best").vocab_size == tokenizer.vocab_size  # the model saved with it
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert 0 <= summary["test"]["accuracy"] <= 1
    assert "chosen on dev" in summary["baseline"]["name"] and summary["baseline"]["name"] in printed
