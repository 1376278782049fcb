"""Non-neural baselines of the generation tasks, scored on the same split and with the same measures as a model.

- ``copy_source``: the output is the input. For software messages this is a real floor: identifiers,
  options and placeholders are copied by translators too, so chrF is well above zero.
- ``lead``: the first sentence of the article, cut to ``n_chars`` (for headlines; the classic lead baseline
  of summarisation, which strong systems beat only by a few ROUGE points on news).
- ``translation_memory``: what a translation memory does: find the training source most like the input
  (cosine of character 1-3-gram TF-IDF vectors, which works for English and Chinese alike) and output its
  target. An input seen in training gets its training target exactly. For chat the sources are user
  messages, so it answers with the reply to the most similar training prompt.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from lmcraft.data.chat import Conversation, chat_pairs
from lmcraft.data.seq2seq import Pair
from lmcraft.metrics.generation import generation_report
from lmcraft.tasks.seq2seq.memory import TranslationMemory
from lmcraft.text import split_sentences

KINDS = ("translation", "headline", "chat")


def copy_source(pairs: Sequence[Pair]) -> list[str]:
    return [p.source for p in pairs]


def lead(pairs: Sequence[Pair], n_chars: int) -> list[str]:
    """The first sentence of each source without its final punctuation, at most ``n_chars`` characters."""
    out = []
    for p in pairs:
        sentences = split_sentences(p.source)
        sentence = sentences[0] if sentences else ""
        out.append(sentence.rstrip("。！？!?”’」』）) ")[:n_chars])
    return out


def translation_memory(train: Sequence[Pair], test: Sequence[Pair], *, batch_size: int = 256) -> list[str]:
    """For each test source, the target of the most similar training source (exact matches first;
    ``memory.py``)."""
    if not train:
        raise ValueError("the translation memory needs training pairs")
    memory = TranslationMemory([(p.source, p.target) for p in train])
    return memory.targets_for([p.source for p in test], batch_size=batch_size)


def baseline_report(train: Sequence[Pair] | Sequence[Conversation], test: Sequence[Pair] | Sequence[Conversation],
                    *, kind: str = "translation") -> dict[str, dict[str, object]]:
    """{baseline name: generation_report on ``test``} for the baselines that suit the kind of task:
    translation → copy and translation memory; headline → lead (cut to the median training headline length)
    and translation memory; chat → translation memory over user prompts (conversations are cut into
    user → assistant exchanges with ``chat_pairs``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    train_pairs, test_pairs = _pairs(train), _pairs(test)
    references = [p.target for p in test_pairs]
    sources = [p.source for p in test_pairs] if kind == "translation" else None
    outputs: dict[str, list[str]] = {}
    extra: dict[str, dict[str, object]] = {}
    if kind == "translation":
        outputs["copy_source"] = copy_source(test_pairs)
    if kind == "headline":
        n_chars = round(statistics.median(len(p.target) for p in train_pairs))
        outputs["lead"] = lead(test_pairs, n_chars)
        extra["lead"] = {"n_chars": n_chars}
    outputs["translation_memory"] = translation_memory(train_pairs, test_pairs)
    return {name: {**generation_report(hyps, references, sources), **extra.get(name, {})}
            for name, hyps in outputs.items()}


def _pairs(examples: Sequence[Pair] | Sequence[Conversation]) -> list[Pair]:
    if all(isinstance(e, Pair) for e in examples):
        return list(examples)  # type: ignore[arg-type]
    if all(isinstance(e, Conversation) for e in examples):
        return chat_pairs(list(examples))  # type: ignore[arg-type]
    raise TypeError("expected pairs (lmcraft.data.seq2seq.Pair) or conversations (lmcraft.data.chat.Conversation)")
