"""Reader for extractive question answering files: SQuAD v1.1 / v2.0 and CMRC 2018, which share one layout::

    {"data": [{"title"?, "paragraphs": [{"context": str,
                "qas": [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"?: bool}]}]}]}

Every problem raises ``DataError`` naming the file, the line and the field, before any training starts: a
wrong ``answer_start`` would otherwise train the model on the wrong span without a sound.

``json.load`` keeps no positions, so the reader finds them itself. A regular expression walks the raw text
and records the offset of every ``{`` outside a string; a pre-order walk of the parsed document meets the
objects in the same order, so the k-th object starts at the k-th brace. That is exact for any valid JSON
without duplicate keys (``json`` keeps only the last of duplicates, which shifts the count; lines are then
left out rather than wrong).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcraft.data.errors import DataError
from lmcraft.data.readers import read_text

# A JSON string (skipped whole, so braces inside it do not count) or an object's opening brace.
_STRING_OR_BRACE = re.compile(r'"(?:[^"\\]|\\.)*"|\{')


@dataclass(frozen=True)
class QAExample:
    """One question over one context, with its gold answers (none when unanswerable or unlabelled)."""

    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]  # (text, character start in the context) of every gold answer
    is_impossible: bool = False  # SQuAD v2: the context does not answer the question
    line: int = 0  # line of the file where the question's record starts, for error messages


class _Lines:
    """Line numbers of the objects of one parsed JSON document."""

    def __init__(self, text: str, doc: object) -> None:
        self.text = text
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        braces = [m.start() for m in _STRING_OR_BRACE.finditer(text) if m.group() == "{"]
        objects = list(_preorder(doc))
        # Duplicate keys make the counts differ: no lines then, rather than wrong ones.
        self.start = dict(zip(map(id, objects), braces, strict=True)) if len(objects) == len(braces) else {}

    def line_of(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1

    def of(self, obj: object, field: str | None = None) -> int | None:
        """The line where ``obj`` starts, or where its key ``field`` stands when that key is present."""
        start = self.start.get(id(obj))
        if start is None:
            return None
        if field is not None and isinstance(obj, dict) and field in obj:
            key = re.compile(r'"' + re.escape(field) + r'"\s*:').search(self.text, start)
            if key is not None:
                return self.line_of(key.start())
        return self.line_of(start)


def _preorder(value: object) -> Iterator[dict]:
    """Every dict in ``value``, in the order of their opening braces in the source text."""
    if isinstance(value, dict):
        yield value
        for child in value.values():
            yield from _preorder(child)
    elif isinstance(value, list):
        for child in value:
            yield from _preorder(child)


class _Checker:
    """Field access that raises DataError with the file, the line and the field."""

    def __init__(self, path: Path, lines: _Lines) -> None:
        self.path, self.lines = path, lines

    def fail(self, obj: object, message: str, field: str | None = None, *, at_field: bool = False) -> DataError:
        return DataError(self.path, message, line=self.lines.of(obj, field if at_field else None), field=field)

    def get(self, obj: dict, field: str, kind: type, *, where: str) -> Any:
        if field not in obj:
            present = ", ".join(repr(k) for k in obj) or "none"
            raise self.fail(obj, f"missing in {where} (fields present: {present})", field)
        value = obj[field]
        if kind is str and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # numeric ids
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(obj, f"expected {kind.__name__}, found {type(value).__name__}", field, at_field=True)
        if kind is str and not value.strip():
            raise self.fail(obj, f"empty in {where}", field, at_field=True)
        return value


def read_squad(path: str | Path, *, labelled: bool = True, encoding: str = "auto") -> list[QAExample]:
    """All questions of a SQuAD / CMRC 2018 JSON file, in file order.

    With ``labelled=False`` (files to predict on) questions may come without answers; answers that are
    there are still checked.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    text = read_text(path, encoding)
    if not text.strip():
        raise DataError(path, "the file is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON ({e.msg} at column {e.colno})", line=e.lineno) from None
    except (ValueError, RecursionError) as e:  # an integer of more than 4,300 digits, nesting too deep
        raise DataError(path, f"malformed JSON ({str(e).splitlines()[0][:200] or type(e).__name__})") from None
    lines = _Lines(text, doc)
    check = _Checker(path, lines)
    if not isinstance(doc, dict) or "data" not in doc:
        raise DataError(path, "expected an object with a 'data' list of articles (SQuAD / CMRC 2018 layout)",
                        line=1, field="data")
    articles = check.get(doc, "data", list, where="the top-level object")
    examples: list[QAExample] = []
    first_line: dict[str, int | None] = {}
    for article in articles:
        if not isinstance(article, dict):
            raise check.fail(doc, f"every article must be an object, found {type(article).__name__}", "data")
        for paragraph in check.get(article, "paragraphs", list, where="an article"):
            if not isinstance(paragraph, dict):
                raise check.fail(article, "every paragraph must be an object", "paragraphs", at_field=True)
            context = check.get(paragraph, "context", str, where="a paragraph")
            for qa in check.get(paragraph, "qas", list, where="a paragraph"):
                if not isinstance(qa, dict):
                    raise check.fail(paragraph, "every question must be an object", "qas", at_field=True)
                example = _question(check, qa, context, labelled)
                if example.id in first_line:
                    raise check.fail(qa, f"duplicate id {example.id!r} (first at line {first_line[example.id]})",
                                     "id", at_field=True)
                first_line[example.id] = example.line
                examples.append(example)
    if not examples:
        raise DataError(path, "the file holds no questions")
    return examples


def _question(check: _Checker, qa: dict, context: str, labelled: bool) -> QAExample:
    qid = check.get(qa, "id", str, where="a question")
    question = check.get(qa, "question", str, where="a question")
    impossible = check.get(qa, "is_impossible", bool, where="a question") if "is_impossible" in qa else False
    raw_answers = [] if (impossible or not labelled) and "answers" not in qa else check.get(
        qa, "answers", list, where="a question")
    answers = []
    for answer in raw_answers:
        if not isinstance(answer, dict):
            raise check.fail(qa, "every answer must be an object with 'text' and 'answer_start'", "answers",
                             at_field=True)
        answer_text = check.get(answer, "text", str, where="an answer")
        start = check.get(answer, "answer_start", int, where="an answer")
        found = context[start : start + len(answer_text)] if start >= 0 else ""
        if found != answer_text:
            hint = context.find(answer_text)
            where = f"; the text occurs at {hint}" if hint >= 0 else "; the text does not occur in the context"
            raise check.fail(answer, f"answer_start {start} points at {found!r}, not at the answer "
                                     f"{answer_text!r}{where}", "answer_start", at_field=True)
        answers.append((answer_text, start))
    if impossible and answers:
        raise check.fail(qa, f"question {qid!r} is marked is_impossible but lists answers", "answers", at_field=True)
    if labelled and not impossible and not answers:
        raise check.fail(qa, f"question {qid!r} has no answers; give at least one, or mark it "
                             "\"is_impossible\": true", "answers", at_field="answers" in qa)
    return QAExample(id=qid, question=question, context=context, answers=tuple(answers),
                     is_impossible=impossible, line=check.lines.of(qa) or 0)
