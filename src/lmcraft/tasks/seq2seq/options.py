"""Settings of the generation tasks (``lmcraft finetune --task seq2seq`` and ``--task chat``)."""

from __future__ import annotations

from dataclasses import dataclass

from lmcraft.config import opt


@dataclass
class GenerationOptions:
    layout: str = opt("decoder", "seq2seq: decoder (one causal model, loss on the target only) or encoder-decoder "
                                 "(the backbone encodes, a decoder head writes); chat is always decoder")
    decoder_layers: int = opt(0, "encoder-decoder: the decoder head's depth (0: as deep as the encoder)")
    label_smoothing: float = opt(0.1, "seq2seq/chat: label smoothing ε of the target tokens' cross-entropy")
    max_target_tokens: int = opt(64, "seq2seq/chat: longer targets are cut in training; the longest output")
    num_beams: int = opt(4, "seq2seq/chat: beams of beam search at test time (1: greedy)")
    length_penalty: float = opt(1.0, "seq2seq/chat: beam scores are divided by length ** this (0: none)")
    no_repeat_ngram: int = opt(0, "seq2seq/chat: beam search never writes the same n-gram twice (0: off; 3 stops "
                                  "the loops small models fall into)")
    keep_placeholders: bool = opt(True, "seq2seq: beam search writes exactly the source's placeholders (printf, "
                                        "{0}, ${VAR}): a hypothesis may not add one the source lacks, nor end "
                                        "before it has written all of them")
    memory: bool = opt(False, "seq2seq: append to each source the target of the most similar training source (a "
                              "translation memory the model learns to copy from and repair; the training pairs are "
                              "saved with the model; docs/generation.md)")
