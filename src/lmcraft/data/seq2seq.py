"""Source → target pairs (translation, headline generation), and the placeholders of software messages.

Inputs:
- JSONL, one pair a line: ``{"source": "...", "target": "..."}`` (the field names are arguments);
- TSV, two columns ``source<TAB>target`` (a first line that holds exactly the two field names is a header).

Every problem raises ``DataError`` naming the file, the line and the field.

Software messages carry placeholders that a translation must keep: printf (``%s``, ``%-10s``, ``%.2f``,
``%lu``, positional ``%1$s``, Python's ``%(name)s``), Python braces (``{name}``, ``{0}``, ``{}``) and shell /
GLib variables (``${VAR}``). ``check_placeholders`` says what a target lost, gained or broke; the same check
cleans the gettext data and scores a model's translations (the share of outputs whose placeholders are intact).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
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


# --- placeholders -----------------------------------------------------------------------------------------

# printf: %[n$ | (name)][flags][width][.precision][length]conversion. The space flag is left out on purpose:
# "99% of the time" would otherwise hold a "% o" conversion, and no message here uses "% d" for real.
_PRINTF = (r"%(?:(?P<pos>\d+)\$|\((?P<name>\w+)\))?[-+#0']*(?P<width>\*(?:\d+\$)?|\d+)?"
           r"(?:\.(?P<prec>\*(?:\d+\$)?|\d+))?(?P<length>hh|h|ll|l|L|q|j|z|Z|t|I64|I32|I)?"
           r"(?P<conv>[diouxXeEfFgGaAcspnmCS])")
_SHELL = r"\$\{(?P<var>[A-Za-z_]\w*)\}"
_BRACE = r"\{(?P<field>(?:\w+(?:\.\w+|\[\w+\])*)?)(?:![rsa])?(?::[^{}]*)?\}"
# Escapes first, so that "%%d" is a literal "%d" and "{{x}}" a literal "{x}".
_TOKEN = re.compile(rf"%%|\{{\{{|\}}\}}|{_PRINTF}|{_SHELL}|{_BRACE}")
_TYPES = {**dict.fromkeys("di", "int"), **dict.fromkeys("ouxX", "unsigned"), **dict.fromkeys("eEfFgGaA", "float"),
          "c": "char", "s": "string", "p": "pointer", "n": "count", "C": "wchar", "S": "wstring"}


def placeholders(text: str) -> list[str]:
    """The placeholders of ``text`` in order, as written (``%%``, ``{{`` and ``}}`` are escapes, not placeholders)."""
    return [m.group(0) for m in _TOKEN.finditer(text) if m.group(0) not in ("%%", "{{", "}}")]


@dataclass
class _Args:
    """What a text's placeholders ask for: printf arguments by position, and named placeholders as a bag."""

    positional: dict[int, tuple[str, str]]  # argument number -> (type, the placeholder as written)
    sequential: list[str]  # the argument types in order, when the text numbers none of them
    named: Counter[str]  # %(name)s, %m, {name}, {0}, {}, ${VAR}: order is free (or, for {}, not checkable)


def _args(text: str) -> _Args:
    out = _Args({}, [], Counter())
    for m in _TOKEN.finditer(text):
        token = m.group(0)
        if token in ("%%", "{{", "}}"):
            continue
        if m.group("conv") is None:  # ${VAR} or a brace field
            out.named["${" + m.group("var") + "}" if m.group("var") else "{" + m.group("field") + "}"] += 1
        elif m.group("name") is not None or m.group("conv") == "m":  # %(name)s; %m prints errno, takes nothing
            out.named["%m" if m.group("conv") == "m" else f"%({m.group('name')})"] += 1
        else:
            length, kind = m.group("length"), _TYPES[m.group("conv")]
            kind = f"{length} {kind}" if length else kind  # "l int": %ld and %d differ in size
            stars = [g for g in (m.group("width"), m.group("prec")) if g and g.startswith("*")]
            if m.group("pos") is not None:
                out.positional[int(m.group("pos"))] = (kind, token)
                for star in stars:  # "*3$": the width comes from argument 3
                    if star != "*":
                        out.positional[int(star[1:-1])] = ("int", star)
                continue
            for _ in stars:  # a "*" width or precision takes an int argument before the value
                out.sequential.append("int")
                out.positional[len(out.sequential)] = ("int", token)
            out.sequential.append(kind)
            out.positional[len(out.sequential)] = (kind, token)
    return out


def _written(args: _Args) -> str:
    return " ... ".join(token for _, (_, token) in sorted(args.positional.items()))


def check_placeholders(source: str, target: str) -> list[str]:
    """What is wrong with the placeholders of ``target`` as a rendering of ``source``; empty when nothing is.

    printf arguments are compared by number and type (``%s`` then ``%d`` may become ``%2$d ... %1$s``, but not
    ``%d ... %s``; width and flags may change, for alignment); named placeholders are compared as a bag.
    """
    src, tgt = _args(source), _args(target)
    problems = []
    if src.sequential and tgt.sequential and src.sequential != tgt.sequential \
            and sorted(src.sequential) == sorted(tgt.sequential):
        problems.append(f"reordered: {_written(src)} became {_written(tgt)}; reordering needs positional "
                        f"arguments (%1$s)")
    else:
        for number in sorted(src.positional.keys() | tgt.positional.keys()):
            want, got = src.positional.get(number), tgt.positional.get(number)
            if got is None:
                problems.append(f"missing {want[1]} (argument {number})")  # type: ignore[index]
            elif want is None:
                problems.append(f"extra {got[1]} (argument {number})")
            elif want[0] != got[0]:
                problems.append(f"{want[1]} became {got[1]} (argument {number}: {want[0]} → {got[0]})")
    for name in sorted(src.named - tgt.named):
        problems.append(f"missing {name}")
    for name in sorted(tgt.named - src.named):
        problems.append(f"extra {name}")
    return problems


def placeholder_intact_rate(sources: Sequence[str], outputs: Sequence[str]) -> tuple[float, int] | None:
    """(share of outputs whose placeholders are intact, how many sources have placeholders), counted over the
    sources that have any; None when none has."""
    if len(sources) != len(outputs):
        raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
    checked = [not check_placeholders(s, o) for s, o in zip(sources, outputs, strict=True) if placeholders(s)]
    return (sum(checked) / len(checked), len(checked)) if checked else None
