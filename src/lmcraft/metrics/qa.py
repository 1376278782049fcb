"""Scores of extractive question answering: SQuAD's and CMRC 2018's answer normalisation, exact match and F1.

Two rules, chosen per question by whether its context contains Chinese characters (``lmcraft.text.HAN``):

- English, as the official SQuAD evaluation (Rajpurkar et al. 2016, 2018): lowercase, drop ASCII punctuation
  and the articles a / an / the, split on whitespace. Exact match compares the token lists; F1 the bags of
  tokens.
- Chinese, as the CMRC 2018 evaluation (Cui et al. 2019): lowercase, drop punctuation, symbols and
  whitespace; every CJK character is one unit and every run of other characters (a Latin word, a number in
  ASCII or full-width digits) is one unit. F1 counts the longest common *contiguous* run of units, as CMRC's
  script does, rather than a bag of characters: "１５６２家" against "１５６２家污染企业" scores 2/6 precision.

A question scores the maximum over its gold answers. An unanswerable question (no gold answer) scores 1
when the prediction is empty and 0 otherwise, for both measures (SQuAD v2).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Protocol

from lmcraft.text import has_han, is_han

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = set(string.punctuation)


class Question(Protocol):
    """What ``score_answers`` reads of a question (``lmcraft.data.squad.QAExample`` has it)."""

    @property
    def id(self) -> str: ...
    @property
    def context(self) -> str: ...
    @property
    def answers(self) -> tuple[tuple[str, int], ...]: ...  # (text, character start) of every gold answer


def squad_tokens(text: str) -> list[str]:
    """SQuAD's normalisation: lowercase, no ASCII punctuation, no articles, whitespace tokens."""
    text = "".join(ch for ch in text.lower() if ch not in _ASCII_PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


def cmrc_units(text: str) -> list[str]:
    """CMRC's mixed segmentation: one unit per CJK character, one per run of other characters; punctuation,
    symbols and whitespace separate units and are dropped."""
    units: list[str] = []
    word = ""
    for ch in text.lower():
        if is_han(ch) or ch.isspace() or unicodedata.category(ch)[0] in "PS":
            if word:
                units.append(word)
                word = ""
            if is_han(ch):
                units.append(ch)
        else:
            word += ch
    if word:
        units.append(word)
    return units


def _longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous sequence of units that both ``a`` and ``b`` contain."""
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def _f1_one(prediction: str, gold: str, chinese: bool) -> float:
    if chinese:
        pred, ref = cmrc_units(prediction), cmrc_units(gold)
        same = _longest_common_run(pred, ref)
    else:
        pred, ref = squad_tokens(prediction), squad_tokens(gold)
        if not pred or not ref:  # SQuAD: an answer that normalises to nothing matches only nothing
            return float(pred == ref)
        same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: Sequence[str], *, chinese: bool) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer; for no gold answers, 1.0 when the
    prediction is empty."""
    if not golds:
        return float(not prediction.strip())
    normalise = cmrc_units if chinese else squad_tokens
    return float(any(normalise(prediction) == normalise(gold) for gold in golds))


def f1_score(prediction: str, golds: Sequence[str], *, chinese: bool) -> float:
    """The best F1 over the gold answers; for no gold answers, 1.0 when the prediction is empty."""
    if not golds:
        return float(not prediction.strip())
    return max(_f1_one(prediction, gold, chinese) for gold in golds)


def score_answers(examples: Sequence[Question], predictions: Mapping[str, str]) -> dict[str, float]:
    """exact_match and f1 (means over the questions, 0..1), and has_answer_f1 / no_answer_f1 over the
    answerable / unanswerable questions when there are any. A missing prediction counts as no answer."""
    em, f1, answerable, unanswerable = [], [], [], []
    for ex in examples:
        golds = [text for text, _ in ex.answers]
        chinese = has_han(ex.context)
        prediction = predictions.get(ex.id, "")
        em.append(exact_match(prediction, golds, chinese=chinese))
        f1.append(f1_score(prediction, golds, chinese=chinese))
        (answerable if golds else unanswerable).append(f1[-1])
    out = {"exact_match": _mean(em), "f1": _mean(f1)}
    if answerable:
        out["has_answer_f1"] = _mean(answerable)
    if unanswerable:
        out["no_answer_f1"] = _mean(unanswerable)
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
