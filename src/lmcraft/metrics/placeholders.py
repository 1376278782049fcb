"""The placeholders of software messages, and the share of translations that keep them intact.

Software messages carry placeholders that a translation must keep: printf (``%s``, ``%-10s``, ``%.2f``,
``%lu``, positional ``%1$s``, Python's ``%(name)s``), Python braces (``{name}``, ``{0}``, ``{}``) and shell /
GLib variables (``${VAR}``). ``check_placeholders`` says what a target lost, gained or broke; the same check
cleans the gettext data (``lmcraft.data.gettext_pairs``) and scores a model's translations
(``placeholder_intact_rate``: the share of outputs whose placeholders are intact).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

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


def without_placeholders(text: str) -> str:
    """``text`` with each placeholder replaced by a space: what is left for checks of its words and numbers (the
    2 of ``%2$s`` and the 255 of ``%.255s`` are not figures)."""
    return _TOKEN.sub(lambda m: m.group(0) if m.group(0) in ("%%", "{{", "}}") else " ", text)


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


# a brace field still open at the end of a text, "{when:%d %b": its format spec may hold %-conversions that
# are the field's, not placeholders of their own, once the "}" is written
_OPEN_FIELD = re.compile(r"\{(?:\w+(?:\.\w+|\[\w+\])*)?(?:![rsa])?:[^{}]*$")


def placeholders_may_continue(source: str, partial: str) -> bool:
    """Whether ``partial``, the start of a rendering of ``source``, can still end with its placeholders intact:
    every placeholder it has written so far is one the source asks for (right number, type and order), so
    that only missing ones remain to be written. A placeholder not finished yet (``%(na``, ``{when:%d``)
    does not count."""
    finished = _OPEN_FIELD.sub("", partial)
    return all(problem.startswith("missing ") for problem in check_placeholders(source, finished))


def placeholder_intact_rate(sources: Sequence[str], outputs: Sequence[str]) -> tuple[float, int] | None:
    """(share of outputs whose placeholders are intact, how many sources have placeholders), counted over the
    sources that have any; None when none has."""
    if len(sources) != len(outputs):
        raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
    checked = [not check_placeholders(s, o) for s, o in zip(sources, outputs, strict=True) if placeholders(s)]
    return (sum(checked) / len(checked), len(checked)) if checked else None
