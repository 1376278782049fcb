"""``lmcraft curve``: random subsets of the training split, the same for every model of a seed; the three
models at each point with mean ± std; a rerun that trains nothing again; clear errors. Tiny model
(``--size tiny --max-len 32``), 40 training examples, a few steps per run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmcraft.cli import main
from lmcraft.config import from_dict
from lmcraft.curve.options import CurveConfig
from lmcraft.finetune import run_finetune, take_train
from lmcraft.stage_options import FinetuneConfig


@pytest.fixture(scope="module")
def tiny_model(tiny_data: Path, zh_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model directory to start from (trained a few steps; the curve only needs its weights to load)."""
    out = tmp_path_factory.mktemp("curve-init")
    cfg = from_dict(FinetuneConfig, {"data": str(tiny_data), "out": str(out), "baseline": False,
                                     "start": {"tokenizer": str(zh_tokenizer_dir)},
                                     "model": {"size": "tiny", "max_len": 32},
                                     "train": {"max_steps": 4, "batch_size": 8, "progress": False,
                                               "tensorboard": False}})
    run_finetune(cfg)
    return out / "best"


def test_a_subset_is_random_per_seed_in_file_order_and_the_same_on_every_call() -> None:
    items = list(range(100))
    a, b = take_train(items, 10, 0), take_train(items, 10, 1)
    assert a == take_train(items, 10, 0) and a != b
    assert a == sorted(a) and len(set(a)) == 10
    assert take_train(items, 10) == items[:10] and take_train(items, 0, 3) == items == take_train(items, 500, 3)


def test_the_curve_trains_every_model_at_every_point_and_a_rerun_trains_nothing(
        tiny_data: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "curve"
    argv = ["curve", "--task", "classify", "--data", str(tiny_data), "--init", str(tiny_model), "--sizes", "16",
            "all", "--seeds", "0", "1", "--min-steps", "6", "--epochs", "1", "--scratch-lr", "2e-3",
            "--batch-size", "8", "--max-len", "32", "--no-progress", "--no-tensorboard", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "curve.json").read_text(encoding="utf-8"))
    assert summary["sizes"] == [16, 40] and summary["metric"] == "accuracy"
    for model in ("pretrained", "scratch", "baseline"):
        for n in ("16", "40"):
            point = summary["models"][model][n]
            assert len(point["values"]) == 2 and 0 <= point["mean"] <= 1
    # 16 labels: 1 epoch of 8 would be 2 steps; the floor makes them 6. The scratch run has its own lr.
    scratch = json.loads((out / "runs" / "scratch-16-seed1" / "best" / "run_card.json").read_text())["config"]
    assert scratch["start"]["random_init"] and scratch["train"]["lr"] == 2e-3 and scratch["train"]["seed"] == 1
    assert scratch["max_train_examples"] == 16 and scratch["train_sample_seed"] == 1
    assert json.loads((out / "runs" / "pretrained-16-seed1.json").read_text())["steps"] == 6
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "curve.md").read_text(encoding="utf-8")
    assert "| 16 |" in table and "pretrained − scratch" in table
    capsys.readouterr()

    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    assert len(stamps) == 12  # 2 sizes × 2 seeds × 3 models
    assert main(argv) == 0
    assert "== curve [" not in capsys.readouterr().out  # no run started again
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == stamps
    # other settings into the same directory would be averaged with these runs: refused, naming them
    assert main([*argv, "--lr", "1e-2"]) == 2
    assert "holds a curve made with other settings (finetune.train.lr)" in capsys.readouterr().err


def test_the_curve_plots_each_task_s_headline_metric() -> None:
    from lmcraft.curve.run import curve_metric
    from lmcraft.tasks.registry import task_class

    assert [curve_metric(task_class(t), "") for t in ("classify", "tag", "relate", "seq2seq")] == \
        ["accuracy", "f1", "micro_f1", "bleu"]
    assert curve_metric(task_class("classify"), "macro_f1") == "macro_f1"


def test_bad_points_are_refused_with_the_reason(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--sizes takes positive numbers"):
        CurveConfig(sizes=["200", "many"])
    with pytest.raises(ValueError, match="--models takes"):
        CurveConfig(models=["pretrained", "gpt"])
    assert CurveConfig(sizes=["200", "200", "all"], seeds=["1", "1"]).sizes == ["200", "all"]  # no double weight
    argv = ["curve", "--data", str(tiny_data), "--models", "baseline", "--sizes", "41", "--out", str(tmp_path)]
    assert main(argv) == 2  # the train split holds 40
    argv = ["curve", "--data", str(tiny_data), "--sizes", "10", "--out", str(tmp_path)]
    assert main(argv) == 2  # pretrained and scratch need --init
