"""Time budgets (``--budget``): the learning rate follows the share of the time spent and reaches zero as the
stage ends, on time, whatever the machine's speed; a budget shadowed by ``lmcraft tune``'s own keeps its
default in the trials."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lmcraft.cli.parser import build_parser
from lmcraft.config import TrainConfig, budget_seconds, from_namespace
from lmcraft.finetune import run_finetune
from lmcraft.stage_options import FinetuneConfig
from lmcraft.train.optim import warmup_linear_share
from lmcraft.tune.options import TuneConfig
from lmcraft.tune.space import configure

BUDGET_S = 12.0


def test_the_learning_rate_follows_the_share_of_time() -> None:
    assert warmup_linear_share(0.0, warmup=0.1) == 0.0
    assert warmup_linear_share(0.05, warmup=0.1) == pytest.approx(0.5)
    assert warmup_linear_share(0.1, warmup=0.1) == pytest.approx(1.0)
    assert warmup_linear_share(0.55, warmup=0.1) == pytest.approx(0.5)
    assert warmup_linear_share(1.0, warmup=0.1) == 0.0 and warmup_linear_share(1.3, warmup=0.1) == 0.0
    assert warmup_linear_share(0.0, warmup=0.0) == 1.0
    assert budget_seconds("90s") == 90 and budget_seconds("8m") == 480 and budget_seconds("1.5h") == 5400
    for bad in ("soon", "0m", "-5m"):
        with pytest.raises(ValueError, match="expected a time such as 90s"):
            TrainConfig(budget=bad)


def test_a_budgeted_stage_ends_on_time_with_the_learning_rate_at_zero(sentiment_dir: Path, zh_tokenizer_dir: Path,
                                                                       tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 400), ("dev", 100), ("test", 100)):
        lines = (sentiment_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = configure(FinetuneConfig(), {"train.budget": f"{BUDGET_S:g}s", "train.eval_every": 25,
                                       "train.batch_size": 16, "train.warmup_ratio": 0.1, "train.patience": 0,
                                       "train.progress": False, "train.tensorboard": False, "model.size": "tiny",
                                       "model.max_len": 48, "baseline": False},
                    data=str(data), out=str(tmp_path / "run"), **{"start.tokenizer": str(zh_tokenizer_dir)})
    began = time.perf_counter()
    summary = run_finetune(cfg)
    took = time.perf_counter() - began
    assert took <= BUDGET_S * 1.1, f"the stage took {took:.1f} s of a {BUDGET_S} s budget"
    assert took >= BUDGET_S * 0.8  # the time was used, not left idle
    assert summary["final_lr"] == 0.0
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
           if r["split"] == "train" and "lr" in r]
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) - 1 and max(lrs) <= cfg.train.lr  # rose, then fell
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:], strict=False))
    assert summary["steps"] > 400 / 16  # more than an epoch: the budget, not --epochs, set the length
    assert "test" in summary


def test_tune_budget_is_the_study_s_and_trials_keep_no_budget_of_their_own() -> None:
    parser = build_parser()
    cfg = from_namespace(TuneConfig, parser.parse_args(["tune", "--budget", "20m"]))
    assert cfg.budget == "20m" and cfg.finetune.train.budget == ""
    finetune = from_namespace(FinetuneConfig, parser.parse_args(["finetune", "--budget", "5m"]))
    assert finetune.train.budget == "5m"
