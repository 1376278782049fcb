"""The rules of Chinese and English text that every layer shares, written once: which characters are CJK,
how raw text is normalised, where a sentence ends. Imports nothing of lmcraft.

**Which characters are CJK.** Two sets, each a tuple of inclusive code-point ranges:

- ``HAN_RANGES``, the Chinese characters (Han ideographs): CJK Unified Ideographs (4E00-9FFF), Extension A
  (3400-4DBF), the Compatibility Ideographs (F900-FAFF), plane 2 (Extensions B-F and the Compatibility
  Ideographs Supplement, 20000-2FA1F) and plane 3 (Extensions G-H, 30000-323AF). These are the characters
  that Chinese text writes without spaces and that BERT's tokenizer, CMRC's evaluation and sacrebleu's ``zh``
  tokenisation treat as one unit each. Radicals, strokes, the Yijing hexagrams and 〇 are not in it.
- ``CJK_RANGES``: the Han ranges and the two other scripts written without spaces between words, kana
  (3040-30FF) and hangul syllables (AC00-D7AF). The corpus pipeline counts units, shingles and sentence
  ends by it, so that Japanese and Korean text is not read as runs of one long word.

``CJK_PUNCTUATION_RANGES`` (CJK Symbols and Punctuation 3000-303F, Halfwidth and Fullwidth Forms FF00-FFEF)
is the punctuation that stands in Chinese text; ``char_class`` writes any of these as a regex character class.

**Normalisation** (``normalize``): what the corpus pipeline does to a line before anything else.

1. NFKC: full-width letters, digits and punctuation (１２月, ＡＢＣ, ！？；，) become their ASCII forms, the
   ideographic space becomes a space, ligatures and other compatibility forms are unfolded. The ideographic
   full stop 。 and the curly quotes “” are not compatibility forms and stay.
2. Control and format characters go: C0/C1 controls and invisible format characters (zero-width spaces and
   joiners, the BOM, soft hyphens, bidi marks). A tab becomes a space; CR, VT, FF, NEL and the Unicode line
   and paragraph separators become newlines.
3. Whitespace collapses: a run of spaces is one space, a run of newlines (with any spaces around them) is
   one newline, and the text is stripped. Newlines inside a document (JSONL texts) stay as line breaks.

Speed: NFKC of Chinese news runs at about 0.25 µs a character, most of it spent on the full-width digits
and punctuation. Those are mapped first with a cheap regex, and NFKC runs only on text that still needs
it (``unicodedata.is_normalized`` is a fast check); the result is the same as plain NFKC.

**Sentences** (``split_sentences``, ``sentence_spans``), by rule, for normalised Chinese and English text.

Chinese: a sentence ends after 。！？； (or their ASCII forms, which NFKC makes of the full-width ones, when a
CJK character stands on either side), together with any closing quotes or brackets that follow: ``他说：“好。”``
is one sentence. English: a sentence ends after ``.``, ``!`` or ``?`` (and closing quotes) followed by
spaces and a capital letter, a digit or an opening quote, unless the word before the full stop is a common
abbreviation (Mr. Dr. St. vs.), a dotted acronym (e.g. i.e. U.S. a.m.) or an initial (J. R. R. Tolkien).
A decimal point (1.5) or an ellipsis inside a Chinese sentence never ends one; a line break always does.

The rules miss some boundaries (``... in the U.S. He left``) on purpose: a missed boundary costs the quality
filter little, a false one in the middle of a name splits a document for ``--unit sentence``.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable
from functools import cache

# --- which characters are CJK ------------------------------------------------------------------------------

HAN_RANGES: tuple[tuple[int, int], ...] = (
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x2FA1F),  # Extensions B-F, CJK Compatibility Ideographs Supplement
    (0x30000, 0x323AF),  # Extensions G-H
)
CJK_RANGES: tuple[tuple[int, int], ...] = tuple(sorted((
    *HAN_RANGES,
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0xAC00, 0xD7AF),  # Hangul Syllables
)))
CJK_PUNCTUATION_RANGES: tuple[tuple[int, int], ...] = (
    (0x3000, 0x303F),  # CJK Symbols and Punctuation: 、。「」『』【】〈〉 and the ideographic space
    (0xFF00, 0xFFEF),  # Halfwidth and Fullwidth Forms: ！？，：；（）０-９Ａ-Ｚ
)


def char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    """The inside of a regex character class (no brackets) that matches the code points of ``ranges``."""
    return "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


HAN = char_class(HAN_RANGES)  # for use inside [...]: f"[{HAN}]"
CJK = char_class(CJK_RANGES)
_HAN = re.compile(f"[{HAN}]")
_CJK = re.compile(f"[{CJK}]")


def is_han(ch: str) -> bool:
    """Whether the character ``ch`` is a Chinese character (one of ``HAN_RANGES``)."""
    return _HAN.fullmatch(ch) is not None


def is_cjk(ch: str) -> bool:
    """Whether the character ``ch`` is Han, kana or hangul (one of ``CJK_RANGES``); False for ``""``."""
    return _CJK.fullmatch(ch) is not None


def has_han(text: str) -> bool:
    """Whether ``text`` holds at least one Chinese character."""
    return _HAN.search(text) is not None


# --- normalisation -----------------------------------------------------------------------------------------
_FULL_WIDTH = re.compile("[\uff01-\uff5e\u3000]+")  # full-width ASCII forms and the ideographic space
_HALF_WIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}  # what NFKC maps them to
_AS_NEWLINE = "\r\x0b\x0c\x85\u2028\u2029"
_SPACES = re.compile(r"[^\S\n]+")  # whitespace other than a newline
_LINE_BREAKS = re.compile(r" ?\n\s*")  # a newline with the spaces and blank lines around it


@cache
def _controls() -> re.Pattern[str]:
    """One character class of every control (Cc) and format (Cf) character but the newline, written as
    ranges (a class of ~200 single characters makes the regex ten times slower). Planes 2-13 (CJK
    ideographs, unassigned) and 15-16 (private use) hold none, and are not scanned."""
    ranges: list[list[int]] = []
    for cp in itertools.chain(range(0x20000), range(0xE0000, 0xF0000)):
        ch = chr(cp)
        if ch != "\n" and (unicodedata.category(ch) in ("Cc", "Cf") or ch in _AS_NEWLINE):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    parts = (re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(f"[{''.join(parts)}]")


def _replace_control(match: re.Match[str]) -> str:
    ch = match.group()
    return "\n" if ch in _AS_NEWLINE else " " if ch == "\t" else ""


def normalize(text: str) -> str:
    """NFKC, controls removed, whitespace collapsed: '１２月\u200b３１日\t电' -> '12月31日 电'."""
    if not text.isascii():
        text = _FULL_WIDTH.sub(lambda m: m.group().translate(_HALF_WIDTH), text)
        if not unicodedata.is_normalized("NFKC", text):
            text = unicodedata.normalize("NFKC", text)
    controls = _controls()
    if controls.search(text):
        text = controls.sub(_replace_control, text)
    text = _SPACES.sub(" ", text)
    return _LINE_BREAKS.sub("\n", text).strip()


# --- sentences ---------------------------------------------------------------------------------------------

ABBREVIATIONS = frozenset((
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "no", "nos", "vol", "fig", "figs", "gen",
    "gov", "sen", "rep", "rev", "hon", "capt", "col", "lt", "sgt", "cpl", "maj", "inc", "ltd", "co", "corp",
    "dept", "univ", "approx", "est", "ave", "blvd", "rd", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec",
))
# A run of terminators, then the closing quotes and brackets that belong to the sentence it ends; "hard"
# when the run holds one of 。！？；.
_CLOSERS = "\"'”’」』）)\\]】》"
_END = re.compile(f"(?:(?P<hard>[!?;.…]*[。！？；][。！？；!?;.…]*)|(?P<soft>[!?;.…]+))[{_CLOSERS}]*")
_OPENERS = "\"'“‘「『(（[【《"
_WORD_BEFORE = re.compile(r"[A-Za-z][A-Za-z.]*$")  # the Latin word (dots inside) that ends where the search ends
_NON_SPACE = re.compile(r"\S")
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # e.g / U.S / a.m (the final dot is the terminator)


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
    if not dots_only and (is_cjk(before) or is_cjk(after)):
        return True  # ASCII forms of ！？； in Chinese text
    if dots_only and is_cjk(before):
        return False  # an ellipsis inside a Chinese sentence
    if marks == ";" or not after.isspace():
        return False  # "1.5", "example.com", "a;b"
    found = _NON_SPACE.search(text, end)  # after the spaces (one, in normalised text)
    following = found.group() if found else ""
    if not (following.isupper() or following.isdigit() or following in _OPENERS or is_cjk(following)):
        return False
    return not (marks == "." and _abbreviation_before(text, start))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the sentences of a normalised text, in order, each without the
    whitespace around it; a text without a boundary is one sentence, a blank one none."""
    spans = []
    offset = 0  # of the line in the text
    for line in text.split("\n"):  # a line break always ends a sentence
        start = 0
        for match in _END.finditer(line):
            if match.end() < len(line) and _ends_here(line, match):
                spans.append(_stripped(text, offset + start, offset + match.end()))
                start = match.end()
        spans.append(_stripped(text, offset + start, offset + len(line)))
        offset += len(line) + 1
    return [(s, e) for s, e in spans if s < e]


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    """``text[start:end]`` without its leading and trailing whitespace, as offsets (what ``str.strip`` keeps)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def split_sentences(text: str) -> list[str]:
    """The sentences of a normalised text, stripped, in order; a text without a boundary is one sentence.

    >>> split_sentences("他说：“好。”然后走了。Mr. Li came. He sat down.")
    ['他说：“好。”', '然后走了。', 'Mr. Li came.', 'He sat down.']
    """
    return [text[s:e] for s, e in sentence_spans(text)]


CJK_HEAVY = 0.3  # a text whose non-space characters are at least this share Han characters is treated as Chinese


def cjk_share(texts: Iterable[str]) -> float:
    """The share of Han characters among the non-space characters of ``texts`` (0 for no characters)."""
    han = other = 0
    for text in texts:
        n_han = sum(map(is_han, text))
        han += n_han
        other += len(text) - sum(ch.isspace() for ch in text) - n_han
    return han / max(han + other, 1)
