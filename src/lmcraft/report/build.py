"""``lmcraft report``: run the sections in order and write report.json and report.html.

Each section is timed; the times are printed and kept in the report. The sections after the first ask
only the ``Predictor`` and the arrays of ``scored.py``, so a head that scores classes gets them all, and
any other head gets its task's own test metrics.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmcraft import __version__
from lmcraft.data.readers import records
from lmcraft.fsutil import write_json
from lmcraft.inference.predictor import Predictor, write_calibration
from lmcraft.metrics.bootstrap import resamples
from lmcraft.metrics.calibration import softmax
from lmcraft.report import plots
from lmcraft.report.calibration import calibration
from lmcraft.report.errors import errors
from lmcraft.report.html import render
from lmcraft.report.options import ReportConfig
from lmcraft.report.robustness import load_checklist, run_checklist
from lmcraft.report.scored import Scored, from_labels, score
from lmcraft.report.slices import slices
from lmcraft.report.uncertainty import compare, intervals


class _Clock:
    """Times the sections, printing each as it ends."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.start = time.perf_counter()

    def run(self, name: str, section: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = section()
        self.timings[name] = time.perf_counter() - t0
        print(f"report: {name} in {self.timings[name]:.1f} s", file=sys.stderr)
        return result


def _raw_records(cfg: ReportConfig) -> list[dict[str, Any]]:
    """The data file's records as read (every field), one per example."""
    return [record for _, record in records(cfg.data, cfg.fields.encoding)]


def _field_values(raw: Sequence[dict[str, Any]], names: Sequence[str], path: str) -> dict[str, list[str]]:
    out = {}
    for name in names:
        if not any(name in record for record in raw):
            raise ValueError(f"--slice-field {name}: no record of {path} has that field (fields: "
                             f"{sorted(raw[0]) if raw else []})")
        out[name] = [str(record.get(name, "(missing)")) for record in raw]
    return out


def _classifier(predictor: Predictor, raw: Sequence[dict[str, Any]], text_field: str,
                batch_size: int) -> Callable[[Sequence[int], Sequence[str]], np.ndarray]:
    """(example indices, new texts) -> uncalibrated probabilities: each record with its text replaced, read as
    the task reads an input, so pairs keep their second text."""

    def classify(idx: Sequence[int], texts: Sequence[str]) -> np.ndarray:
        examples = predictor.examples([{**raw[i], text_field: text} for i, text in zip(idx, texts, strict=True)])
        scores = predictor.class_log_probs(examples, batch_size=batch_size)
        assert scores is not None
        return softmax(scores.log_probs.double().numpy())

    return classify


def build_report(cfg: ReportConfig) -> dict[str, Any]:
    """Write ``cfg.out``/report.json and report.html; return the report."""
    if not cfg.model_dir or not cfg.data:
        raise ValueError("give a model directory and a labelled data file")
    clock = _Clock()
    predictor = Predictor(cfg.model_dir, fields=cfg.fields)  # refuses a model without a task head
    task = predictor.task
    assert task is not None
    examples = predictor.read(cfg.data)
    report: dict[str, Any] = {"model_dir": cfg.model_dir, "data": cfg.data, "task": task.name, "head": task.head,
                              "n": len(examples), "version": __version__, "skipped": []}
    figures: dict[str, str] = {}
    scored = clock.run("predictions", lambda: score(predictor, examples, batch_size=cfg.batch_size))
    if scored is None:
        metrics, records = clock.run("task metrics",
                                     lambda: predictor.test_records(examples, batch_size=cfg.batch_size))
        report["task_metrics"] = metrics
        report["skipped"].append("intervals, errors, calibration, slices and robustness: this head scores no fixed "
                                 "set of classes")
        if records and all("source" in r and "output" in r for r in records):  # the predictions are generated text
            from lmcraft.report.generation import generation_checks

            report["generation"] = clock.run("generation checks", lambda: generation_checks(
                [str(r["source"]) for r in records], [str(r["output"]) for r in records]))
    else:
        _class_sections(cfg, predictor, examples, scored, report, figures, clock)
    report["timings"] = clock.timings
    report["seconds"] = time.perf_counter() - clock.start
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    html = out / "report.html"
    tmp = html.with_name(html.name + ".tmp")
    tmp.write_text(render(report, figures), encoding="utf-8")
    tmp.replace(html)
    print(f"report: wrote {html} and {out / 'report.json'} in {report['seconds']:.1f} s", file=sys.stderr)
    return report


def _class_sections(cfg: ReportConfig, predictor: Predictor, examples: list[Any], scored: Scored,
                    report: dict[str, Any], figures: dict[str, str], clock: _Clock) -> None:
    task = predictor.task
    assert task is not None
    draws = resamples(len(scored), cfg.n_boot, cfg.seed)

    def uncertainty() -> dict[str, Any]:
        section: dict[str, Any] = {"n_boot": cfg.n_boot, "seed": cfg.seed, "metrics": intervals(scored, draws),
                                   "comparisons": []}
        for other_dir in cfg.compare:
            other = Predictor(other_dir, fields=cfg.fields)
            other_scored = score(other, other.read(cfg.data), batch_size=cfg.batch_size)
            if other_scored is None:
                raise ValueError(f"--compare {other_dir}: its head scores no fixed set of classes")
            section["comparisons"].append(compare(scored, cfg.model_dir, other_scored, other_dir, draws))
        for entry in cfg.compare_predictions:
            name, _, path = entry.rpartition("=")
            if not path.endswith(".jsonl"):
                raise ValueError(f"--compare-predictions {entry}: give NAME=FILE.jsonl")
            section["comparisons"].append(compare(scored, cfg.model_dir, from_labels(path, scored), name or path,
                                                  draws))
        rows = [(f"{name} ({cfg.model_dir})" if section["comparisons"] else name, i)
                for name, i in section["metrics"].items()]
        rows += [(f"{name} ({c['model']})", i) for c in section["comparisons"] for name, i in c["metrics"].items()]
        figures["intervals"] = plots.intervals_png(rows)
        return section

    report["uncertainty"] = clock.run("uncertainty", uncertainty)

    def error_section() -> dict[str, Any]:
        section = errors(scored, draws, cfg.n_errors)
        figures["confusion"] = plots.confusion_png(section["confusion_matrix"]["matrix"], scored.labels)
        return section

    report["errors"] = clock.run("errors", error_section)

    def calibration_section() -> dict[str, Any]:
        dev = score(predictor, predictor.read(cfg.dev), batch_size=cfg.batch_size) if cfg.dev else None
        section = calibration(scored, dev, dev_path=cfg.dev)
        if "fit" in section:
            fit = section["fit"]
            stored = write_calibration(cfg.model_dir, task.head, {
                "temperature": fit["temperature"], "fitted_on": cfg.dev, "n": fit["n_dev"],
                "nll_before": fit["dev_nll_before"], "nll_after": fit["dev_nll_after"]})
            section["stored"] = str(stored)
        curves = {"before (T = 1)": section["before"]["bins"]}
        if "after" in section:
            curves[f"after (T = {section['after']['temperature']:.2f})"] = section["after"]["bins"]
        figures["reliability"] = plots.reliability_png(curves)
        return section

    report["calibration"] = clock.run("calibration", calibration_section)
    raw = _raw_records(cfg)
    if len(raw) != len(scored):  # a reader that splits or merges records: fields cannot be matched to examples
        raw = []
    report["slices"] = clock.run("slices", lambda: slices(
        scored, _field_values(raw, cfg.slice_field, cfg.data) if raw else {}, n_boot=cfg.n_boot, seed=cfg.seed))

    def robustness() -> dict[str, Any]:
        idx = np.arange(len(scored))
        if cfg.checklist_examples and len(idx) > cfg.checklist_examples:
            idx = np.sort(np.random.default_rng(cfg.seed).choice(len(idx), cfg.checklist_examples, replace=False))
        classify = _classifier(predictor, [raw[i] for i in idx], cfg.fields.text_field, cfg.batch_size)
        base = softmax(scored.log_probs[idx])
        return run_checklist([scored.texts[i] for i in idx], classify, scored.labels, load_checklist(cfg.checklist),
                             seed=cfg.seed, base=base)

    if raw:
        report["robustness"] = clock.run("robustness", robustness)
    else:
        report["skipped"].append("slices by field and robustness: the records of the data file do not match its "
                                 "examples one to one")
    if cfg.attributions:
        from lmcraft.report.attributions import attributions

        mistakes = [m["index"] for m in report["errors"]["confident_mistakes"][:5]]
        section = clock.run("attributions", lambda: attributions(predictor, examples, scored, mistakes, seed=cfg.seed))
        print(f"report: integrated gradients of {len(section['examples'])} examples took {section['seconds']:.1f} s "
              "(--no-attributions skips them)", file=sys.stderr)
        report["attributions"] = section
