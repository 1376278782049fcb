"""What every training stage does at its end: the summary of the run, the run card of its best model and
``summary.json``, written once here for pretraining, fine-tuning and multi-task learning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmcraft.config import to_dict
from lmcraft.runcard import write_run_card
from lmcraft.train.doctor import Checkup, write_diagnosis
from lmcraft.train.loop import TrainResult

BOOKKEEPING = ("step", "split", "best", "elapsed_s")  # keys of a dev evaluation that are not metrics


def run_summary(stage: str, out: Path, result: TrainResult, prepare_s: float) -> dict[str, Any]:
    """The summary every stage starts from: where the best model is, steps, the best dev metrics, times."""
    return {
        "stage": stage, "model_dir": str(out / "best"), "steps": result.steps, "best_step": result.best_step,
        "stopped_early": result.stopped_early, "final_lr": result.final_lr,
        "dev": {k: v for k, v in result.best_metrics.items() if k not in BOOKKEEPING},
        "wall_time_s": {"prepare": prepare_s, "train": result.seconds},
    }


def finish_stage(out: Path, summary: dict[str, Any], *, config: Any, data: list[str | Path], seed: int,
                 parent: dict[str, Any] | None = None, checkup: Checkup | None = None) -> dict[str, Any]:
    """Write the run card of ``out/best`` (config, data hashes, seed, versions, times, dev and test metrics)
    and ``out/summary.json``; returns ``summary``. With a ``checkup`` the training doctor (``train/doctor.py``)
    reads the run's ``metrics.jsonl`` first and writes ``out/diagnosis.md`` and ``diagnosis.json``; the
    summary lists the rules that found something."""
    if checkup is not None:
        summary["diagnosis"] = [f.rule for f in write_diagnosis(out, checkup)]
    write_run_card(out / "best", stage=summary["stage"], config=to_dict(config), data=data, seed=seed,
                   wall_time_s=summary["wall_time_s"],
                   metrics={k: summary[k] for k in ("dev", "test") if k in summary}, parent=parent)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary
