"""Length and quality filters on normalised documents, in the manner of Gopher's (Rae et al., 2021, App. A).

A document is removed by the first filter that rejects it, in this order, and counted under that filter's
name (so the counts add up to the documents removed):

- ``too_short`` / ``too_long``: fewer than ``min_chars`` or more than ``max_chars`` characters.
- ``symbols``: more than ``max_symbol_ratio`` of the non-space characters are neither letters nor digits
  (punctuation, symbols, emoji): menus, ASCII art, tables of numbers lost their text.
- ``dup_sentences``: more than ``max_dup_sentence_ratio`` of the characters stand in sentences that repeat an
  earlier sentence of the same document (Gopher's duplicate-line fraction, by sentence, because a
  paragraph of Chinese is one line): "好好学习。好好学习。好好学习。".
- ``top_2gram``: the most frequent 2-gram of units covers more than ``max_top_2gram_ratio`` of the units'
  characters (Gopher: 0.20), in documents of at least ``min_units_for_ngram`` units. A unit is a Latin
  word, a number, or one CJK character; spam repeats a phrase ("buy now buy now ...", "哈哈哈哈").
- ``word_length``: English (Latin-script) documents whose mean word length is outside
  [``min_mean_word_len``, ``max_mean_word_len``] (Gopher: 3 to 10; words are split at spaces and keep
  their punctuation, as in Gopher): keyboard mashing, lists of hashes or URLs, one-letter lines. The rule
  looks only at documents whose Latin letters make at least ``min_latin_share`` of the non-space
  characters (Chinese, Russian, Arabic text skips it).

The defaults were set on real text. Of the People's Daily's 19,484 paragraphs (January 1998) they remove
13.1% as too short — headlines, datelines and bylines, 0.8% of the characters — and 0.2% by the quality
rules (runs of "……", bylines such as "———王文西(山东)"); of the 14,742 English fortunes, 0.6% (ASCII art,
C macros, "CChheecckk yyoouurr dduupplleexx", one-line jokes built on a repeated phrase).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise

from lmcraft.text import CJK

FILTERS = ("too_short", "too_long", "symbols", "dup_sentences", "top_2gram", "word_length")
_SYMBOL = re.compile(r"[^\w\s]|_")  # not a letter, digit or space (\w counts CJK characters as letters)
_UNIT = re.compile(f"[{CJK}]|[^\\W_{CJK}]+")  # one CJK character, or a run of other letters and digits
_ASCII_LETTERS = string.ascii_letters.encode()


@dataclass(frozen=True)
class FilterConfig:
    min_chars: int = 10  # shorter documents are removed (headlines, datelines, "ok")
    max_chars: int = 100_000  # longer ones too (dumps of logs or tables)
    max_symbol_ratio: float = 0.4  # most symbols (not letter/digit/space) among non-space characters
    max_dup_sentence_ratio: float = 0.3  # most characters in sentences repeated within the document
    max_top_2gram_ratio: float = 0.2  # most characters of units covered by the commonest unit 2-gram
    min_units_for_ngram: int = 50  # the 2-gram rule looks only at documents with this many units
    min_mean_word_len: float = 3.0  # English: shortest mean word length kept
    max_mean_word_len: float = 10.0  # English: longest mean word length kept
    min_latin_share: float = 0.5  # the word-length rule applies where Latin letters are this share of the text

    def __post_init__(self) -> None:
        if not 0 <= self.min_chars <= self.max_chars:
            raise ValueError(f"need 0 <= min_chars <= max_chars, got {self.min_chars} and {self.max_chars}")
        for name in ("max_symbol_ratio", "max_dup_sentence_ratio", "max_top_2gram_ratio", "min_latin_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")


def _non_space(text: str) -> int:
    return len(text) - text.count(" ") - text.count("\n")  # normalised text has no other whitespace


def symbol_ratio(text: str) -> float:
    """The fraction of non-space characters that are neither letters nor digits."""
    chars = _non_space(text)
    return len(_SYMBOL.findall(text)) / chars if chars else 0.0


def dup_sentence_ratio(sentences: list[str]) -> float:
    """The fraction of characters in sentences that repeat an earlier sentence of the document."""
    seen: set[str] = set()
    repeated = total = 0
    for s in sentences:
        total += len(s)
        if s in seen:
            repeated += len(s)
        seen.add(s)
    return repeated / total if total else 0.0


def top_2gram_ratio(units: list[str]) -> float:
    """Characters covered by the most frequent 2-gram of units, over all units' characters (of equally
    frequent 2-grams, the one of the longest units counts)."""
    if len(units) < 2:
        return 0.0
    pairs = Counter(pairwise(units))
    top = max(pairs.values())
    return top * max(len(a) + len(b) for (a, b), n in pairs.items() if n == top) / sum(map(len, units))


def _top_2gram_bound(units: list[str]) -> float:
    """An upper bound of ``top_2gram_ratio``, cheaper: a 2-gram (a, b) occurs at most as often as a and as
    b, so it covers at most count(a)·len(a) + count(b)·len(b) characters."""
    return 2 * max(n * len(u) for u, n in Counter(units).items()) / sum(map(len, units))


def rejected_by(text: str, sentences: list[str], config: FilterConfig) -> str | None:
    """The name of the first filter that removes ``text`` (normalised; ``sentences`` are its sentences), or
    None when the document is kept."""
    if len(text) < config.min_chars:
        return "too_short"
    if len(text) > config.max_chars:
        return "too_long"
    if symbol_ratio(text) > config.max_symbol_ratio:
        return "symbols"
    if len(sentences) > 1 and dup_sentence_ratio(sentences) > config.max_dup_sentence_ratio:
        return "dup_sentences"
    units = _UNIT.findall(text.lower())
    limit = config.max_top_2gram_ratio
    if len(units) >= config.min_units_for_ngram and _top_2gram_bound(units) > limit and top_2gram_ratio(units) > limit:
        return "top_2gram"
    data = text.encode("utf-8")
    latin = len(data) - len(data.translate(None, _ASCII_LETTERS))
    if latin >= config.min_latin_share * _non_space(text):
        words = text.split()  # Gopher's words: whitespace-separated, punctuation included
        if not config.min_mean_word_len <= sum(map(len, words)) / len(words) <= config.max_mean_word_len:
            return "word_length"
    return None
