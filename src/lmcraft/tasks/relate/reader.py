"""Relation files: JSONL, one entity pair of one text a line, every problem a ``DataError`` naming the file,
the line and the field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmcraft.data.errors import DataError
from lmcraft.data.readers import jsonl_records

NO_RELATION = "no_relation"



@dataclass(frozen=True)
class Entity:
    """A mention: character offsets into the text (end exclusive) and its type (PER, LOC, ORG...)."""

    start: int
    end: int
    type: str


@dataclass(frozen=True)
class RelationExample:
    """One entity pair of one text and the relation from head to tail (None when unlabelled)."""

    text: str
    head: Entity
    tail: Entity
    relation: str | None = None
    id: str | None = None
    line: int = 0  # line of the source file, for error messages

    @property
    def head_text(self) -> str:
        return self.text[self.head.start : self.head.end]

    @property
    def tail_text(self) -> str:
        return self.text[self.tail.start : self.tail.end]


def _string(path: Path, number: int, value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        found = "nothing" if value is None else repr(value)
        raise DataError(path, f"expected a non-empty string, found {found}", line=number, field=field)
    return value


def _entity(path: Path, number: int, record: dict, role: str, text: str) -> Entity:
    value = record.get(role)
    if not isinstance(value, dict):
        raise DataError(path, 'missing, or not an object like {"start": 0, "end": 2, "type": "PER"}',
                        line=number, field=role)
    offsets = []
    for key in ("start", "end"):
        offset = value.get(key)
        if not isinstance(offset, int) or isinstance(offset, bool):
            found = "nothing" if offset is None else repr(offset)
            raise DataError(path, f"expected an integer character offset, found {found}", line=number,
                            field=f"{role}.{key}")
        offsets.append(offset)
    start, end = offsets
    kind = _string(path, number, value.get("type"), f"{role}.type")
    if not 0 <= start < len(text):
        raise DataError(path, f"offset {start} lies outside the text ({len(text)} characters)", line=number,
                        field=f"{role}.start")
    if not start < end <= len(text):
        raise DataError(path, f"end {end} must lie after start {start} and at most at the text's end "
                        f"({len(text)})", line=number, field=f"{role}.end")
    given = record.get(f"{role}_text")
    if given is not None and given != text[start:end]:
        raise DataError(path, f"is {given!r} but the offsets {start}:{end} span {text[start:end]!r}", line=number,
                        field=f"{role}_text")
    return Entity(start, end, kind)


def read_relations(path: str | Path, *, labelled: bool = True, encoding: str = "auto") -> list[RelationExample]:
    """All examples of a JSONL file, one a line::

        {"text": "...", "head": {"start": 0, "end": 3, "type": "PER"}, "tail": {...}, "relation": "..."}

    Offsets count characters, end exclusive. Optional: ``id``, and ``head_text`` / ``tail_text``, which
    must equal the spanned text (they catch offsets computed on another version of the text, or in bytes).
    Head and tail must not overlap (their markers would interleave). Every problem raises ``DataError``
    naming the file, the line and the field, before any training starts.
    """
    path = Path(path)
    examples = [relation_example(path, number, record, labelled=labelled)
                for number, record in jsonl_records(path, encoding)]
    if not examples:
        raise DataError(path, "the file holds no examples")
    return examples


def relation_example(path: Path, number: int, record: dict, *, labelled: bool) -> RelationExample:
    """One record of a relation file (``labelled=False``: the relation is not read)."""
    text = _string(path, number, record.get("text"), "text")
    head = _entity(path, number, record, "head", text)
    tail = _entity(path, number, record, "tail", text)
    if head.start < tail.end and tail.start < head.end:
        raise DataError(path, f"span {tail.start}:{tail.end} overlaps the head's {head.start}:{head.end}",
                        line=number, field="tail")
    relation = _string(path, number, record.get("relation"), "relation") if labelled else None
    ident = record.get("id")
    return RelationExample(text, head, tail, relation, None if ident is None else str(ident), number)


def labels_from(examples: Sequence[RelationExample], no_relation: str = NO_RELATION) -> list[str]:
    """The label list of the training data: ``no_relation`` first (when present), the others sorted."""
    seen = {ex.relation for ex in examples if ex.relation is not None}
    return ([no_relation] if no_relation in seen else []) + sorted(seen - {no_relation})


def check_relations(path: str | Path, examples: Sequence[RelationExample], known: Sequence[str]) -> None:
    """Every dev / test relation must be one that training saw; a model cannot predict a class it never
    learned, and the metrics would silently count it as an error."""
    seen = set(known)
    for ex in examples:
        if ex.relation not in seen:
            raise DataError(path, f"relation {ex.relation!r} never occurs in the training data (known: "
                            f"{sorted(seen)})", line=ex.line, field="relation")
