"""``tune_report.html``: the trials table, the optimisation history and the parameter importances, one file
that needs no network (the plots are Optuna's matplotlib ones, embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
import warnings
from pathlib import Path
from typing import Any

import optuna


def _plot(draw: Any, study: optuna.Study) -> str:
    """A plot as an <img>, or a line saying why there is none (importances need two finished trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            ax = draw(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return f"<p><i>not drawn: {html.escape(str(e))}</i></p>"
    fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
    fig.set_size_inches(7, 4)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def _trials_table(study: optuna.Study) -> str:
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["trial", "state", "value", *names, "seconds", "diagnosis"])
    rows = []
    for t in trials:
        seconds = f"{t.duration.total_seconds():.1f}" if t.duration else ""
        cells = [str(t.number), t.state.name.lower(), _fmt(t.value) if t.value is not None else "",
                 *[_fmt(t.params.get(n, "")) for n in names], seconds,
                 html.escape(", ".join(t.user_attrs.get("diagnosis", [])))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def write_report(path: Path, study: optuna.Study, summary: dict[str, Any]) -> None:
    from optuna.visualization import matplotlib as plots

    final = summary["final"]
    lines = [f"<tr><td>{split} {html.escape(k)}</td><td>{v['mean']:.4f} ± {v['std']:.4f}</td>"
             f"<td>{', '.join(f'{x:.4f}' for x in v['values'])}</td></tr>"
             for split in ("dev", "test") for k, v in final[split].items()]
    best = summary["best_trial"]
    task = html.escape(summary["task"])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>lmcraft tune: {task}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style></head><body>
<h1>Tuning {task}: {summary['direction']} dev {html.escape(summary['metric'])}</h1>
<p>Trials: {', '.join(f'{n} {s}' for s, n in summary['trials'].items() if n)}; budget {html.escape(summary['budget'])}.
Best trial {best['number']} (dev {html.escape(summary['metric'])} {best['value']:.4f}):
<code>{html.escape(str(best['params']))}</code>. The best model is <code>{html.escape(summary['model_dir'])}</code>.</p>
<h2>The best configuration retrained with seeds {final['seeds']}</h2>
<table><tr><th>metric</th><th>mean ± std</th><th>per seed</th></tr>{''.join(lines)}</table>
<h2>Trials</h2>{_trials_table(study)}
<h2>Optimisation history</h2>{_plot(plots.plot_optimization_history, study)}
<h2>Parameter importances</h2>{_plot(plots.plot_param_importances, study)}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
