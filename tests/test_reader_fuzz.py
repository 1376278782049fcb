"""Every reader, fed random bytes and random rows: it parses, or raises one ``DataError`` line naming the
file; never another exception, and never a row lost without a message."""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcraft.data.chat import read_chat_jsonl
from lmcraft.data.errors import DataError
from lmcraft.data.ner import read_tagged
from lmcraft.data.readers import jsonl_records, read_examples
from lmcraft.data.seq2seq import read_pairs
from lmcraft.data.squad import read_squad
from lmcraft.tasks.relate.reader import read_relations

FUZZ = settings(max_examples=200, deadline=None)
READERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "examples-jsonl": (".jsonl", read_examples), "examples-csv": (".csv", read_examples),
    "examples-tsv": (".tsv", read_examples), "jsonl_records": (".jsonl", lambda p: list(jsonl_records(p))),
    "tagged-conll": (".conll", read_tagged), "tagged-jsonl": (".jsonl", read_tagged),
    "pairs-jsonl": (".jsonl", read_pairs), "pairs-tsv": (".tsv", read_pairs), "chat": (".jsonl", read_chat_jsonl),
    "squad": (".json", read_squad), "relations": (".jsonl", read_relations),
}
# bytes that look like the files: JSON punctuation, separators, CJK in UTF-8 and GBK, a BOM, stray bytes
PIECES = [b"{", b"}", b"[", b"]", b'"', b":", b",", b"\t", b"\n", b"\r\n", b" ", b'"text"', b'"label"', b"1",
          b'"messages"', b'"role"', b'"user"', b'"content"', b"\xef\xbb\xbf", "好".encode(), "好".encode("gbk"),
          b"\xff", b"\x00", b"null", b"text\tlabel\n", b"text,label\n", b"B-PER", b"O"]
random_bytes = st.one_of(st.binary(max_size=200),
                         st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join))


def parses_or_one_line_error(read: Callable[[Path], object], path: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read(path)
    except DataError as e:
        message = str(e)
        assert message.startswith(str(path)) and "\n" not in message, message


@pytest.mark.parametrize("name", sorted(READERS))
def test_random_bytes_parse_or_raise_a_data_error(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    suffix, read = READERS[name]
    path = tmp_path_factory.mktemp("fuzz") / f"input{suffix}"

    @FUZZ
    @given(data=random_bytes)
    def check(data: bytes) -> None:
        path.write_bytes(data)
        parses_or_one_line_error(read, path)

    check()


# a text or a label: any characters but the separators of the format, not only spaces
field = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r"), min_size=1,
                max_size=30).filter(lambda s: s.strip() != "")


def write_rows(path: Path, rows: list[tuple[str, str]]) -> None:
    if path.suffix == ".jsonl":
        text = "".join(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n" for t, lab in rows)
    elif path.suffix == ".tsv":
        text = "text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows)
    else:
        out = io.StringIO()
        csv.writer(out).writerows([("text", "label"), *rows])
        text = out.getvalue()
    path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv"])
def test_rows_written_are_the_examples_read(suffix: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("rows") / f"rows{suffix}"

    @FUZZ
    @given(rows=st.lists(st.tuples(field, field), min_size=1, max_size=8))
    def check(rows: list[tuple[str, str]]) -> None:
        write_rows(path, rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            examples = read_examples(path)
        assert [(e.text, e.label) for e in examples] == [(t, lab.strip()) for t, lab in rows]

    check()


@pytest.mark.parametrize("suffix", [".jsonl", ".tsv"])
def test_pairs_written_are_the_pairs_read(suffix: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("pairs") / f"pairs{suffix}"

    @FUZZ
    @given(rows=st.lists(st.tuples(field, field), min_size=1, max_size=8))
    def check(rows: list[tuple[str, str]]) -> None:
        if suffix == ".jsonl":
            path.write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in rows), encoding="utf-8")
        else:
            path.write_text("".join(f"{s}\t{t}\n" for s, t in rows), encoding="utf-8")
        try:
            pairs = read_pairs(path)
        except DataError as e:  # a first row that reads as the header "source<TAB>target" is said, not lost
            assert "holds no pairs" in str(e) or rows[0] == ("source", "target"), e
            return
        skipped = 1 if suffix == ".tsv" and [c.strip() for c in rows[0]] == ["source", "target"] else 0
        assert [(p.source, p.target) for p in pairs] == rows[skipped:]

    check()
