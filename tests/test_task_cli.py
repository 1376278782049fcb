"""Relation extraction and QA through the command line: finetune (with the classic baseline in the same
report), then evaluate and predict on the saved model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmcraft.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
TRAIN = ["--size", "tiny", "--max-len", "96", "--max-steps", "6", "--eval-every", "3", "--batch-size", "8",
         "--lr", "2e-3", "--no-progress", "--no-tensorboard"]


def test_relate_finetune_evaluate_predict(tmp_path: Path, zh_tokenizer_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "re"
    assert main(["finetune", "--task", "relate", "--data", str(FIXTURES / "relations"), "--tokenizer",
                 str(zh_tokenizer_dir), "--out", str(out), *TRAIN]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["test"]["n"] == 21 and 0 <= summary["test"]["micro_f1"] <= 1
    assert summary["baseline"]["test"]["micro_f1"] > 0.5  # the TF-IDF baseline on the same 21 pairs
    assert "baseline on the same test split" in capsys.readouterr().out
    records = [json.loads(x) for x in (out / "test_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 21 and {"head", "tail", "gold", "predicted"} <= set(records[0])
    assert main(["evaluate", str(out / "best"), str(FIXTURES / "relations" / "test.jsonl"), "--json",
                 str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["micro_f1"] == pytest.approx(summary["test"]["micro_f1"])
    capsys.readouterr()
    assert main(["predict", str(out / "best"), "--file", str(FIXTURES / "relations" / "dev.jsonl")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20 and json.loads(lines[0])["predicted"] in {"no_relation", "任职", "位于", "国籍", "会见"}
    assert main(["predict", str(out / "best"), "一句话"]) == 2  # relations need spans: --file only


def test_qa_finetune_evaluate_predict(tmp_path: Path, zh_tokenizer_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev", "test"):
        shutil.copy(FIXTURES / "qa" / "cmrc-peoples-daily.json", data / f"{split}.json")
    out = tmp_path / "qa"
    assert main(["finetune", "--task", "qa", "--data", str(data), "--tokenizer", str(zh_tokenizer_dir),
                 "--out", str(out), *TRAIN]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["test"]["n"] == 36 and {"exact_match", "f1"} <= set(summary["test"])
    assert 0 < summary["baseline"]["test"]["f1"] < 1 and summary["baseline"]["test"]["exact_match"] == 0
    config = json.loads((out / "best" / "config.json").read_text(encoding="utf-8"))
    assert config["heads"]["qa"] == {"kind": "span", "task": "qa", "max_answer_tokens": 30, "doc_stride": 64,
                                     "null_answers": True}
    capsys.readouterr()
    assert main(["predict", str(out / "best"), "--file", str(data / "test.json")]) == 0
    answers = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    contexts = [p["context"] for d in json.loads((data / "test.json").read_text())["data"] for p in d["paragraphs"]]
    assert len(answers) == 36 and all(any(a["predicted"] in c for c in contexts) for a in answers)
