"""Checks of generated text against its source (seq2seq and chat models): what the output says that the
source does not, and how it is written.

- numbers in the output that the source lacks (after NFKC, thousands separators dropped): a translation or
  a headline must not invent figures;
- placeholders (``%s``, ``{name}``, ``${VAR}``: ``metrics/placeholders.py``) lost, added or broken;
- names in the output that the source lacks: capitalised Latin words, and for Chinese on both sides the
  person, place and organisation names jieba's tagger finds (nr, ns, nt). A heuristic: it flags candidates
  to read, not proven errors; names across scripts (a Chinese rendering of an English name) are not compared;
- copying: outputs whose tokens are their source's, and the share of output tokens found in the source;
- the ratio of output to source length, and repeated 3-grams (the loops of a decoder that degenerates).

Tokens are those of ROUGE (``metrics/generation.py``): characters for Chinese, words for English.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import cache
from typing import Any

from lmcraft.metrics.generation import is_chinese, rouge_tokens
from lmcraft.metrics.placeholders import check_placeholders, placeholders, without_placeholders
from lmcraft.text import has_han

_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_LATIN_NAME = re.compile(r"\b[A-Z][a-zA-Z]+(?:[-'][A-Z][a-zA-Z]+)*\b")
N_EXAMPLES = 20  # flagged examples shown


def numbers(text: str) -> set[str]:
    """The figures of ``text``, placeholders left out (``%2$s``, ``%.255s`` and ``{0}`` hold none)."""
    plain = unicodedata.normalize("NFKC", without_placeholders(text))
    return {m.group(0).replace(",", "") for m in _NUMBER.finditer(plain)}


@cache
def _tagger() -> Any:
    import jieba
    import jieba.posseg

    jieba.setLogLevel(60)
    return jieba.posseg


def names(text: str) -> set[str]:
    """Candidate names: capitalised Latin words, and jieba's nr / ns / nt words of Chinese text."""
    found = set(_LATIN_NAME.findall(unicodedata.normalize("NFKC", text)))
    if has_han(text):
        found |= {w.word for w in _tagger().cut(text) if w.flag in ("nr", "ns", "nt") and len(w.word) > 1}
    return found


def _new_names(source: str, output: str) -> list[str]:
    src_lower = unicodedata.normalize("NFKC", source).lower()
    comparable = [n for n in names(output) if has_han(n) == has_han(source) or not has_han(n)]
    return sorted(n for n in comparable if n.lower() not in src_lower)


def _repeats(tokens: Sequence[str], n: int = 3) -> int:
    grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return sum(c - 1 for c in grams.values() if c > 1)


def generation_checks(sources: Sequence[str], outputs: Sequence[str]) -> dict[str, Any]:
    """Rates over the examples and the flagged examples (new numbers, placeholders, names, repeats)."""
    if len(sources) != len(outputs):
        raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
    n = len(outputs)
    rows = []
    totals: Counter[str] = Counter()
    ratios, overlaps = [], []
    for i, (source, output) in enumerate(zip(sources, outputs, strict=True)):
        chinese_out, chinese_src = is_chinese([output]), is_chinese([source])
        out_tokens = rouge_tokens(unicodedata.normalize("NFKC", output), chinese=chinese_out)
        src_tokens = rouge_tokens(unicodedata.normalize("NFKC", source), chinese=chinese_src)
        new_numbers = sorted(numbers(output) - numbers(source))
        problems = check_placeholders(source, output) if placeholders(source) or placeholders(output) else []
        new_names = _new_names(source, output)
        repeated = _repeats(out_tokens)
        totals["new_numbers"] += bool(new_numbers)
        totals["with_placeholders"] += bool(placeholders(source) or placeholders(output))
        totals["placeholder_problems"] += bool(problems)
        totals["new_names"] += bool(new_names)
        totals["repeats"] += repeated > 0
        totals["copies"] += out_tokens == src_tokens
        ratios.append(len(out_tokens) / max(len(src_tokens), 1))
        src_set = set(src_tokens)
        overlaps.append(sum(t in src_set for t in out_tokens) / len(out_tokens) if out_tokens else 0.0)
        if new_numbers or problems or new_names or repeated:
            rows.append({"index": i, "source": source, "output": output, "new_numbers": new_numbers,
                         "placeholder_problems": problems, "new_names": new_names, "repeated_trigrams": repeated})
    return {
        "n": n,
        "new_numbers_rate": totals["new_numbers"] / n if n else 0.0,
        "placeholder_problem_rate": (totals["placeholder_problems"] / totals["with_placeholders"]
                                     if totals["with_placeholders"] else None),
        "n_with_placeholders": totals["with_placeholders"],
        "new_names_rate": totals["new_names"] / n if n else 0.0,
        "copy_rate": totals["copies"] / n if n else 0.0,
        "mean_source_overlap": sum(overlaps) / n if n else 0.0,
        "mean_length_ratio": sum(ratios) / n if n else 0.0,
        "repeated_trigram_rate": totals["repeats"] / n if n else 0.0,
        "examples": rows[:N_EXAMPLES],
        "n_flagged": len(rows),
    }
