"""What a learning curve shows: ``curve.md`` (mean ± std of the test metric per model and number of labels,
and the pretrained model's lead over the others) and ``curve.png`` (the metric against labels, log scale,
error bars one standard deviation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def table(summary: dict[str, Any]) -> str:
    metric, models = summary["metric"], summary["models"]
    names = summary["names"]
    head = ["labels", *(names[m] for m in models)]
    others = [m for m in models if m != "pretrained"] if "pretrained" in models else []
    head += [f"pretrained − {m}" for m in others]
    lines = [f"test {metric}, mean ± std over seeds {', '.join(map(str, summary['seeds']))} "
             f"({summary['data']}, {summary['train_size']:,} training examples in all; pretrained: "
             f"{summary['init'] or 'none'})", "",
             "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for n in summary["sizes"]:
        row = [f"{n:,}"]
        row += [f"{models[m][str(n)]['mean']:.4f} ± {models[m][str(n)]['std']:.4f}" for m in models]
        row += [f"{models['pretrained'][str(n)]['mean'] - models[m][str(n)]['mean']:+.4f}" for m in others]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_table(summary: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(table(summary), encoding="utf-8")
    tmp.replace(path)


def write_plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = summary["sizes"]
    for model, by_n in summary["models"].items():
        means = [by_n[str(n)]["mean"] for n in sizes]
        stds = [by_n[str(n)]["std"] for n in sizes]
        ax.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, label=summary["names"][model])
    ax.set_xscale("log")
    ax.set_xlabel("training labels")
    ax.set_ylabel(f"test {summary['metric']}")
    ax.set_title(f"{summary['task']} on {Path(summary['data']).name}: mean ± std over {len(summary['seeds'])} seeds")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
