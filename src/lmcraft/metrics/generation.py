"""Scores of generated text against one reference per example: BLEU, chrF, ROUGE, and the checks around them.

- BLEU (Papineni et al. 2002) and chrF (Popović 2015) are sacrebleu's corpus-level scores (Post 2018), so the
  figures compare with published ones: tokenisation ``zh`` (every CJK character a token) when the references
  are Chinese, ``13a`` (the WMT default) otherwise. chrF is character-based and needs no tokeniser.
- ROUGE-1, ROUGE-2 and ROUGE-L (Lin 2004) are F1 scores, averaged over the examples, as rouge-score reports
  them. Tokens are the non-space characters for Chinese (as in the LCSTS evaluations, where a word segmenter
  would make the score depend on the segmenter) and the lower-cased runs of letters and digits for English.
  ROUGE-L is the longest common subsequence, computed bit-parallel (Hyyrö 2004), so long outputs stay cheap.

Every score is on 0-100, as sacrebleu prints BLEU; ``length_ratio`` and ``placeholders_intact`` are plain
ratios.

Outputs and references are compared after NFKC normalisation (full-width ``：，（）１`` become ``:,()1``): the
tokenizers normalise their input that way, so a model can only write the half-width forms, and a score
should not count the width of a comma as a translation error. Baselines are scored the same way.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Hashable, Sequence

import sacrebleu

from lmcraft.metrics.placeholders import placeholder_intact_rate
from lmcraft.text import is_han

_WORD = re.compile(r"[a-z0-9]+")
CHINESE_SHARE = 0.3  # texts whose letters are at least this share CJK characters are scored as Chinese


def is_chinese(texts: Sequence[str]) -> bool:
    """True when CJK characters make up at least ``CHINESE_SHARE`` of the letters of ``texts`` (Chinese
    software messages keep English identifiers and placeholders, so the bar is below one half)."""
    letters = cjk = 0
    for text in texts:
        for ch in text:
            if ch.isalpha():
                letters += 1
                cjk += is_han(ch)
    return letters > 0 and cjk / letters >= CHINESE_SHARE


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not references:
        raise ValueError("nothing to score: no references")


def bleu(hypotheses: Sequence[str], references: Sequence[str], *, chinese: bool) -> float:
    """Corpus BLEU, 0-100 (sacrebleu's defaults: exponential smoothing, 4-grams)."""
    _check(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)],
                                       tokenize="zh" if chinese else "13a").score)


def chrf(hypotheses: Sequence[str], references: Sequence[str], *, chinese: bool) -> float:
    """Corpus chrF, 0-100 (character 6-grams, beta 2; whitespace ignored, so the language does not matter)."""
    _check(hypotheses, references)
    del chinese  # the same for both: kept so that every score has the same signature
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def rouge_tokens(text: str, *, chinese: bool) -> list[str]:
    """The units ROUGE counts: non-space characters (Chinese) or lower-cased letter / digit runs (English)."""
    return [ch for ch in text if not ch.isspace()] if chinese else _WORD.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: int, n_hyp: int, n_ref: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_hyp, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b``.

    Bit-parallel (Allison & Dix 1986; Hyyrö 2004): bit j of ``v`` is 0 where the LCS grows at b[j], so each
    element of ``a`` costs a few big-integer operations instead of a pass over ``b``."""
    if not a or not b:
        return 0
    masks: dict[Hashable, int] = {}
    for j, item in enumerate(b):
        masks[item] = masks.get(item, 0) | (1 << j)
    full = (1 << len(b)) - 1
    v = full
    for item in a:
        u = v & masks.get(item, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def rouge(hypotheses: Sequence[str], references: Sequence[str], *, chinese: bool) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1, each the mean over the examples, 0-100."""
    _check(hypotheses, references)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = rouge_tokens(hypothesis, chinese=chinese), rouge_tokens(reference, chinese=chinese)
        for n in (1, 2):
            h, r = _ngrams(hyp, n), _ngrams(ref, n)
            totals[f"rouge{n}"] += _f1(sum((h & r).values()), sum(h.values()), sum(r.values()))
        totals["rougeL"] += _f1(lcs_length(hyp, ref), len(hyp), len(ref))
    return {name: 100 * total / len(references) for name, total in totals.items()}


def generation_report(hypotheses: Sequence[str], references: Sequence[str],
                      sources: Sequence[str] | None = None) -> dict[str, object]:
    """Every score of the outputs: BLEU, chrF, ROUGE-1/2/L, the mean ratio of output to reference length (in
    ROUGE's tokens), and, when ``sources`` are given and some have placeholders, the share of outputs that keep
    them intact (``lmcraft.metrics.placeholders.check_placeholders``). Both sides are NFKC-normalised first."""
    _check(hypotheses, references)
    hypotheses = [unicodedata.normalize("NFKC", h) for h in hypotheses]
    references = [unicodedata.normalize("NFKC", r) for r in references]
    chinese = is_chinese(references)
    report: dict[str, object] = {"n": len(references), "chinese": chinese,
                                 "bleu": bleu(hypotheses, references, chinese=chinese),
                                 "chrf": chrf(hypotheses, references, chinese=chinese),
                                 **rouge(hypotheses, references, chinese=chinese)}
    ratios = [len(rouge_tokens(h, chinese=chinese)) / max(len(rouge_tokens(r, chinese=chinese)), 1)
              for h, r in zip(hypotheses, references, strict=True)]
    report["length_ratio"] = sum(ratios) / len(ratios)
    if sources is not None:
        intact = placeholder_intact_rate(sources, hypotheses)
        if intact is not None:
            report["placeholders_intact"], report["n_with_placeholders"] = intact
    return report
