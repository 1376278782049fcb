"""Readers for labelled files (JSONL, CSV, TSV) and plain-text corpora.

Every problem in a file raises ``DataError`` naming the file, the line and the field, before any
training starts; whatever is read anyway but changed or worth knowing (labels stripped of spaces, very long
texts, a file decoded as GB18030) is one ``DataWarning`` line with a count. Nothing is dropped in silence:
a file of N rows gives N examples or an error.

Encodings: ``auto`` reads UTF-8 (a byte-order mark, as Excel and Notepad write it, is dropped) and, when the
bytes are not UTF-8, GB18030 (a superset of GBK and GB2312, the usual encodings of Chinese Windows), with a
warning that says so. TSV has no quoting: a field holds any character but tab and newline, ``"`` included.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmcraft.config import opt
from lmcraft.data.errors import DataError, DataWarning

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}
# Longer texts are read whole but reported: a model reads only its first max_len tokens of a text (512
# tokens are roughly 500 Chinese or 2,000 English characters), and the tokenizer cuts the rest.
LONG_TEXT = 2048


@dataclass(frozen=True)
class Example:
    """One labelled example: a text, or a text pair, and its label (None when unlabelled)."""

    text: str
    label: str | None = None
    pair: str | None = None
    line: int = 0  # line of the source file, for error messages


@dataclass
class Fields:
    """Which field of a record (a JSONL key, a CSV / TSV column) holds what, and how the files are encoded:
    the options group shared by every command that reads labelled files."""

    text_field: str = opt("text", "field (JSONL key or CSV/TSV column) holding the text")
    pair_field: str = opt("", "field holding the second text of a pair; empty for single texts")
    label_field: str = opt("label", "field holding the label")
    source_field: str = opt("source", "seq2seq: field holding the source text")
    target_field: str = opt("target", "seq2seq: field holding the target text")
    encoding: str = opt("auto", "encoding of the input files: auto (UTF-8 with or without a byte-order mark, "
                                "else GB18030, said when used), or a name such as utf-8, gb18030, big5, latin-1")


def format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(path, f"unknown file type {path.suffix!r}; use one of {', '.join(sorted(FORMATS))}")
    return fmt


def _undecodable(path: Path, data: bytes, error: UnicodeDecodeError, encoding: str) -> DataError:
    line = data.count(b"\n", 0, error.start) + 1
    column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
    return DataError(path, f"byte {data[error.start:error.start + 1].hex(' ')} at byte {column} of the line does not "
                           f"decode as {encoding}; give the file's encoding with --encoding (e.g. gb18030, big5, "
                           f"utf-16, latin-1) or save it as UTF-8", line=line)


def read_text(path: str | Path, encoding: str = "auto") -> str:
    """The text of a file, decoded as ``encoding`` (``auto``: UTF-8, else GB18030 with a warning); a
    leading byte-order mark is dropped. Bytes that do not decode are a DataError naming the line."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    data = path.read_bytes()
    if encoding == "auto":
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            first = e
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError:
            raise _undecodable(path, data, first, "UTF-8 (nor as GB18030)") from None
        line = data.count(b"\n", 0, first.start) + 1
        warnings.warn(DataWarning(f"{path}: not UTF-8 (line {line}: byte {data[first.start:first.start + 1].hex()}); "
                                  f"read as GB18030 (give --encoding if it is another one)"), stacklevel=2)
        return text
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(path, f"unknown encoding {encoding!r}") from None
    try:
        return data.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise _undecodable(path, data, e, encoding) from None


def text_lines(text: str) -> list[str]:
    """The lines of a file's text, split at newlines only (not at the other characters ``str.splitlines``
    breaks at, such as U+2028, which JSON strings may hold raw), without their ``\\r``; no empty last line."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def jsonl_records(path: str | Path, encoding: str = "auto") -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file; a line that is not a JSON object is
    a DataError naming the file and the line."""
    path = Path(path)
    for number, raw in enumerate(text_lines(read_text(path, encoding)), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(path, f"malformed JSON ({e.msg} at column {e.colno})", line=number) from None
        except (ValueError, RecursionError) as e:  # an integer of more than 4,300 digits, nesting too deep
            raise DataError(path, f"malformed JSON ({str(e).splitlines()[0][:200] or type(e).__name__})",
                            line=number) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON object, found {type(record).__name__}", line=number)
        yield number, record


def _tsv_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """TSV has no quoting: each line is one row, cut at every tab."""
    for number, line in enumerate(text_lines(text), start=1):
        if line.strip() or "\t" in line:
            yield number, line.split("\t")


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # a long text is reported, not refused
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1  # the line a row begins on (a quoted field may span several)
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(path, f"malformed CSV ({e}); a field holding a comma, a quote or a newline must be "
                                  f'quoted, with its quotes doubled ("a ""b"", c")', line=start) from None
        if row:
            yield start, row


def records(path: str | Path, encoding: str = "auto") -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, record) for every row of a JSONL, CSV or TSV file. The first row of a CSV or TSV file
    names the columns; every other row must have as many."""
    path = Path(path)
    fmt = format_of(path)
    if fmt == "jsonl":
        yield from jsonl_records(path, encoding)
        return
    text = read_text(path, encoding)
    header: list[str] | None = None
    for number, row in _tsv_rows(text) if fmt == "tsv" else _csv_rows(path, text):
        if header is None:
            header = [name.strip() for name in row]
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise DataError(path, f"the header names the column(s) {', '.join(map(repr, repeated))} more than "
                                      f"once", line=number)
            continue
        if len(row) != len(header):
            sep = "tab" if fmt == "tsv" else "comma"
            raise DataError(path, f"expected {len(header)} {sep}-separated columns as in the header "
                                  f"({', '.join(header)}), found {len(row)}", line=number)
        yield number, dict(zip(header, row, strict=True))


def _missing(path: Path, number: int, record: dict[str, object], name: str) -> DataError:
    present = ", ".join(repr(k) for k in record) or "none"
    return DataError(path, f"missing or empty (fields present: {present})", line=number, field=name)


def _text(path: Path, number: int, record: dict[str, object], name: str) -> str:
    """A text field: a string (a number is taken as written), never a list or an object."""
    value = record.get(name)
    if isinstance(value, list | dict | bool):
        raise DataError(path, f"expected a text, found a JSON {type(value).__name__} {json.dumps(value)[:60]}",
                        line=number, field=name)
    if isinstance(value, int | float):
        return json.dumps(value)
    if not isinstance(value, str) or not value.strip():
        raise _missing(path, number, record, name)
    return value


def _labels(path: Path, raw: Sequence[tuple[int, object]], field: str) -> list[str]:
    """Labels as strings: surrounding spaces stripped (with a warning that counts them); numbers or
    true/false taken as written when every label is one, refused when mixed with strings."""
    kinds: dict[str, tuple[int, object]] = {}  # kind -> its first (line, value)
    for number, value in raw:
        if isinstance(value, list | dict):
            raise DataError(path, f"expected a label, found a JSON {type(value).__name__}", line=number, field=field)
        kind = "string" if isinstance(value, str) else "true/false" if isinstance(value, bool) else "number"
        kinds.setdefault(kind, (number, value))
        if len(kinds) > 1:
            (first, (line, example)), _ = kinds.items()
            raise DataError(path, f"label {value!r} is a {kind} but the labels before it are {first}s (line {line}: "
                                  f"{example!r}); write every label the same way, e.g. all as strings", line=number,
                            field=field)
    labels, stripped = [], []
    for number, value in raw:
        label = value if isinstance(value, str) else json.dumps(value)
        if label != label.strip():
            stripped.append((number, label))
        labels.append(label.strip())
    if stripped:
        line, label = stripped[0]
        warnings.warn(DataWarning(f"{path}: stripped the spaces around {len(stripped):,} label(s) (first at line "
                                  f"{line}: {label!r})"), stacklevel=3)
    return labels


def read_examples(path: str | Path, fields: Fields | None = None, *, labelled: bool = True) -> list[Example]:
    """All examples of a JSONL, CSV or TSV file: one per row, or a DataError."""
    fields = fields or Fields()
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    rows = []
    for number, record in records(path, fields.encoding):
        text = _text(path, number, record, fields.text_field)
        pair = _text(path, number, record, fields.pair_field) if fields.pair_field else None
        label = record.get(fields.label_field) if labelled else None
        if labelled and (label is None or (isinstance(label, str) and not label.strip())):
            raise _missing(path, number, record, fields.label_field)
        rows.append((number, text, pair, label))
    if not rows:
        raise DataError(path, "the file holds no examples")
    labels = _labels(path, [(number, label) for number, _, _, label in rows], fields.label_field) if labelled \
        else [None] * len(rows)
    warn_long_texts(path, [(number, t) for number, text, pair, _ in rows for t in (text, pair) if t is not None])
    return [Example(text=text, label=label, pair=pair, line=number)
            for (number, text, pair, _), label in zip(rows, labels, strict=True)]


def warn_long_texts(path: str | Path, texts: Sequence[tuple[int, str]], limit: int = LONG_TEXT) -> None:
    """One warning line for the texts longer than ``limit`` characters: how many, and the longest one's line."""
    long = [(len(text), number) for number, text in texts if len(text) > limit]
    if long:
        size, line = max(long)
        warnings.warn(DataWarning(f"{path}: {len(long):,} text(s) longer than {limit:,} characters (longest: line "
                                  f"{line}, {size:,} characters); a model reads only its first max_len tokens of a "
                                  f"text, the tokenizer cuts the rest"), stacklevel=3)


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
            rows = list(jsonl_records(p))
            texts = [_corpus_texts(record) for _, record in rows[:1]]
            if texts and texts[0] is not None:
                lines.extend(t for _, record in rows for t in _corpus_texts(record) or [] if t.strip())
                continue
        if p.suffix.lower() in FORMATS:
            lines.extend(ex.text for ex in read_examples(p, labelled=False))
            continue
        lines.extend(line.strip() for line in text_lines(read_text(p)) if line.strip())
    if not lines:
        raise DataError(", ".join(map(str, paths)), "the corpus holds no text")
    return lines
