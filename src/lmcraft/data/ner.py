"""Named-entity data: the one in-memory form, tag schemes, and readers for CoNLL and JSONL files.

An example is a text, its *words* (the units that carry a tag: every CJK character, every run of letters
or digits, every other visible character) and its entities as character spans ``[start, end)`` of the
text. Tags (BIO or BIOES) are derived from spans and words, so a span read from a file comes back out of
the model as exactly the same characters.

Inputs:
- CoNLL columns: one token a line, the tag in the last column, a blank line between sentences. Tokens are
  joined into the text with a space, except between two CJK characters (Chinese is written without).
- JSONL with ``tokens`` and ``tags`` (lists of equal length), or with ``text`` and ``entities``
  (``[{"start": 0, "end": 3, "label": "PER"}, ...]``, character offsets, end exclusive).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from seqeval.metrics.sequence_labeling import get_entities

from lmcraft.data.errors import DataError
from lmcraft.data.readers import jsonl_records, read_text, text_lines
from lmcraft.text import HAN, is_han, sentence_spans

SCHEMES = ("BIO", "BIOES")
Span = tuple[int, int, str]  # (start, end, label): characters [start, end) of the text

_WORD = re.compile(rf"[{HAN}]|[^\W{HAN}]+|[^\s]", re.UNICODE)  # a CJK char, a run of letters/digits, one symbol


@dataclass(frozen=True)
class TaggedExample:
    text: str
    words: tuple[tuple[int, int], ...]  # character span of every word
    entities: tuple[Span, ...] = ()
    line: int = 0  # line of the source file where the example starts
    meta: dict[str, object] = field(default_factory=dict, compare=False)


def split_words(text: str, cuts: Sequence[int] = ()) -> tuple[tuple[int, int], ...]:
    """Word spans of ``text``; ``cuts`` are extra boundaries (entity edges) that a word may not cross."""
    cut_set = set(cuts)
    words = []
    for m in _WORD.finditer(text):
        start = m.start()
        for i in range(m.start() + 1, m.end()):
            if i in cut_set:
                words.append((start, i))
                start = i
        words.append((start, m.end()))
    return tuple(words)


def tags_for(example: TaggedExample, scheme: str = "BIO") -> list[str]:
    """One tag per word. Words are cut at every entity edge, so each word is inside or outside a span."""
    tags = ["O"] * len(example.words)
    starts = {s: i for i, (s, _) in enumerate(example.words)}
    ends = {e: i for i, (_, e) in enumerate(example.words)}
    for start, end, label in example.entities:
        first, last = starts[start], ends[end]
        if scheme == "BIOES" and first == last:
            tags[first] = f"S-{label}"
            continue
        tags[first] = f"B-{label}"
        for i in range(first + 1, last + 1):
            tags[i] = f"I-{label}"
        if scheme == "BIOES":
            tags[last] = f"E-{label}"
    return tags


def spans_from_tags(words: Sequence[tuple[int, int]], tags: Sequence[str]) -> list[Span]:
    """Entity character spans from word tags (BIO or BIOES; an I- after O starts an entity, as seqeval does)."""
    return [(words[first][0], words[last][1], label) for label, first, last in get_entities(list(tags))]


def label_set(scheme: str, types: Sequence[str]) -> list[str]:
    """All tags of a scheme over entity types, "O" first."""
    if scheme not in SCHEMES:
        raise ValueError(f"tag scheme must be one of {', '.join(SCHEMES)}, not {scheme!r}")
    prefixes = "BI" if scheme == "BIO" else "BIES"
    return ["O"] + [f"{p}-{t}" for t in sorted(types) for p in prefixes]


def make_example(text: str, entities: Sequence[Span], *, line: int = 0, path: Path | None = None) -> TaggedExample:
    """Check the spans against the text and cut words at their edges."""
    ordered = sorted(entities)
    for k, (start, end, label) in enumerate(ordered):
        where = path or "<examples>"
        if not (0 <= start < end <= len(text)):
            raise DataError(where, f"entity [{start}, {end}) lies outside the text of {len(text)} characters",
                            line=line, field="entities")
        if text[start:end] != text[start:end].strip() or not label:
            raise DataError(where, f"entity [{start}, {end}) {text[start:end]!r} has surrounding spaces or no label",
                            line=line, field="entities")
        if k and start < ordered[k - 1][1]:
            raise DataError(where, f"entities {ordered[k - 1][:2]} and {(start, end)} overlap", line=line,
                            field="entities")
    cuts = [i for s, e, _ in ordered for i in (s, e)]
    return TaggedExample(text, split_words(text, cuts), tuple(ordered), line)


def join_tokens(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Tokens → text and each token's span; a space between tokens unless both sides are CJK."""
    parts: list[str] = []
    spans = []
    pos = 0
    for k, token in enumerate(tokens):
        if k and not (is_han(tokens[k - 1][-1]) and is_han(token[0])):
            parts.append(" ")
            pos += 1
        parts.append(token)
        spans.append((pos, pos + len(token)))
        pos += len(token)
    return "".join(parts), spans


def from_tokens(tokens: Sequence[str], tags: Sequence[str], *, line: int, path: Path,
                lines: Sequence[int] | None = None) -> TaggedExample:
    for k, (token, tag) in enumerate(zip(tokens, tags, strict=True)):
        bad_token = not token or any(c.isspace() for c in token)
        bad_tag = tag != "O" and not re.fullmatch(r"[BIES]-\S+", tag)
        if bad_token or bad_tag:
            what = f"token {token!r} is empty or holds spaces" if bad_token else \
                f"tag {tag!r} is not O or B-/I-/E-/S- followed by a type"
            raise DataError(path, what, line=lines[k] if lines else line, field="tags" if bad_tag else "tokens")
    text, spans = join_tokens(tokens)
    entities = spans_from_tags(spans, tags)
    return TaggedExample(text, tuple(spans), tuple(entities), line)


def read_conll(path: Path, encoding: str = "auto") -> list[TaggedExample]:
    """CoNLL columns: token first, tag last; blank lines end sentences; ``-DOCSTART-`` lines are skipped."""
    examples: list[TaggedExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []

    def flush() -> None:
        if tokens:
            examples.append(from_tokens(tokens, tags, line=lines[0], path=path, lines=lines))
            tokens.clear(), tags.clear(), lines.clear()

    for number, raw in enumerate(text_lines(read_text(path, encoding)), start=1):
        columns = raw.split()
        if not columns:
            flush()
            continue
        if columns[0] == "-DOCSTART-":
            continue
        if len(columns) < 2:
            raise DataError(path, f"expected a token and a tag separated by whitespace, got {raw.strip()!r}",
                            line=number, field="tag")
        tokens.append(columns[0])
        tags.append(columns[-1])
        lines.append(number)
    flush()
    return examples


def read_ner_jsonl(path: Path, encoding: str = "auto") -> list[TaggedExample]:
    return [_from_record(record, path, number) for number, record in jsonl_records(path, encoding)]


def _from_record(record: dict, path: Path, number: int) -> TaggedExample:
    if "tokens" in record:
        tokens, tags = record.get("tokens"), record.get("tags")
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags) or not tokens:
            raise DataError(path, "'tokens' and 'tags' must be non-empty lists of equal length", line=number,
                            field="tags")
        return from_tokens([str(t) for t in tokens], [str(t) for t in tags], line=number, path=path)
    text, entities = record.get("text"), record.get("entities")
    if not isinstance(text, str) or not text.strip():
        present = ", ".join(map(repr, record)) or "none"
        raise DataError(path, f"missing or empty; give 'text' + 'entities' or 'tokens' + 'tags' (fields present: "
                              f"{present})", line=number, field="text")
    if not isinstance(entities, list):
        raise DataError(path, "missing or not a list of {start, end, label}", line=number, field="entities")
    spans = []
    for entity in entities:
        try:
            spans.append((int(entity["start"]), int(entity["end"]), str(entity["label"])))
        except (KeyError, TypeError, ValueError):
            raise DataError(path, f"each entity needs integer 'start', 'end' and a 'label', got {entity!r}",
                            line=number, field="entities") from None
    return make_example(text, spans, line=number, path=path)


def read_tagged(path: str | Path, encoding: str = "auto") -> list[TaggedExample]:
    """A NER file: ``.conll`` / ``.txt`` / ``.bio`` columns, or ``.jsonl``."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    examples = read_ner_jsonl(path, encoding) if jsonl else read_conll(path, encoding)
    if not examples:
        raise DataError(path, "the file holds no examples")
    return examples


def to_record(example: TaggedExample) -> dict[str, object]:
    return {"text": example.text,
            "entities": [{"start": s, "end": e, "label": t, "text": example.text[s:e]} for s, e, t in example.entities]}


# ---------------------------------------------------------------------------------------------------------
# The built-in People's Daily NER data, derived from the corpus's part-of-speech tags.

ENTITY_TAGS = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
COMPOUND_SURNAMES = frozenset(["欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "令狐", "慕容", "司徒", "尉迟",
                               "公孙", "夏侯", "长孙", "宇文", "端木", "万俟"])


def tagged_line_entities(line: str) -> tuple[str, list[Span]]:
    """'江/nr  泽民/nr  在/p  北京/ns ...' → ('江泽民在北京...', [(0, 3, 'PER'), (4, 6, 'LOC')]).

    ``nr`` marks surnames and given names separately; a surname (one character, or a known two-character
    one) followed by another ``nr`` is one person. Bracketed compounds (``[中国/ns 政府/n]nt``) are one entity
    of the bracket's tag."""
    words: list[tuple[str, str]] = []  # (word, entity label or "")
    compound: list[str] | None = None
    for token in line.split():
        if token.startswith("[") and "/" in token:
            compound = []
            token = token[1:]
        closing = re.search(r"\]([a-z]+)$", token)
        if closing:
            token = token[: closing.start()]
        word, _, pos = token.rpartition("/")
        if compound is not None:
            compound.append(word)
            if closing:
                words.append(("".join(compound), ENTITY_TAGS.get(closing.group(1), "")))
                compound = None
            continue
        words.append((word, ENTITY_TAGS.get(pos, "")))
    text, entities, pos = [], [], 0
    k = 0
    while k < len(words):
        word, label = words[k]
        if label == "PER" and k + 1 < len(words) and words[k + 1][1] == "PER" and \
                (len(word) == 1 or word in COMPOUND_SURNAMES):
            word = word + words[k + 1][0]
            k += 1
        if label:
            entities.append((pos, pos + len(word), label))
        text.append(word)
        pos += len(word)
        k += 1
    return "".join(text), entities


def sentences_with_entities(text: str, entities: Sequence[Span]) -> list[tuple[str, list[Span]]]:
    """Cut a paragraph into sentences (``lmcraft.text.sentence_spans``; never inside an entity) and shift the
    spans to each sentence."""
    out = []
    for start, end in sentence_spans(text):
        inside = [(s - start, e - start, t) for s, e, t in entities if start <= s and e <= end]
        out.append((text[start:end], inside))
    return out
