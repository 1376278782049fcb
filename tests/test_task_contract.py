"""The Task contract, checked on every registered task (as scikit-learn's ``check_estimator`` checks every
estimator): read → for_data → attach → encode → collate → loss → metrics → save → load → predict gives the
same answers as before saving, the saved head spec rebuilds the same task, and test_report scores every
example. A new task is covered as soon as it is registered; it only needs a few examples below."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from lmcraft.data.readers import Fields
from lmcraft.finetune import add_task_tokens
from lmcraft.inference.predictor import Predictor
from lmcraft.model.heads import Model
from lmcraft.model.io import save_model_dir
from lmcraft.stage_options import TaskOptions, options_for
from lmcraft.tasks.registry import TASKS, task_from_spec
from lmcraft.tokenizer import TextTokenizer

FIXTURES = Path(__file__).parent / "fixtures"
NER = [("江泽民在北京会见了克林顿。", [(0, 3, "PER"), (4, 6, "LOC"), (9, 12, "PER")]),
       ("李鹏到上海视察工作。", [(0, 2, "PER"), (3, 5, "LOC")]),
       ("新华社记者从国务院获悉。", [(0, 3, "ORG"), (6, 9, "ORG")]),
       ("朱镕基在天津考察。", [(0, 3, "PER"), (4, 6, "LOC")])]
PAIRS = [("打开文件", "open the file"), ("关闭窗口", "close the window"), ("保存文件", "save the file"),
         ("新建窗口", "new window")]


def _jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def write_data(task: str, directory: Path, sentiment_dir: Path) -> None:
    """A few train and dev examples of ``task`` in its file format."""
    directory.mkdir(parents=True)
    if task == "classify":
        for split in ("train", "dev"):
            lines = (sentiment_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
            (directory / f"{split}.jsonl").write_text("\n".join(lines[:24]) + "\n", encoding="utf-8")
    elif task == "tag":
        records = [{"text": t, "entities": [{"start": s, "end": e, "label": x} for s, e, x in ents]} for t, ents in NER]
        _jsonl(directory / "train.jsonl", records)
        _jsonl(directory / "dev.jsonl", records[:2])
    elif task == "relate":
        for split in ("train", "dev"):
            shutil.copy(FIXTURES / "relations" / f"{split}.jsonl", directory / f"{split}.jsonl")
    elif task == "qa":
        for split in ("train", "dev"):
            shutil.copy(FIXTURES / "qa" / "cmrc-peoples-daily.json", directory / f"{split}.json")
    elif task == "seq2seq":
        _jsonl(directory / "train.jsonl", [{"source": s, "target": t} for s, t in PAIRS])
        _jsonl(directory / "dev.jsonl", [{"source": s, "target": t} for s, t in PAIRS[:2]])
    elif task == "chat":
        conversations = [{"messages": [{"role": "user", "content": s}, {"role": "assistant", "content": t}]}
                         for s, t in PAIRS]
        _jsonl(directory / "train.jsonl", conversations)
        _jsonl(directory / "dev.jsonl", conversations[:2])
    else:
        pytest.fail(f"task {task!r} is registered but this test has no examples of it: add a few to write_data")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_registered_task_keeps_the_contract(name: str, tmp_path: Path, sentiment_dir: Path,
                                                  zh_tokenizer_dir: Path) -> None:
    task_cls = TASKS[name]
    write_data(name, tmp_path / "data", sentiment_dir)
    ext = {p.stem: p for p in (tmp_path / "data").iterdir()}
    assert all(p.suffix in task_cls.extensions for p in ext.values())
    fields = Fields()
    splits = {split: task_cls.read(path, fields) for split, path in ext.items()}
    texts = task_cls.texts(splits["train"])  # what a tokenizer trained from scratch learns from
    assert texts and all(isinstance(t, str) and t for t in texts)
    tokenizer = TextTokenizer.load(zh_tokenizer_dir)
    options = options_for(TaskOptions(), task_cls)
    decoder = task_cls.wants_decoder(options)
    model = Model(tiny_config(vocab_size=tokenizer.vocab_size, causal=decoder, max_len=128),
                  {"lm": {"kind": "lm", "tied": True}} if decoder else {})
    add_task_tokens(model, tokenizer, task_cls)
    task = task_cls.for_data(splits, ext, tokenizer, options, metric="", fields=fields)
    task.attach(model, {})
    assert task.head in model.heads and model.head_specs[task.head]["task"] == name

    items = task.encode(tokenizer, splits["train"], 128)
    batch = task.collate(items[:4], torch.Generator().manual_seed(0))
    assert task.n_targets(batch) > 0
    loss = task.loss_sum(model, batch)
    assert math.isfinite(float(loss)) and float(loss) > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.heads[task.head].parameters()) or \
        model.backbone.embed.token.weight.grad is not None
    model.zero_grad()
    metrics = task.new_metrics()
    model.eval()
    metrics.update(model, task.collate(task.encode(tokenizer, splits["dev"], 128)))
    computed = metrics.compute()
    assert task.metric in computed or f"{task.metric}" == "loss"

    model.input_tokens = 128
    before = Predictor((model, tokenizer)).predict_examples(splits["dev"])
    assert len(before) == len(splits["dev"]) and all(isinstance(r, dict) and r for r in before)
    json.dumps(before, ensure_ascii=False)  # JSON-ready
    save_model_dir(tmp_path / "model", model, tokenizer)
    loaded = Predictor(tmp_path / "model")
    assert type(loaded.task) is task_cls
    assert loaded.task.head_spec() == task.head_spec()
    assert loaded.predict_examples(splits["dev"]) == before, "a saved and reloaded model answers the same"
    rebuilt = task_from_spec(model.head_specs[task.head], tokenizer.pad_id, task.head)
    assert rebuilt.head_spec() == task.head_spec()

    report, records = task.test_report(loaded.model, loaded.tokenizer, splits["dev"], max_len=128)
    assert report["n"] == len(records) >= len(splits["dev"]) and all(isinstance(r, dict) for r in records)
    json.dumps(report)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_bad_prediction_input_is_a_clear_error_not_a_traceback(name: str) -> None:
    """An input that is neither a text nor an object in the task's format names what is missing."""
    with pytest.raises((ValueError, KeyError)) as error:
        TASKS[name].parse_input({"no such field": 1}, Fields(), 3)
    assert "text" in str(error.value) or "question" in str(error.value) or "source" in str(error.value) \
        or "messages" in str(error.value)
