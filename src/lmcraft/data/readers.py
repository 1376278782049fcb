"""Readers for labelled files (JSONL, CSV, TSV) and plain-text corpora.

Every problem in a file raises ``DataError`` naming the file, the line and the field, before any
training starts.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmcraft.config import opt
from lmcraft.data.errors import DataError

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


@dataclass(frozen=True)
class Example:
    """One labelled example: a text, or a text pair, and its label (None when unlabelled)."""

    text: str
    label: str | None = None
    pair: str | None = None
    line: int = 0  # line of the source file, for error messages


@dataclass
class Fields:
    """Which field of a record (a JSONL key, a CSV / TSV column) holds what: the options group shared by every
    command that reads labelled files."""

    text_field: str = opt("text", "field (JSONL key or CSV/TSV column) holding the text")
    pair_field: str = opt("", "field holding the second text of a pair; empty for single texts")
    label_field: str = opt("label", "field holding the label")
    source_field: str = opt("source", "seq2seq: field holding the source text")
    target_field: str = opt("target", "seq2seq: field holding the target text")


def format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(path, f"unknown file type {path.suffix!r}; use one of {', '.join(sorted(FORMATS))}")
    return fmt


def jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file; a line that is not a JSON object is
    a DataError naming the file and the line."""
    if not path.exists():
        raise DataError(path, "no such file")
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as e:
                raise DataError(path, f"malformed JSON ({e.msg} at column {e.colno})", line=number) from None
            if not isinstance(record, dict):
                raise DataError(path, f"expected a JSON object, found {type(record).__name__}", line=number)
            yield number, record


def _records(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    fmt = format_of(path)
    if fmt == "jsonl":
        yield from jsonl_records(path)
        return
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="," if fmt == "csv" else "\t")
        for row in reader:
            yield reader.line_num, dict(row)


def _field(path: Path, number: int, record: dict[str, object], name: str) -> str:
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        present = ", ".join(repr(k) for k in record) or "none"
        raise DataError(path, f"missing or empty (fields present: {present})", line=number, field=name)
    return str(value)


def read_examples(path: str | Path, fields: Fields | None = None, *, labelled: bool = True) -> list[Example]:
    """All examples of a JSONL, CSV or TSV file."""
    fields = fields or Fields()
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    examples = []
    for number, record in _records(path):
        text = _field(path, number, record, fields.text_field)
        pair = _field(path, number, record, fields.pair_field) if fields.pair_field else None
        label = _field(path, number, record, fields.label_field) if labelled else None
        examples.append(Example(text=text, label=label, pair=pair, line=number))
    if not examples:
        raise DataError(path, "the file holds no examples")
    return examples


def check_labels(path: str | Path, examples: Sequence[Example], known: Sequence[str], field: str) -> None:
    """Every label must be one that training saw; a model cannot predict a class it never learned."""
    seen = set(known)
    for ex in examples:
        if ex.label not in seen:
            raise DataError(
                path, f"label {ex.label!r} never occurs in the training data (known: {sorted(seen)})",
                line=ex.line, field=field,
            )


def write_jsonl(path: str | Path, records: Sequence[dict[str, object]]) -> None:
    """Write records atomically: a temporary file, then a rename, so nothing half-written is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _corpus_texts(record: dict) -> list[str] | None:
    """The texts of a seq2seq record (source and target) or a chat record (every message); None otherwise."""
    if isinstance(record.get("source"), str) and isinstance(record.get("target"), str):
        return [record["source"], record["target"]]
    if isinstance(record.get("messages"), list):
        return [m["content"] for m in record["messages"] if isinstance(m, dict) and isinstance(m.get("content"), str)]
    return None


def read_corpus(paths: Sequence[str | Path]) -> list[str]:
    """Non-empty lines of plain-text files (one document or paragraph a line), the ``text`` field of JSONL
    files, or both sides of seq2seq JSONL (``source``, ``target``) and every message of chat JSONL
    (``messages``), so that a tokenizer can be trained on a task's own training file."""
    lines: list[str] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise DataError(p, "no such file")
        if p.suffix.lower() == ".jsonl":
            records = list(jsonl_records(p))
            texts = [_corpus_texts(record) for _, record in records[:1]]
            if texts and texts[0] is not None:
                lines.extend(t for _, record in records for t in _corpus_texts(record) or [] if t.strip())
                continue
        if p.suffix.lower() in FORMATS:
            lines.extend(ex.text for ex in read_examples(p, labelled=False))
            continue
        with p.open(encoding="utf-8") as f:
            lines.extend(line.strip() for line in f if line.strip())
    if not lines:
        raise DataError(", ".join(map(str, paths)), "the corpus holds no text")
    return lines
