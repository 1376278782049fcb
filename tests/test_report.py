"""``lmcraft report`` end to end on a tiny classifier: both files written, every section present, the
temperature stored with the model and applied by the Predictor without changing a label."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lmcraft.cli import main
from lmcraft.data.readers import Fields, read_examples
from lmcraft.inference.predictor import Predictor, read_calibration
from lmcraft.model.heads import Model
from lmcraft.model.io import save_model_dir
from lmcraft.tasks.classify.options import ClassifyOptions
from lmcraft.tasks.classify.task import Classify
from lmcraft.tokenizer import TextTokenizer
from tests.browser import chromium, needs_chromium
from tests.conftest import tiny_config


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, sentiment_dir: Path, zh_tokenizer: TextTokenizer) -> dict:
    """A random width-32 classifier (two of them, for --compare) and small labelled files with a field."""
    root = tmp_path_factory.mktemp("report")
    rows = [json.loads(line) for line in (sentiment_dir / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [{**r, "source": "long" if len(r["text"]) > 60 else "short"} for r in rows[:240]]
    test, dev = _write(root / "test.jsonl", rows[:160]), _write(root / "dev.jsonl", rows[160:])
    models = []
    for seed in (0, 1):
        import torch

        torch.manual_seed(seed)
        examples = read_examples(test, Fields())
        task = Classify.for_data({"train": examples}, {"train": test}, zh_tokenizer, ClassifyOptions(), metric="",
                                 fields=Fields())
        model = Model(tiny_config(vocab_size=zh_tokenizer.vocab_size, max_len=128), {})
        task.attach(model, {})
        model.input_tokens = 128
        models.append(save_model_dir(root / f"model{seed}", model, zh_tokenizer))
    return {"root": root, "test": test, "dev": dev, "models": models}


def test_report_writes_every_section_and_calibrates_the_model(tiny: dict, capsys: pytest.CaptureFixture) -> None:
    model, other = tiny["models"]
    before = Predictor(model).predict([json.loads(x)["text"] for x in tiny["test"].read_text().splitlines()])
    out = tiny["root"] / "out"
    assert main(["report", str(model), str(tiny["test"]), "--out", str(out), "--compare", str(other),
                 "--dev", str(tiny["dev"]), "--slice-field", "source", "--n-boot", "200",
                 "--checklist-examples", "60", "--no-attributions"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    html = (out / "report.html").read_text(encoding="utf-8")
    assert report["n"] == 160
    acc = report["uncertainty"]["metrics"]["accuracy"]
    assert acc["low"] <= acc["value"] <= acc["high"]
    comparison = report["uncertainty"]["comparisons"][0]
    assert {"paired", "mcnemar", "verdicts"} <= set(comparison) and 0 <= comparison["mcnemar"]["p_value"] <= 1
    assert sum(map(sum, report["errors"]["confusion_matrix"]["matrix"])) == 160
    assert len(report["errors"]["confident_mistakes"]) == min(10, report["errors"]["n_errors"])
    cal = report["calibration"]
    assert cal["before"]["accuracy"] == cal["after"]["accuracy"]
    assert set(report["slices"]["tables"]) == {"text length", "source"}
    assert sum(row["n"] for row in report["slices"]["tables"]["source"]) == 160
    names = [t["name"] for t in report["robustness"]["invariance"]]
    assert "simplified → traditional Chinese" in names and report["robustness"]["n"] == 60
    assert html.count("data:image/png;base64,") == 3 and "<script" not in html and "http" not in html.lower()
    assert "report: uncertainty in" in capsys.readouterr().err  # times are printed

    t = read_calibration(model)["classify"]["temperature"]
    assert math.isclose(t, cal["fit"]["temperature"])
    calibrated = Predictor(model)
    assert calibrated.temperature == t
    after = calibrated.predict([r["text"] for r in before])
    assert [r["label"] for r in after] == [r["label"] for r in before], "temperature scaling keeps every label"
    scores = calibrated.class_log_probs(calibrated.examples([r["text"] for r in before[:5]]))
    expected = np.exp(scores.log_probs.numpy() / t)
    expected /= expected.sum(1, keepdims=True)
    got = np.array([[r["probabilities"][name] for name in scores.labels] for r in after[:5]])
    assert np.allclose(got, expected, atol=1e-4), "the Predictor gives softmax(logits / T)"


def test_a_head_without_class_scores_gets_its_task_metrics(tmp_path: Path) -> None:
    from lmcraft.report.html import render

    html = render({"model_dir": "m", "data": "d", "task": "tag", "head": "tag", "n": 3, "version": "0",
                   "seconds": 0.1, "task_metrics": {"f1": 0.5, "n": 3}, "timings": {}, "skipped": ["x"]}, {})
    assert "0.5000" in html and "Errors" not in html


def test_attributions_highlight_the_tokens_of_mistakes_and_correct_answers(tiny: dict) -> None:
    out = tiny["root"] / "with-attributions"
    model = tiny["models"][1]
    assert main(["report", str(model), str(tiny["dev"]), "--out", str(out), "--n-boot", "50",
                 "--checklist-examples", "10", "--n-errors", "3"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    section = report["attributions"]
    kinds = [a["kind"] for a in section["examples"]]
    assert kinds.count("mistake") == min(3, report["errors"]["n_errors"]) and kinds.count("correct") == 5
    for a in section["examples"]:
        weights = [w for _, w in a["tokens"]]
        assert a["tokens"] and max(abs(w) for w in weights) == pytest.approx(1.0, abs=1e-3)
    assert "<mark" in (out / "report.html").read_text(encoding="utf-8")


def test_another_systems_labels_are_compared_and_a_bad_line_is_named(tiny: dict) -> None:
    from lmcraft.report.build import build_report
    from lmcraft.report.options import ReportConfig

    model, _ = tiny["models"]
    gold = [json.loads(x)["label"] for x in tiny["test"].read_text(encoding="utf-8").splitlines()]
    perfect = _write(tiny["root"] / "perfect.jsonl", [{"label": label} for label in gold])
    cfg = ReportConfig(model_dir=str(model), data=str(tiny["test"]), out=str(tiny["root"] / "vs"), n_boot=200,
                       compare_predictions=[f"oracle={perfect}"], checklist_examples=20, attributions=False)
    comparison = build_report(cfg)["uncertainty"]["comparisons"][0]
    assert comparison["model"] == "oracle" and comparison["metrics"]["accuracy"]["value"] == 1.0
    assert comparison["verdicts"]["accuracy"].startswith("oracle leads")

    bad = _write(tiny["root"] / "bad.jsonl", [{"label": gold[0]}, {"label": "maybe"}])
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: field 'label': 'maybe' is not one of"):
        build_report(ReportConfig(model_dir=str(model), data=str(tiny["test"]), out=str(tiny["root"] / "vs2"),
                                  compare_predictions=[f"x={bad}"], checklist_examples=20, attributions=False))


@pytest.mark.slow
@needs_chromium
def test_the_report_renders_every_section_in_a_browser(tiny: dict) -> None:
    """Headless Chromium opens the report from disk (no server, no network) and shows every section of a
    classifier's report, each figure decoded by the browser, without a console error."""
    from selenium.webdriver.common.by import By

    model, other = tiny["models"]
    out = tiny["root"] / "browser"
    assert main(["report", str(model), str(tiny["test"]), "--out", str(out), "--compare", str(other),
                 "--dev", str(tiny["dev"]), "--slice-field", "source", "--n-boot", "100",
                 "--checklist-examples", "30", "--n-errors", "2"]) == 0
    with chromium() as driver:
        driver.get((out / "report.html").resolve().as_uri())
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        for section in ("1. Metrics with 95% intervals", "2. Errors", "3. Calibration", "4. Slices",
                        "5. Robustness (CheckList)", "6. Attributions", "Timings"):
            assert section in headings, (section, headings)
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == 3 and all(driver.execute_script("return arguments[0].naturalWidth", i) > 100
                                        for i in images), "every plot decodes"
        assert driver.find_elements(By.CSS_SELECTOR, "mark"), "attributions are highlighted"
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
