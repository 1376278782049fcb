"""Sentence splitting for normalised Chinese and English text, by rule.

Chinese: a sentence ends after 。！？； (or their ASCII forms, which NFKC makes of the full-width ones, when a
CJK character stands on either side), together with any closing quotes or brackets that follow: ``他说：“好。”``
is one sentence. English: a sentence ends after ``.``, ``!`` or ``?`` (and closing quotes) followed by a
space and a capital letter, a digit or an opening quote, unless the word before the full stop is a common
abbreviation (Mr. Dr. St. vs.), a dotted acronym (e.g. i.e. U.S. a.m.) or an initial (J. R. R. Tolkien).
A decimal point (1.5) or an ellipsis inside a Chinese sentence never ends one; a line break always does.

The rules miss some boundaries (``... in the U.S. He left``) on purpose: a missed boundary costs the quality
filter little, a false one in the middle of a name splits a document for ``--unit sentence``.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset((
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "no", "nos", "vol", "fig", "figs", "gen",
    "gov", "sen", "rep", "rev", "hon", "capt", "col", "lt", "sgt", "cpl", "maj", "inc", "ltd", "co", "corp",
    "dept", "univ", "approx", "est", "ave", "blvd", "rd", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec",
))
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002fa1f]")
# A run of terminators, then the closing quotes and brackets that belong to the sentence it ends; "hard"
# when the run holds one of 。！？；.
_CLOSERS = "\"'”’」』）)\\]】》"
_END = re.compile(f"(?:(?P<hard>[!?;.…]*[。！？；][。！？；!?;.…]*)|(?P<soft>[!?;.…]+))[{_CLOSERS}]*")
_OPENERS = "\"'“‘「『(（[【《"
_WORD_BEFORE = re.compile(r"[A-Za-z][A-Za-z.]*$")  # the Latin word (dots inside) that ends where the search ends
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # e.g / U.S / a.m (the final dot is the terminator)


def _is_cjk(ch: str) -> bool:
    return bool(ch) and _CJK.match(ch) is not None


def _abbreviation_before(text: str, dot: int) -> bool:
    """Whether the word that ends at ``text[dot]`` (a full stop) is an abbreviation or an initial."""
    found = _WORD_BEFORE.search(text, 0, dot)
    word = found.group() if found else ""
    if len(word) == 1 and word.isupper():
        return True  # an initial: "J. Smith"
    return word.lower() in ABBREVIATIONS or _DOTTED.fullmatch(word) is not None


def _ends_here(text: str, match: re.Match[str]) -> bool:
    """Whether the terminator run ``match`` ends a sentence (the end of the text is handled by the caller)."""
    marks = match.group("soft")
    if marks is None:
        return True  # 。！？；
    start, end = match.span()
    before, after = text[start - 1 : start], text[end : end + 1]
    dots_only = not marks.strip(".…")
    if not dots_only and (_is_cjk(before) or _is_cjk(after)):
        return True  # ASCII forms of ！？； in Chinese text
    if dots_only and _is_cjk(before):
        return False  # an ellipsis inside a Chinese sentence
    if marks == ";" or not after.isspace():
        return False  # "1.5", "example.com", "a;b"
    following = text[end + 1 : end + 2]
    if not (following.isupper() or following.isdigit() or following in _OPENERS or _is_cjk(following)):
        return False
    return not (marks == "." and _abbreviation_before(text, start))


def split_sentences(text: str) -> list[str]:
    """The sentences of a normalised text, stripped, in order; a text without a boundary is one sentence.

    >>> split_sentences("他说：“好。”然后走了。Mr. Li came. He sat down.")
    ['他说：“好。”', '然后走了。', 'Mr. Li came.', 'He sat down.']
    """
    sentences = []
    for line in text.split("\n"):  # a line break always ends a sentence
        start = 0
        for match in _END.finditer(line):
            if match.end() < len(line) and _ends_here(line, match):
                sentences.append(line[start : match.end()].strip())
                start = match.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]
