"""Scores of extractive question answering, and the non-neural baseline they are read against.

Two rules, chosen per question by whether its context contains CJK characters:

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

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

from lmcraft.data.squad import QAExample

_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = set(string.punctuation)
_SENTENCE_END = re.compile(r"[。！？；!?]+[”’」』）)]*|[.;]+(?=\s)")


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


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
        if _CJK.match(ch) or ch.isspace() or unicodedata.category(ch)[0] in "PS":
            if word:
                units.append(word)
                word = ""
            if _CJK.match(ch):
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


def score_answers(examples: Sequence[QAExample], predictions: Mapping[str, str]) -> dict[str, float]:
    """exact_match and f1 (means over the questions, 0..1), and has_answer_f1 / no_answer_f1 over the
    answerable / unanswerable questions when there are any. A missing prediction counts as no answer."""
    em, f1, answerable, unanswerable = [], [], [], []
    for ex in examples:
        golds = [text for text, _ in ex.answers]
        chinese = has_cjk(ex.context)
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


# --- the classic baseline ---------------------------------------------------------------------------------


def sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (after 。！？；!? and after . ; before whitespace),
    whitespace trimmed."""
    spans, begin = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((begin, m.end()))
        begin = m.end()
    spans.append((begin, len(text)))
    trimmed = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            trimmed.append((s, e))
    return trimmed


def baseline_answer(example: QAExample) -> tuple[str, int]:
    """The context sentence that shares the most with the question, and its character start.

    The sliding-window baseline of Richardson et al. (2013, MCTest) adapted to span extraction: the windows
    are sentences and there are no answer candidates to add to the question, so a sentence scores the sum,
    over the question's units (SQuAD tokens, or CMRC units for Chinese) that it contains, of the inverse
    count log(1 + 1/C(u)), C(u) being how often the unit occurs in the whole context. Rare shared words count
    most; the first sentence wins ties. It always answers, so it scores 0 on unanswerable questions.
    """
    units = cmrc_units if has_cjk(example.context) else squad_tokens
    counts = Counter(units(example.context))
    question = set(units(example.question))

    def score(span: tuple[int, int]) -> float:
        shared = question & set(units(example.context[span[0] : span[1]]))
        return sum(math.log(1 + 1 / counts[u]) for u in shared)

    s, e = max(sentences(example.context), key=score)
    return example.context[s:e], s


def qa_baseline(examples: Sequence[QAExample]) -> dict[str, float]:
    """Scores of ``baseline_answer`` over labelled examples (the same measures as the model's)."""
    return score_answers(examples, {ex.id: baseline_answer(ex)[0] for ex in examples})
