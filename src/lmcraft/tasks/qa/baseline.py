"""The classic baseline of extractive question answering: the context sentence that shares the most with the
question, scored with the model's measures (``lmcraft.metrics.qa``)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from lmcraft.data.squad import QAExample
from lmcraft.metrics.qa import cmrc_units, score_answers, squad_tokens
from lmcraft.text import has_han, sentence_spans


def baseline_answer(example: QAExample) -> tuple[str, int]:
    """The context sentence that shares the most with the question, and its character start.

    The sliding-window baseline of Richardson et al. (2013, MCTest) adapted to span extraction: the windows
    are sentences and there are no answer candidates to add to the question, so a sentence scores the sum,
    over the question's units (SQuAD tokens, or CMRC units for Chinese) that it contains, of the inverse
    count log(1 + 1/C(u)), C(u) being how often the unit occurs in the whole context. Rare shared words count
    most; the first sentence wins ties. It always answers, so it scores 0 on unanswerable questions.
    """
    units = cmrc_units if has_han(example.context) else squad_tokens
    counts = Counter(units(example.context))
    question = set(units(example.question))

    def score(span: tuple[int, int]) -> float:
        shared = question & set(units(example.context[span[0] : span[1]]))
        return sum(math.log(1 + 1 / counts[u]) for u in shared)

    s, e = max(sentence_spans(example.context), key=score)
    return example.context[s:e], s


def qa_baseline(examples: Sequence[QAExample]) -> dict[str, float]:
    """Scores of ``baseline_answer`` over labelled examples (the same measures as the model's)."""
    return score_answers(examples, {ex.id: baseline_answer(ex)[0] for ex in examples})
