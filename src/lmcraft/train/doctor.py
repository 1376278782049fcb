"""The training doctor: a short diagnosis of a finished run, read from the records of its ``metrics.jsonl``.

Every rule is a pure function of the records (``train/runlog.py``: train records with ``loss`` and ``lr``,
``skipped`` records for non-finite steps, dev records with the task's metrics) and of a ``Checkup`` that
the stage fills in (the selecting metric, the options, the dev set's size, the training labels). Each
finding names the figure it comes from and one next command to try.

It lives in ``train/`` rather than ``tune/`` because it reads only the loop's own log and options, and the
shared finish of every stage (``stage.py``), which sits below ``tune/`` in the layers, calls it.

| rule | what it looks at |
|---|---|
| divergence | non-finite steps; a window of train losses rising to ``SPIKE_FACTOR`` × the lowest before (a real rise) |
| no_learning | the train loss fell by less than ``NO_LEARNING_DROP`` and the dev metric never improved |
| overfitting | the dev metric fell back from its best while the train loss kept falling |
| underfitting | the last evaluation was the best and the train loss was still falling: train longer |
| small_dev | the standard error of the dev metric, sqrt(p(1-p)/n), against the spread of the last evaluations |
| label_imbalance | the largest training label against the smallest |
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmcraft.config import TrainConfig, budget_seconds

SPIKE_FACTOR = 2.0  # a window of logged train losses whose mean is this many times the lowest before it
SPIKE_GIVEN_BACK = 0.5  # ... and gives back this share of the fall from the first window to the lowest
SPIKE_WINDOW = 3  # logged losses in a window at least (a tenth of them when there are more than 30)
SPIKE_WINDOW_MAX = 20  # and at most: a blow-up at the end of a long run is not averaged away
NO_LEARNING_DROP = 0.05  # a train loss that fell by less than this share of its first value did not learn
TREND_DROP = 0.02  # the train loss of the last third still falling by this share: the run was not done
IMBALANCE_RATIO = 3.0  # the largest label this many times the smallest is imbalanced
LAST_EVALS = 4  # how many of the last evaluations the dev set must tell apart
MIN_SE = 0.01  # below one point of standard error the dev set is not called small


@dataclass
class Checkup:
    """What the doctor needs besides the log, said by the stage that ran."""

    stage: str  # the subcommand, for the suggested commands: finetune, pretrain
    metric: str  # the dev metric that selected the best checkpoint
    greater_is_better: bool
    train: TrainConfig  # the run's loop options (learning rate, warm-up, length)
    dev_size: int = 0  # examples (or blocks) in the dev set; 0: unknown
    label_counts: dict[str, int] = field(default_factory=dict)  # training examples per label; empty: no labels


@dataclass
class Finding:
    rule: str  # one of the rules in the table above
    title: str  # one line: what is wrong
    figure: str  # the figure it comes from, in words
    value: float  # that figure's number
    advice: str  # what to do
    command: str  # one concrete next command


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _num(x: float) -> str:
    """A learning rate as a flag value: 3e-4, 1.5e-5."""
    return f"{x:.2g}"


def _train_losses(records: Sequence[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in records if r.get("split") == "train" and "loss" in r]


def _dev(records: Sequence[dict[str, Any]], metric: str) -> list[tuple[int, float]]:
    return [(r["step"], r[metric]) for r in records if r.get("split") == "dev" and metric in r]


def _better(a: float, b: float, greater: bool) -> bool:
    return a > b if greater else a < b


def check_divergence(records: Sequence[dict[str, Any]], c: Checkup) -> Finding | None:
    skipped = [r for r in records if r.get("split") == "train" and "skipped" in r]
    losses = _train_losses(records)
    lower = f"lmcraft {c.stage} ... --lr {_num(c.train.lr / 3)}" + (
        " --warmup-ratio 0.1" if c.train.warmup_ratio < 0.06 else "")
    advice = "lower the learning rate (a third of it) and keep a warm-up of at least 6% of the steps"
    if skipped:
        return Finding("divergence", f"{len(skipped)} step(s) had a non-finite loss or gradient", "skipped steps",
                       float(len(skipped)), advice, lower)
    # One logged loss is one batch's, noisy late in training (0.1 then 0.6 is common), so a spike is a
    # window of logged losses whose mean rises to SPIKE_FACTOR x the lowest window mean before it.
    width = min(max(SPIKE_WINDOW, len(losses) // 10), SPIKE_WINDOW_MAX)
    means = [sum(loss for _, loss in losses[k:k + width]) / width for k in range(len(losses) - width + 1)]
    # Near zero a ratio means little (0.05 to 0.12 is no divergence): the rise must also give back at least
    # SPIKE_GIVEN_BACK of what the run had learned since its first window.
    worst, at = 0.0, 0
    for k in range(1, len(means)):
        lowest = min(means[:k])
        gave_back = means[k] - lowest >= SPIKE_GIVEN_BACK * (means[0] - lowest)
        if lowest > 0 and gave_back and means[k] / lowest > worst:
            worst, at = means[k] / lowest, k
    if worst >= SPIKE_FACTOR:
        first, last = losses[at][0], losses[at + width - 1][0]
        return Finding("divergence", f"the train loss rose at steps {first}-{last}",
                       f"mean train loss of {width} logged steps / lowest such mean before it", worst, advice, lower)
    return None


def check_no_learning(records: Sequence[dict[str, Any]], c: Checkup) -> Finding | None:
    losses = _train_losses(records)
    dev = _dev(records, c.metric)
    if len(losses) < 3 or not math.isfinite(losses[0][1]) or losses[0][1] <= 0:
        return None
    tail = [loss for _, loss in losses[-max(1, len(losses) // 4):]]
    drop = (losses[0][1] - sum(tail) / len(tail)) / losses[0][1]
    dev_improved = any(_better(v, dev[0][1], c.greater_is_better) for _, v in dev[1:])
    if drop < NO_LEARNING_DROP and not dev_improved:
        return Finding("no_learning", "the model did not learn: the train loss barely fell and dev never improved",
                       "relative drop of the train loss from the first log to the last quarter", drop,
                       "raise the learning rate (three times)", f"lmcraft {c.stage} ... --lr {_num(c.train.lr * 3)}")
    return None


def check_overfitting(records: Sequence[dict[str, Any]], c: Checkup) -> Finding | None:
    dev, losses = _dev(records, c.metric), _train_losses(records)
    if len(dev) < 3 or not losses:
        return None
    best_i = max(range(len(dev)), key=lambda i: dev[i][1] if c.greater_is_better else -dev[i][1])
    best_step, best = dev[best_i]
    last = dev[-1][1]
    fall = (best - last) if c.greater_is_better else (last - best)
    at_best = [loss for step, loss in losses if step <= best_step]
    after = [loss for step, loss in losses if step > best_step]
    if best_i == len(dev) - 1 or fall <= 0 or not at_best or not after or min(after) >= at_best[-1]:
        return None
    length = f"--max-steps {best_step}" if c.train.max_steps > 0 else \
        f"--epochs {c.train.epochs * best_step / max(dev[-1][0], 1):.2g}"
    return Finding("overfitting", f"dev {c.metric} fell after step {best_step} while the train loss kept falling",
                   f"dev {c.metric} at its best minus at the last evaluation", fall,
                   f"early stopping already kept the best checkpoint (step {best_step}); train about as long as it "
                   "took, or regularise more (weight decay, dropout)", f"lmcraft {c.stage} ... {length}")


def check_underfitting(records: Sequence[dict[str, Any]], c: Checkup) -> Finding | None:
    dev, losses = _dev(records, c.metric), _train_losses(records)
    if len(dev) < 2 or len(losses) < 3:
        return None
    last_best = all(_better(dev[-1][1], v, c.greater_is_better) for _, v in dev[:-1])
    third = losses[len(losses) * 2 // 3][1]
    falling = third > 0 and (third - losses[-1][1]) / third
    if not (last_best and falling and falling >= TREND_DROP):
        return None
    gain = abs(dev[-1][1] - dev[-2][1])
    if c.train.budget:  # a budgeted run's length is its time: --epochs would be ignored
        length = f"--budget {budget_seconds(c.train.budget) * 2 / 60:g}m"
    elif c.train.max_steps > 0:
        length = f"--max-steps {c.train.max_steps * 2}"
    else:
        length = f"--epochs {c.train.epochs * 2:g}"
    return Finding("underfitting", f"still improving at the end: dev {c.metric} best at the last evaluation",
                   f"dev {c.metric} gain at the last evaluation", gain,
                   f"train longer (the train loss fell {falling:.0%} over the last third)",
                   f"lmcraft {c.stage} ... {length}")


def check_small_dev(records: Sequence[dict[str, Any]], c: Checkup) -> Finding | None:
    dev = _dev(records, c.metric)
    values = [v for _, v in dev[-LAST_EVALS:]]
    if c.dev_size <= 0 or len(values) < 3 or not all(0 <= v <= 1 for v in values) or "loss" in c.metric:
        return None
    p = max(values) if c.greater_is_better else min(values)
    se = math.sqrt(p * (1 - p) / c.dev_size)
    spread = max(values) - min(values)
    if se < MIN_SE or spread > 2 * se:
        return None
    needed = math.ceil(p * (1 - p) * (2 / spread) ** 2) if spread > 0 else 0
    more = f"about {needed:,} examples" if needed > c.dev_size else "more examples"
    return Finding("small_dev", f"the dev set ({c.dev_size:,} examples) is too small to tell the last evaluations "
                   f"apart (their spread {spread:.3f} is within 2 standard errors)",
                   f"standard error of dev {c.metric}, sqrt(p(1-p)/n)", se,
                   f"the best checkpoint is picked by noise; give the dev split {more} (move them from train)",
                   f"lmcraft {c.stage} ... --data DIR_WITH_LARGER_DEV")


def check_label_imbalance(records: Sequence[dict[str, Any]], c: Checkup) -> Finding | None:
    counts = c.label_counts
    if len(counts) < 2 or min(counts.values()) <= 0:
        return None
    ratio = max(counts.values()) / min(counts.values())
    if ratio < IMBALANCE_RATIO:
        return None
    big = max(counts, key=counts.__getitem__)
    share = counts[big] / sum(counts.values())
    switch = c.metric == "accuracy"
    return Finding("label_imbalance", f"the training labels are imbalanced: {big!r} is {share:.0%} of them",
                   "largest label count / smallest label count", ratio,
                   ("select on macro-F1, which a majority-class guess cannot win" if switch else
                    f"always predicting {big!r} scores {share:.0%} accuracy; compare against that"),
                   f"lmcraft {c.stage} ... --metric macro_f1" if switch else "lmcraft evaluate RUN/best DATA/dev.*")


RULES = (check_divergence, check_no_learning, check_overfitting, check_underfitting, check_small_dev,
         check_label_imbalance)


def diagnose(records: Sequence[dict[str, Any]], checkup: Checkup) -> list[Finding]:
    """The findings of every rule on ``records``; an empty list for a healthy run."""
    found = [f for rule in RULES if (f := rule(records, checkup)) is not None]
    if any(f.rule in ("divergence", "no_learning") for f in found):  # the trend rules mean little then
        found = [f for f in found if f.rule not in ("overfitting", "underfitting")]
    return found


def render(findings: Sequence[Finding], checkup: Checkup) -> str:
    lines = [f"# Diagnosis of this {checkup.stage} run", ""]
    if not findings:
        lines.append("Nothing to report: no divergence, no stall, no over- or under-fitting, and the dev set "
                     "tells the last evaluations apart.")
    for f in findings:
        lines += [f"- **{f.rule}**: {f.title}. {f.figure} = {f.value:.4g}. {f.advice}.", f"  `{f.command}`"]
    lines += ["", "`...` stands for the options of this run (see `best/run_card.json`)."]
    return "\n".join(lines) + "\n"


def write_diagnosis(run_dir: Path, checkup: Checkup) -> list[Finding]:
    """Diagnose ``run_dir/metrics.jsonl``; write ``diagnosis.md`` and ``diagnosis.json``; print the findings."""
    findings = diagnose(read_records(run_dir / "metrics.jsonl"), checkup)
    (run_dir / "diagnosis.md").write_text(render(findings, checkup), encoding="utf-8")
    (run_dir / "diagnosis.json").write_text(json.dumps([asdict(f) for f in findings], indent=2, ensure_ascii=False)
                                            + "\n", encoding="utf-8")
    if findings:
        print(f"diagnosis ({run_dir / 'diagnosis.md'}):")
        for f in findings:
            print(f"  {f.rule}: {f.title} ({f.figure} = {f.value:.4g}); try `{f.command}`")
    return findings
