"""Settings of extractive question answering (``lmcraft finetune --task qa``)."""

from __future__ import annotations

from dataclasses import dataclass

from lmcraft.config import opt


@dataclass
class QAOptions:
    doc_stride: int = opt(64, "qa: context tokens that neighbouring windows of a long context share")
    max_answer_tokens: int = opt(30, "qa: the longest answer, in tokens")
