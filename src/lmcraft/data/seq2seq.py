"""Source → target pairs (translation, headline generation).

Inputs:
- JSONL, one pair a line: ``{"source": "...", "target": "..."}`` (the field names are arguments);
- TSV, two columns ``source<TAB>target`` (a first line that holds exactly the two field names is a header).

Every problem raises ``DataError`` naming the file, the line and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmcraft.data.errors import DataError
from lmcraft.data.readers import jsonl_records, read_text, text_lines


@dataclass(frozen=True)
class Pair:
    """One example of a generation task: the model reads ``source`` and should write ``target``."""

    source: str
    target: str
    line: int = field(default=0, compare=False)  # line of the source file, for error messages


def read_pairs(path: str | Path, source_field: str = "source", target_field: str = "target",
               encoding: str = "auto") -> list[Pair]:
    """All pairs of a JSONL or two-column TSV file."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        pairs = [Pair(_text(path, n, record, source_field), _text(path, n, record, target_field), n)
                 for n, record in jsonl_records(path, encoding)]
    elif suffix == ".tsv":
        pairs = _read_tsv(path, source_field, target_field, encoding)
    else:
        raise DataError(path, f"unknown file type {path.suffix!r}; pairs are read from .jsonl or .tsv")
    if not pairs:
        raise DataError(path, "the file holds no pairs")
    return pairs


def _text(path: Path, number: int, record: dict, name: str) -> str:
    if name not in record:
        present = ", ".join(repr(k) for k in record) or "none"
        raise DataError(path, f"missing (fields present: {present})", line=number, field=name)
    value = record[name]
    if not isinstance(value, str):
        raise DataError(path, f"expected a string, found {type(value).__name__}", line=number, field=name)
    if not value.strip():
        raise DataError(path, "empty", line=number, field=name)
    return value


def _read_tsv(path: Path, source_field: str, target_field: str, encoding: str) -> list[Pair]:
    pairs = []
    for number, line in enumerate(text_lines(read_text(path, encoding)), start=1):
        if not line.strip() and "\t" not in line:
            continue
        columns = line.split("\t")
        if number == 1 and [c.strip() for c in columns] == [source_field, target_field]:
            continue
        if len(columns) != 2:
            raise DataError(path, f"expected 2 tab-separated columns, found {len(columns)}", line=number)
        for name, value in zip((source_field, target_field), columns, strict=True):
            if not value.strip():
                raise DataError(path, "empty", line=number, field=name)
        pairs.append(Pair(columns[0], columns[1], number))
    return pairs
