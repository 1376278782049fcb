"""The generation checks of ``lmcraft report`` on outputs whose faults are known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_config

from lmcraft.data.readers import Fields
from lmcraft.finetune import add_task_tokens
from lmcraft.model.heads import Model
from lmcraft.model.io import save_model_dir
from lmcraft.report.build import build_report
from lmcraft.report.generation import generation_checks
from lmcraft.report.html import render
from lmcraft.report.options import ReportConfig
from lmcraft.stage_options import TaskOptions, options_for
from lmcraft.tasks.registry import TASKS
from lmcraft.tokenizer import TextTokenizer


def test_generation_checks_flag_invented_numbers_placeholders_names_and_loops() -> None:
    sources = ["Deleted %d files from {folder}.", "会议于3月5日在北京举行。", "Open the file.", "Hello there"]
    outputs = ["已从 {folder} 删除 %s 个文件。", "会议于3月15日在上海举行。", "Open the file.",
               "Paris Paris Paris Paris Paris"]
    checks = generation_checks(sources, outputs)
    flagged = {e["index"]: e for e in checks["examples"]}
    assert flagged[0]["placeholder_problems"] and checks["n_with_placeholders"] == 1
    assert checks["placeholder_problem_rate"] == 1.0
    assert flagged[1]["new_numbers"] == ["15"] and "上海" in flagged[1]["new_names"]
    assert 2 not in flagged and checks["copy_rate"] == 0.25
    assert flagged[3]["new_names"] == ["Paris"] and flagged[3]["repeated_trigrams"] == 2
    assert checks["new_numbers_rate"] == 0.25 and checks["repeated_trigram_rate"] == 0.25
    html = render({"model_dir": "m", "data": "d", "task": "seq2seq", "head": "seq2seq", "n": 4, "version": "0",
                   "seconds": 0.1, "task_metrics": {"bleu": 10.0}, "generation": checks, "timings": {},
                   "skipped": []}, {})
    assert "Generation checks" in html and "上海" in html


@pytest.mark.parametrize("name", ["seq2seq", "tag"])
def test_a_head_without_class_scores_gets_its_task_metrics_and_generation_checks(
        name: str, tmp_path: Path, sentiment_dir: Path, zh_tokenizer_dir: Path) -> None:
    from test_task_contract import write_data

    task_cls = TASKS[name]
    write_data(name, tmp_path / "data", sentiment_dir)
    files = {p.stem: p for p in (tmp_path / "data").iterdir()}
    splits = {split: task_cls.read(path, Fields()) for split, path in files.items()}
    tokenizer = TextTokenizer.load(zh_tokenizer_dir)
    options = options_for(TaskOptions(), task_cls)
    decoder = task_cls.wants_decoder(options)
    model = Model(tiny_config(vocab_size=tokenizer.vocab_size, causal=decoder, max_len=128),
                  {"lm": {"kind": "lm", "tied": True}} if decoder else {})
    add_task_tokens(model, tokenizer, task_cls)
    task = task_cls.for_data(splits, files, tokenizer, options, metric="", fields=Fields())
    if hasattr(task, "max_target_tokens"):
        task.max_target_tokens = 8  # a random decoder would write until its limit
    task.attach(model, {})
    model.input_tokens = 128
    save_model_dir(tmp_path / "model", model, tokenizer)
    report = build_report(ReportConfig(model_dir=str(tmp_path / "model"), data=str(files["dev"]),
                                       out=str(tmp_path / "out"), attributions=False))
    assert report["task_metrics"] and "uncertainty" not in report and report["skipped"]
    assert ("generation" in report) == (name == "seq2seq")
    if name == "seq2seq":
        assert report["generation"]["n"] == len(splits["dev"])
    assert (tmp_path / "out" / "report.html").exists()


def test_placeholder_and_number_checks_agree_with_50_hand_checked_translations() -> None:
    """50 gettext test messages (a seeded sample) and what the translation memory baseline answered for them,
    each read by hand: does the output lose, add or change a placeholder, or state a figure the source lacks?
    The automatic checks must give the same verdict on every one. The sample holds 11 placeholder problems
    and a correct reordering with positional placeholders (%2$s ... %1$s), which is neither a placeholder
    problem nor a new figure."""
    path = Path(__file__).parent / "data" / "gettext_hand_checked.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 50 and sum(r["placeholder_problem"] for r in rows) == 11
    for row in rows:
        checked = generation_checks([row["source"]], [row["output"]])
        flagged = checked["examples"][0] if checked["examples"] else {}
        assert bool(flagged.get("placeholder_problems")) == row["placeholder_problem"], row
        assert bool(flagged.get("new_numbers")) == row["new_number"], row
