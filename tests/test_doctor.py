"""The training doctor: each rule on a synthetic metrics log with its pathology, and a healthy log that finds
nothing. The logs have the shape ``train/loop.py`` writes (train records with loss and lr, dev records)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lmcraft.config import TrainConfig
from lmcraft.train.doctor import Checkup, diagnose, write_diagnosis


def log(train_losses: list[float], dev: list[float], *, every: int = 10) -> list[dict]:
    """Train losses logged every ``every`` steps; dev accuracy after each block of len(train)/len(dev) logs."""
    records: list[dict] = []
    per_eval = len(train_losses) // len(dev)
    for i, loss in enumerate(train_losses):
        step = (i + 1) * every
        records.append({"step": step, "split": "train", "loss": loss, "lr": 1e-4})
        if (i + 1) % per_eval == 0:
            k = (i + 1) // per_eval - 1
            best = all(dev[k] > d for d in dev[:k])
            records.append({"step": step, "split": "dev", "accuracy": dev[k], "best": best})
    return records


def checkup(**kw: object) -> Checkup:
    base: dict = {"stage": "finetune", "metric": "accuracy", "greater_is_better": True,
                  "train": TrainConfig(lr=1e-4, epochs=3.0), "dev_size": 10_000}
    return Checkup(**{**base, **kw})


def rules(records: list[dict], c: Checkup) -> dict:
    return {f.rule: f for f in diagnose(records, c)}


# a healthy run: the loss falls and flattens, dev rises and settles with clear steps, labels balanced
HEALTHY_LOSS = [1.0, 0.7, 0.5, 0.4, 0.35, 0.33, 0.32, 0.315, 0.31, 0.31, 0.31, 0.31]
HEALTHY_DEV = [0.70, 0.80, 0.85, 0.84]


def test_a_healthy_run_finds_nothing(tmp_path: Path) -> None:
    c = checkup(label_counts={"pos": 500, "neg": 480})
    assert diagnose(log(HEALTHY_LOSS, HEALTHY_DEV), c) == []
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log(HEALTHY_LOSS, HEALTHY_DEV)))
    assert write_diagnosis(tmp_path, c) == []
    assert json.loads((tmp_path / "diagnosis.json").read_text()) == []
    assert "Nothing to report" in (tmp_path / "diagnosis.md").read_text()


def test_a_loss_spike_asks_for_a_lower_learning_rate() -> None:
    losses = [1.0, 0.8, 0.6, 0.5, 2.5, 1.5, 0.9, 0.8, 0.7, 0.6, 0.55, 0.5]
    found = rules(log(losses, HEALTHY_DEV), checkup())["divergence"]
    # windows of 3: (2.5, 1.5, 0.9) from step 50 against the lowest before it, (0.8, 0.6, 0.5)
    assert found.value == pytest.approx((2.5 + 1.5 + 0.9) / (0.8 + 0.6 + 0.5))
    assert "steps 50-70" in found.title
    assert found.command == "lmcraft finetune ... --lr 3.3e-05"


# logged train losses of a real run (quickstart encoder on the sentiment data, default options, seed 0): one
# batch's loss each, so they jump (0.1 at step 1160, 0.6 at step 1200) while the run is healthy
NOISY_REAL_LOSS = [
    0.73, 0.66, 0.68, 0.68, 0.64, 0.54, 0.49, 0.57, 0.53, 0.52, 0.43, 0.44, 0.4, 0.31, 0.52, 0.57, 0.55,
    0.5, 0.3, 0.31, 0.64, 0.5, 0.38, 0.34, 0.36, 0.31, 0.42, 0.41, 0.26, 0.3, 0.23, 0.36, 0.34, 0.3,
    0.23, 0.27, 0.41, 0.42, 0.46, 0.26, 0.5, 0.45, 0.26, 0.47, 0.52, 0.4, 0.27, 0.42, 0.47, 0.35, 0.13,
    0.18, 0.39, 0.53, 0.44, 0.42, 0.56, 0.27, 0.1, 0.3, 0.6, 0.39, 0.49, 0.17, 0.25
]


# the same recipe's options (lr 3e-4, length-bucketed batches): by the third epoch the losses near zero
NEAR_ZERO_REAL_LOSS = [
    0.72, 0.7, 0.65, 0.67, 0.61, 0.55, 0.73, 0.26, 0.82, 0.44, 0.31, 0.37, 0.4, 0.39, 0.36, 0.3, 0.54, 0.27, 0.35,
    0.26, 0.54, 0.5, 0.24, 0.21, 0.28, 0.22, 0.18, 0.43, 0.34, 0.61, 0.13, 0.18, 0.15, 0.14, 0.2, 0.49, 0.24, 0.16,
    0.24, 0.18, 0.33, 0.4, 0.1, 0.23, 0.04, 0.24, 0.26, 0.13, 0.08, 0.2, 0.2, 0.01, 0.04, 0.06, 0.03, 0.31, 0.19,
    0.14, 0.31, 0.08, 0.06, 0.07, 0.34, 0.41, 0.19,
]


@pytest.mark.parametrize("losses", [NOISY_REAL_LOSS, NEAR_ZERO_REAL_LOSS], ids=["noisy", "near-zero"])
def test_the_noise_of_single_batch_losses_is_not_divergence(losses: list[float]) -> None:
    assert max(losses[40:]) / min(losses[:60]) > 2  # point against point it would be a spike
    assert "divergence" not in rules(log(losses, [0.81, 0.83, 0.84, 0.84, 0.845]), checkup())


def test_non_finite_steps_are_divergence() -> None:
    records = log(HEALTHY_LOSS, HEALTHY_DEV)
    records.insert(3, {"step": 30, "split": "train", "skipped": "non-finite loss"})
    found = rules(records, checkup(train=TrainConfig(lr=1e-3, warmup_ratio=0.0)))["divergence"]
    assert found.value == 1
    assert found.command == "lmcraft finetune ... --lr 0.00033 --warmup-ratio 0.1"


def test_no_learning_asks_for_a_higher_learning_rate() -> None:
    losses = [0.693, 0.70, 0.69, 0.695, 0.69, 0.692, 0.69, 0.691, 0.69, 0.69, 0.69, 0.69]
    found = rules(log(losses, [0.5, 0.5, 0.49, 0.5]), checkup(train=TrainConfig(lr=1e-6)))
    assert set(found) == {"no_learning"}
    assert found["no_learning"].value == pytest.approx((0.693 - 0.69) / 0.693, abs=1e-3)
    assert found["no_learning"].command == "lmcraft finetune ... --lr 3e-06"


def test_overfitting_names_the_fall_from_the_best() -> None:
    losses = [1.0, 0.7, 0.5, 0.4, 0.3, 0.2, 0.12, 0.08, 0.05, 0.03, 0.02, 0.01]
    found = rules(log(losses, [0.70, 0.85, 0.80, 0.74]), checkup(train=TrainConfig(lr=1e-4, max_steps=120)))
    assert set(found) == {"overfitting"}
    assert found["overfitting"].value == pytest.approx(0.11)
    assert "step 60" in found["overfitting"].advice
    assert found["overfitting"].command == "lmcraft finetune ... --max-steps 60"


def test_underfitting_asks_to_train_longer() -> None:
    losses = [1.0, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4]
    found = rules(log(losses, [0.60, 0.65, 0.70, 0.76]), checkup())
    assert set(found) == {"underfitting"}
    assert found["underfitting"].value == pytest.approx(0.06)
    assert found["underfitting"].command == "lmcraft finetune ... --epochs 6"
    budgeted = rules(log(losses, [0.60, 0.65, 0.70, 0.76]), checkup(train=TrainConfig(budget="35m")))
    assert budgeted["underfitting"].command == "lmcraft finetune ... --budget 70m"  # not --epochs, which it ignores


def test_a_small_dev_set_cannot_tell_the_last_evaluations_apart() -> None:
    found = rules(log(HEALTHY_LOSS, [0.6, 0.7, 0.80, 0.80, 0.775, 0.79]), checkup(dev_size=40))["small_dev"]
    assert found.value == pytest.approx(math.sqrt(0.8 * 0.2 / 40))  # 0.063
    assert "40 examples" in found.title
    assert "about 1,024 examples" in found.advice  # 0.16 · (2 / 0.025)²


def test_label_imbalance_from_the_training_counts() -> None:
    found = rules(log(HEALTHY_LOSS, HEALTHY_DEV), checkup(label_counts={"pos": 900, "neg": 100}))
    assert set(found) == {"label_imbalance"}
    assert found["label_imbalance"].value == pytest.approx(9.0)
    assert "90%" in found["label_imbalance"].title
    assert found["label_imbalance"].command == "lmcraft finetune ... --metric macro_f1"


def test_a_loss_metric_is_read_the_right_way_round() -> None:
    """Pretraining selects on the dev loss (lower is better): a falling dev loss is not over-fitting."""
    records = [{**r, "loss": 5 - r["accuracy"]} if r["split"] == "dev" else r
               for r in log(HEALTHY_LOSS, HEALTHY_DEV)]
    for r in records:
        r.pop("accuracy", None)
    assert diagnose(records, checkup(stage="pretrain", metric="loss", greater_is_better=False)) == []


def test_pretraining_writes_its_diagnosis(tmp_path: Path, peoples_daily: Path, zh_tokenizer_dir: Path) -> None:
    """The shared finish of a stage runs the doctor (fine-tuning's is checked in test_tune.py)."""
    from lmcraft.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(peoples_daily.read_text(encoding="utf-8").splitlines()[:200]) + "\n", encoding="utf-8")
    assert main(["pretrain", "--corpus", str(corpus), "--tokenizer", str(zh_tokenizer_dir), "--out",
                 str(tmp_path / "mlm"), "--size", "tiny", "--max-len", "32", "--max-steps", "3", "--eval-every", "3",
                 "--no-progress", "--no-tensorboard"]) == 0
    summary = json.loads((tmp_path / "mlm" / "summary.json").read_text())
    findings = json.loads((tmp_path / "mlm" / "diagnosis.json").read_text())
    assert summary["diagnosis"] == [f["rule"] for f in findings]
    assert (tmp_path / "mlm" / "diagnosis.md").read_text().startswith("# Diagnosis of this pretrain run")
