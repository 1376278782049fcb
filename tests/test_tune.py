"""``lmcraft tune``: the search space as data, the pruning hook, a whole study with its report, and a study
killed after its first trial that ``--resume`` finishes without running that trial again. Tiny model
(``--size tiny --max-len 32``), 40 training examples, a few steps per trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from lmcraft.cli import main
from lmcraft.cli.parser import build_parser
from lmcraft.config import budget_seconds, from_dict, from_namespace
from lmcraft.finetune import run_finetune
from lmcraft.stage_options import FinetuneConfig, InitOptions
from lmcraft.tasks.registry import task_class
from lmcraft.tune.options import TuneConfig
from lmcraft.tune.space import configure, search_space
from lmcraft.tune.study import STUDY, open_study, prune_hook

SRC = Path(__file__).resolve().parents[1] / "src"


def tune_args(data: Path, tokenizer: Path, out: Path, *extra: str) -> list[str]:
    return ["tune", "--task", "classify", "--data", str(data), "--tokenizer", str(tokenizer), "--size", "tiny",
            "--max-len", "32", "--max-steps", "4", "--eval-every", "2", "--batch-size", "8", "--budget", "5m",
            "--no-progress", "--no-tensorboard", "--out", str(out), *extra]


def test_the_search_space_is_data_from_the_registry() -> None:
    classify = task_class("classify")
    dims, fixed = search_space(classify, FinetuneConfig())
    assert dims["train.lr"]["log"] is True
    assert "task_options.classify.pooling" in dims  # the task's own dimension, from its class
    assert {"train.epochs", "model.dropout"} <= set(dims) and fixed == {}
    # what cannot act is left out: epochs under --max-steps, dropout of a model that --init brings
    base = configure(FinetuneConfig(start=InitOptions(init="some/model")), {"train.max_steps": 10})
    dims, _ = search_space(classify, base, {"train.batch_size": 16, "train.weight_decay": None})
    assert not {"train.epochs", "model.dropout", "train.weight_decay", "train.batch_size"} & set(dims)
    dims, fixed = search_space(classify, FinetuneConfig(), {"train.batch_size": 16})
    assert fixed == {"train.batch_size": 16}
    trial_cfg = configure(FinetuneConfig(), {**fixed, "task_options.classify.pooling": "mean"})
    assert trial_cfg.task_options.classify.pooling == "mean" and trial_cfg.train.batch_size == 16
    with pytest.raises(ValueError, match="not an option"):
        search_space(classify, FinetuneConfig(), {"train.nonsense": 1})
    with pytest.raises(ValueError, match="a dimension is"):
        search_space(classify, FinetuneConfig(), {"train.lr": {"type": "float", "low": 1e-5}})
    assert budget_seconds("30m") == 1800 and budget_seconds("90s") == 90 and budget_seconds("1.5h") == 5400


def test_the_eval_hook_can_stop_a_run(tiny_data: Path, zh_tokenizer_dir: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, float]] = []

    def stop_at_once(step: int, metrics: dict) -> bool:
        calls.append((step, metrics["accuracy"]))
        return True

    cfg = configure(FinetuneConfig(), {"train.max_steps": 8, "train.eval_every": 2, "train.batch_size": 8,
                                       "train.progress": False, "train.tensorboard": False, "model.size": "tiny",
                                       "model.max_len": 32, "baseline": False},
                    data=str(tiny_data), out=str(tmp_path / "run"), **{"start.tokenizer": str(zh_tokenizer_dir)})
    summary = run_finetune(cfg, on_eval=stop_at_once)
    assert [step for step, _ in calls] == [2]
    assert summary["steps"] == 2 and summary["stopped_early"]
    assert (tmp_path / "run" / "best" / "run_card.json").exists()
    assert (tmp_path / "run" / "diagnosis.md").exists()  # the doctor ran at the shared finish


def test_the_pruning_hook_stops_a_trial_below_the_median() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    good = study.ask()
    assert prune_hook(good, "accuracy", [])(2, {"accuracy": 0.9}) is False  # no median yet
    study.tell(good, 0.9)
    hopeless, stopped = study.ask(), []
    assert prune_hook(hopeless, "accuracy", stopped)(2, {"accuracy": 0.1}) is True
    assert stopped == [2]


def test_no_prune_runs_every_trial_to_its_end(tmp_path: Path) -> None:
    kept = open_study(tmp_path / "a", direction="maximize", resume=False, seed=0, prune_after=None)
    assert isinstance(kept.pruner, optuna.pruners.NopPruner)
    pruned = open_study(tmp_path / "b", direction="maximize", resume=False, seed=0, prune_after=2)
    assert isinstance(pruned.pruner, optuna.pruners.MedianPruner)
    cfg = from_namespace(TuneConfig, build_parser().parse_args(["tune", "--no-prune"]))
    assert cfg.prune is False


def test_a_study_runs_and_writes_its_report(tiny_data: Path, zh_tokenizer_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tune"
    assert main(tune_args(tiny_data, zh_tokenizer_dir, out, "--trials", "2", "--final-seeds", "2")) == 0
    summary = json.loads((out / "tune_summary.json").read_text())
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 2
    assert summary["final"]["seeds"] == [0, 1]
    assert len(summary["final"]["dev"]["accuracy"]["values"]) == 2
    assert {"mean", "std"} <= set(summary["final"]["test"]["accuracy"])
    # seed 0 of the final retraining is the best trial itself, not trained again ...
    best_dir = Path(summary["best_trial"]["run_dir"])
    assert summary["final"]["runs"] == [str(best_dir), str(out / "final-seed-1")]
    assert not (out / "final-seed-0").exists()
    # ... which holds because the same options and seed train the same model: rerun the trial and compare
    card = json.loads((best_dir / "best" / "run_card.json").read_text())
    rerun = run_finetune(configure(from_dict(FinetuneConfig, card["config"]), {}, out=str(tmp_path / "rerun")))
    trial_summary = json.loads((best_dir / "summary.json").read_text())
    assert rerun["dev"] == trial_summary["dev"] and rerun["test"]["accuracy"] == trial_summary["test"]["accuracy"]
    assert summary["final"]["dev"]["accuracy"]["values"][0] == trial_summary["dev"]["accuracy"]
    assert (out / "best" / "config.json").exists() and (out / "best" / "run_card.json").exists()
    for n in (0, 1):
        assert (out / f"trial-{n}" / "best" / "run_card.json").exists()
        assert (out / f"trial-{n}" / "diagnosis.json").exists()
    page = (out / "tune_report.html").read_text()
    assert page.count("data:image/png;base64,") >= 1 and "Optimisation history" in page
    assert "http" not in page  # nothing to fetch
    capsys.readouterr()
    assert main(tune_args(tiny_data, zh_tokenizer_dir, out, "--trials", "1")) != 0  # a second study in the same place
    assert "continue it with --resume" in capsys.readouterr().err


def test_a_killed_study_resumes_without_running_a_finished_trial(tiny_data: Path, zh_tokenizer_dir: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "tune"
    args = tune_args(tiny_data, zh_tokenizer_dir, out, "--trials", "3", "--final-seeds", "0")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "lmcraft", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "trial-1").exists():  # trial 1 starts once trial 0 is told finished in the journal
            assert proc.poll() is None, "tune ended before its second trial"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first = (out / "trial-0" / "summary.json").stat().st_mtime_ns

    assert main([*args, "--resume"]) == 0
    study = optuna.load_study(study_name=STUDY, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.log"))))
    states = [t.state for t in study.trials]
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 3
    assert states[0] in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert [t.user_attrs["run_dir"] for t in study.trials].count(str(out / "trial-0")) == 1
    assert (out / "trial-0" / "summary.json").stat().st_mtime_ns == first  # trial 0 did not run again
    assert states[1] == optuna.trial.TrialState.FAIL  # cut off mid-run: its parameters ran again in a new trial
    assert study.trials[2].params == study.trials[1].params
    assert (out / "best" / "config.json").exists() and (out / "tune_report.html").exists()
