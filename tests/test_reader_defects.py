"""Each defect of the user trial that lost or misread data, as a test: TSV quotes, GBK, byte-order marks,
labels with spaces or of mixed types, a 1 MB line, a list as text, blank lines of `predict --file`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmcraft.data.errors import DataError, DataWarning
from lmcraft.data.readers import Fields, jsonl_records, read_examples
from lmcraft.inference.inputs import read_inputs
from lmcraft.inference.predictor import Predictor
from lmcraft.model.heads import Model
from lmcraft.tokenizer import TextTokenizer, train_tokenizer
from tests.conftest import tiny_config


def test_tsv_quotes_are_text_not_quoting(tmp_path: Path) -> None:
    rows = [f'他说"好{i}\tpos' if i % 3 == 0 else f'"quoted" {i}\tneg' for i in range(800)]
    path = tmp_path / "t.tsv"
    path.write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    examples = read_examples(path)
    assert len(examples) == 800
    assert examples[0].text == '他说"好0' and examples[1].text == '"quoted" 1' and examples[1].label == "neg"


def test_tsv_row_with_a_missing_tab_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("text\tlabel\na\tpos\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t\.tsv:3: expected 2 tab-separated columns"):
        read_examples(path)


def test_gbk_file_is_read_as_gb18030_and_said(tmp_path: Path) -> None:
    path = tmp_path / "gbk.jsonl"
    path.write_bytes('{"text": "今天天气很好", "label": "正面"}\n'.encode("gbk"))
    with pytest.warns(DataWarning, match=r"gbk\.jsonl: not UTF-8 \(line 1.*read as GB18030"):
        examples = read_examples(path)
    assert examples[0].text == "今天天气很好" and examples[0].label == "正面"
    assert read_examples(path, Fields(encoding="gbk"))[0].label == "正面"  # given: no warning needed


def test_bytes_that_do_not_decode_name_file_line_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\nok,pos\n\xbf\xff\xfe,neg\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: byte bf .*does not decode as utf-8"):
        read_examples(path, Fields(encoding="utf-8"))
    with pytest.raises(DataError, match=r"bad\.csv:3: .*does not decode as UTF-8 \(nor as GB18030\)"):
        read_examples(path)  # auto: neither UTF-8 nor GB18030
    with pytest.raises(DataError, match=r"bad\.csv: unknown encoding 'klingon'"):
        read_examples(path, Fields(encoding="klingon"))


def test_a_byte_order_mark_is_dropped_from_jsonl_and_csv_headers(tmp_path: Path) -> None:
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_text('{"text": "好", "label": "pos"}\n', encoding="utf-8-sig")
    assert [r for _, r in jsonl_records(jsonl)] == [{"text": "好", "label": "pos"}]
    csv = tmp_path / "excel.csv"
    csv.write_text("text,label\r\n好,pos\r\n坏,neg\r\n", encoding="utf-8-sig")  # as Excel saves it
    assert [(e.text, e.label) for e in read_examples(csv)] == [("好", "pos"), ("坏", "neg")]


def test_labels_are_stripped_with_a_count(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"t{i}", "label": label})
                              for i, label in enumerate(["pos", "pos ", " neg", "neg"])) + "\n", encoding="utf-8")
    with pytest.warns(DataWarning, match=r"stripped the spaces around 2 label\(s\) \(first at line 2: 'pos '\)"):
        labels = [e.label for e in read_examples(path)]
    assert labels == ["pos", "pos", "neg", "neg"]


def test_a_number_among_string_labels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text('{"text": "a", "label": "1"}\n{"text": "b", "label": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"l\.jsonl:2: field 'label': label 1 is a number but the labels before it "
                                        r"are strings \(line 1: '1'\)"):
        read_examples(path)


def test_labels_that_are_all_numbers_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n', encoding="utf-8")
    assert [e.label for e in read_examples(path)] == ["1", "0"]


def test_a_1mb_line_is_read_whole_and_reported(tmp_path: Path) -> None:
    for suffix, row in ((".jsonl", lambda t: json.dumps({"text": t, "label": "pos"}, ensure_ascii=False)),
                        (".csv", lambda t: f"{t},pos"), (".tsv", lambda t: f"{t}\tpos")):
        path = tmp_path / f"long{suffix}"
        header = "" if suffix == ".jsonl" else ("text,label\n" if suffix == ".csv" else "text\tlabel\n")
        body = [row("短"), row("长" * 1_000_000), row("也长" * 2000)]
        path.write_text(header + "\n".join(body) + "\n", encoding="utf-8")
        with pytest.warns(DataWarning, match=r"2 text\(s\) longer than 2,048 characters \(longest: line "
                                             rf"{2 if suffix == '.jsonl' else 3}, 1,000,000 characters\)"):
            examples = read_examples(path)
        assert len(examples) == 3 and len(examples[1].text) == 1_000_000


def test_a_list_as_text_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text('{"text": "好", "label": "pos"}\n{"text": ["列表", "文本"], "label": "pos"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"l\.jsonl:2: field 'text': expected a text, found a JSON list"):
        read_examples(path)


def test_predict_file_keeps_blank_lines(tmp_path: Path) -> None:
    tokenizer = TextTokenizer(train_tokenizer(["今天天气很好", "good day"] * 20, vocab_size=200, min_frequency=1))
    torch.manual_seed(0)
    model = Model(tiny_config(vocab_size=tokenizer.vocab_size),
                  {"classify": {"kind": "classify", "n_labels": 2, "labels": ["neg", "pos"], "pooling": "cls"}})
    predictor = Predictor((model.eval(), tokenizer))
    path = tmp_path / "in.txt"
    path.write_text("今天天气很好\n\n  \ngood day\u2028still line 4\n\n", encoding="utf-8")
    examples = read_inputs(predictor, path)
    assert len(examples) == 5  # five lines, blank ones and a U+2028 inside a line included
    assert len(predictor.predict_examples(examples)) == 5
