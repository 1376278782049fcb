"""The quickstart recipe over several seeds: mean ± std of each model's test accuracy, and of arms that
change the recipe (another pretraining objective, a budget), compared with Welch 95% intervals.

    .venv/bin/python bench/quickstart_seeds.py --seeds 3
    .venv/bin/python bench/quickstart_seeds.py --seeds 3 --out runs/seeds-objective \\
        --arm mlm "objective=mlm" --arm electra "objective=electra" --set pretrain.budget=4m \\
        --set compare_scratch=false --set baseline=false

Each arm × seed is one ``lmcraft run RECIPE`` into ``OUT/ARM-seed-K`` with ``pretrain.seed=K`` and
``finetune.seed=K`` (and ``report=false``: the paired tests of the report stage are for one run, not for
this comparison); a run whose ``summary.json`` is there already is not run again, so a rerun only prints.
Prints, per arm, the test accuracy of the fine-tuned, from-scratch and baseline models, the sanity examples
answered right, the pretraining steps and minutes, and the fine-tuned model's difference from the first
arm's. The number of threads is torch's default (all cores); set OMP_NUM_THREADS to change it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from scipy import stats

MODELS = (("finetune", "pretrained + fine-tuned"), ("scratch", "from scratch"), ("baseline", "TF-IDF baseline"))


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def welch(a: list[float], b: list[float]) -> str:
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return f"{diff:+.4f}"
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return f"{diff:+.4f}"
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, df)) * (va + vb) ** 0.5
    return f"{diff:+.4f} [{diff - half:+.4f}, {diff + half:+.4f}]"


def run_arm(recipe: str, out: Path, sets: list[str], seed: int) -> dict[str, Any]:
    summary = out / "summary.json"
    if not summary.exists():
        command = [sys.executable, "-m", "lmcraft", "run", recipe, "--no-progress",
                   *(a for s in [f"out={out}", f"pretrain.seed={seed}", f"finetune.seed={seed}", "report=false",
                                 *sets] for a in ("--set", s))]
        print("$ " + shlex.join(command), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.with_suffix(".log").open("w", encoding="utf-8") as log:
            if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                raise SystemExit(f"failed; see {out.with_suffix('.log')}")
    return json.loads(summary.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/quickstart-zh.yaml")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="runs/quickstart-seeds")
    parser.add_argument("--arm", nargs=2, action="append", default=[], metavar=("NAME", "SETS"),
                        help="an arm: its name and its recipe overrides (KEY=VALUE, space-separated)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override of every arm")
    args = parser.parse_args()
    arms = [(name, shlex.split(sets)) for name, sets in args.arm] or [("recipe", [])]
    results: dict[str, list[dict[str, Any]]] = {}
    for name, sets in arms:
        results[name] = [run_arm(args.recipe, Path(args.out) / f"{name}-seed-{k}", [*args.set, *sets], k)
                         for k in range(args.seeds)]

    def accuracies(runs: list[dict[str, Any]], model: str) -> list[float]:
        return [r["results"][model]["test"]["accuracy"] for r in runs if model in r["results"]]

    first = arms[0][0]
    print(f"\n{args.recipe}, {args.seeds} seeds; overrides of every arm: {' '.join(args.set) or 'none'}\n")
    print("| arm | " + " | ".join(title for _, title in MODELS) + " | sanity right (each seed) | pretraining steps | "
          f"pretraining min | fine-tuned − {first} (Welch 95%) |")
    print("|---|" + "---:|" * (len(MODELS) + 4))
    for name, runs in results.items():
        sanity = [r["results"]["sanity"]["finetune"]["right"] for r in runs if "sanity" in r["results"]]
        steps = [r["results"]["pretrain"]["steps"] for r in runs]
        minutes = [r["wall_time_s"]["pretrain"] / 60 for r in runs]
        versus = "" if name == first else welch(accuracies(runs, "finetune"), accuracies(results[first], "finetune"))
        cells = [mean_std(accuracies(runs, model)) for model, _ in MODELS]
        print(f"| {name} | {' | '.join(cells)} | {'/'.join(map(str, sanity)) if sanity else '–'} | "
              f"{statistics.fmean(steps):.0f} | {statistics.fmean(minutes):.1f} | {versus} |")


if __name__ == "__main__":
    main()
