"""The study runner of ``lmcraft tune``: TPE samples fine-tuning options from the search space, the median
pruner stops weak trials at their dev evaluations, and the best configuration is retrained with several
seeds.

Each trial is an ordinary fine-tuning run in ``OUT/trial-N/`` (its run card, metrics, diagnosis). The study
is an Optuna journal, ``OUT/study.log``, appended as trials start and finish: after a crash or Ctrl-C,
``--resume`` loads it, marks the trials that were running as failed and runs their parameters again in new
trials; a finished trial never runs again. The tuner knows tasks only through the registry: the task's
metric, its direction and its own search dimensions.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from lmcraft.config import budget_seconds
from lmcraft.finetune import run_finetune
from lmcraft.tasks.registry import task_class
from lmcraft.train.errors import NonFiniteLossError
from lmcraft.tune.options import TuneConfig
from lmcraft.tune.report import write_report
from lmcraft.tune.space import configure, load_space, search_space, suggest

STUDY = "lmcraft-tune"
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def open_study(out: Path, *, direction: str, resume: bool, seed: int, prune_after: int | None) -> optuna.Study:
    """The study of ``out/study.log`` (created, or loaded with ``resume``): TPE, and the median pruner once
    ``prune_after`` trials have finished (``None``: no pruning)."""
    journal = out / "study.log"
    if journal.exists() and not resume:
        raise ValueError(f"{out} already holds a study ({journal}); continue it with --resume, or give another --out")
    out.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name=STUDY, storage=storage, load_if_exists=True, direction=direction,
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.NopPruner() if prune_after is None
                                else optuna.pruners.MedianPruner(n_startup_trials=prune_after))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # cut off by a crash
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params)
        print(f"tune: trial {trial.number} was cut off; its parameters run again in a new trial")
    return study


def prune_hook(trial: optuna.Trial, metric: str, stopped: list[int]) -> Any:
    """The ``on_eval`` of a trial's training loop: report the dev metric; True (stop) when the pruner says
    the trial is weak, remembering the step in ``stopped``."""
    def on_eval(step: int, metrics: dict[str, Any]) -> bool:
        trial.report(float(metrics[metric]), step)
        if trial.should_prune():
            stopped.append(step)
            return True
        return False
    return on_eval


def _numbers(d: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of a summary's dev or test entry (not the example count ``n``)."""
    return {k: float(v) for k, v in d.items() if isinstance(v, int | float) and not isinstance(v, bool) and k != "n"}


def _mean_std(runs: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
    keys = [k for k in runs[0] if all(k in r for r in runs)] if runs else []
    return {k: {"mean": statistics.fmean(r[k] for r in runs),
                "std": statistics.stdev([r[k] for r in runs]) if len(runs) > 1 else 0.0,
                "values": [r[k] for r in runs]} for k in keys}


def _mean_duration(trials: list[Any]) -> float:
    durations = [t.duration.total_seconds() for t in trials if t.duration is not None]
    return statistics.fmean(durations) if durations else 0.0


def run_tune(cfg: TuneConfig) -> dict[str, Any]:
    began = time.monotonic()
    base = cfg.finetune
    out = Path(base.out)
    task = task_class(base.task)
    metric = base.metric or task.metric
    direction = "maximize" if task.greater_is_better else "minimize"
    dims, fixed = search_space(task, base, load_space(cfg.space) if cfg.space else None)
    budget = budget_seconds(cfg.budget)
    study = open_study(out, direction=direction, resume=base.train.resume, seed=base.train.seed,
                       prune_after=cfg.prune_after if cfg.prune else None)
    print(f"tune ({base.task}): {direction} dev {metric} over {', '.join(dims)}; budget {cfg.budget}; study in "
          f"{out / 'study.log'}")

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, dims)
        run_dir = out / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        stopped: list[int] = []
        summary = run_finetune(configure(base, {**fixed, **params}, out=str(run_dir), **{"train.resume": False}),
                               on_eval=prune_hook(trial, metric, stopped))
        trial.set_user_attr("dev", _numbers(summary["dev"]))
        trial.set_user_attr("test", _numbers(summary.get("test", {})))
        trial.set_user_attr("diagnosis", summary.get("diagnosis", []))
        if stopped:
            raise optuna.TrialPruned(f"dev {metric} below the median at step {stopped[0]}")
        return float(summary["dev"][metric])

    def enough(study: optuna.Study, _trial: Any) -> None:
        """Stop starting trials once the count is reached, or when the time spent, one more trial and the
        final retraining (both estimated from the trials so far) would pass the budget."""
        finished = study.get_trials(deepcopy=False, states=DONE)
        if cfg.trials and len(finished) >= cfg.trials:
            study.stop()
        next_trial = _mean_duration(finished)
        whole_run = _mean_duration([t for t in finished if t.state == TrialState.COMPLETE]) or next_trial
        if time.monotonic() - began + next_trial + whole_run * max(cfg.final_seeds - 1, 0) > budget:
            print("tune: the budget is spent; no more trials")
            study.stop()

    remaining = cfg.trials - len(study.get_trials(deepcopy=False, states=DONE)) if cfg.trials else None
    if remaining is None or remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=budget, callbacks=[enough],
                       catch=(NonFiniteLossError,))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"no trial of {out / 'study.log'} finished; see the trials' directories and logs")
    best = study.best_trial
    final = retrain(cfg, out, {**fixed, **best.params}, metric, best, direction)
    summary = {
        "task": base.task, "metric": metric, "direction": direction, "budget": cfg.budget,
        "trials": {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState},
        "space": {k: dict(v) for k, v in dims.items()}, "fixed": fixed,
        "best_trial": {"number": best.number, "value": best.value, "params": best.params,
                       "run_dir": best.user_attrs["run_dir"]},
        "final": final, "model_dir": str(out / "best"), "report": str(out / "tune_report.html"),
        "wall_time_s": time.monotonic() - began,
    }
    (out / "tune_summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_report(out / "tune_report.html", study, summary)
    return summary


def retrain(cfg: TuneConfig, out: Path, params: dict[str, Any], metric: str, best: optuna.trial.FrozenTrial,
            direction: str) -> dict[str, Any]:
    """The best configuration trained with ``cfg.final_seeds`` seeds: mean ± std on dev and test; the model of
    the best seed (by dev) becomes ``out/best``. The first seed is the trials' own, so the best trial (which
    ran to its end) is that run already and is not trained again: training is exact for a seed
    (tests/test_tune.py checks it). Without final seeds the best trial's model is kept."""
    base = cfg.finetune
    trial_dir = Path(best.user_attrs["run_dir"])
    runs: list[tuple[Path, dict[str, Any]]] = []
    for k in range(cfg.final_seeds):
        if k == 0 and "train.seed" not in params:
            print(f"tune: seed {base.train.seed} of the best configuration is trial {best.number}: not run again")
            runs.append((trial_dir, {"dev": best.user_attrs["dev"], "test": best.user_attrs["test"]}))
            continue
        run_dir = out / f"final-seed-{k}"
        print(f"tune: retraining the best configuration, seed {base.train.seed + k}")
        summary = run_finetune(configure(base, params, out=str(run_dir),
                                         **{"train.seed": base.train.seed + k, "train.resume": False}))
        runs.append((run_dir, summary))
    if runs:
        pick = max if direction == "maximize" else min
        source = pick(runs, key=lambda r: float(r[1]["dev"][metric]))[0] / "best"
    else:
        source = trial_dir / "best"
    staging = out / "best.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    shutil.rmtree(out / "best", ignore_errors=True)
    staging.rename(out / "best")
    return {"seeds": [base.train.seed + k for k in range(len(runs))], "runs": [str(d) for d, _ in runs],
            "best_model_from": str(source),
            "dev": _mean_std([_numbers(s["dev"]) for _, s in runs]),
            "test": _mean_std([_numbers(s["test"]) for _, s in runs if s.get("test")])}
