"""Word boundaries for whole-word masking (Cui et al. 2019 for Chinese; BERT's whole-word release).

Masking one character of 北京 lets the model read the answer off its neighbour; masking every token of
a word together makes it use the context. A token *starts a word* when:
- its text begins where a jieba word begins (Chinese words; jieba also cuts Latin text at spaces and
  punctuation), and
- it is not a WordPiece continuation piece (``##ing``), which always belongs to the word before it.

A user dictionary (one word a line, optionally with a frequency and a tag, jieba's format) adds domain
words, so that 人工智能 or a product name is masked whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from lmcraft.tokenizer import TextTokenizer


def _jieba(user_dict: str | Path | None = None):  # type: ignore[no-untyped-def]
    try:
        import jieba
    except ImportError:
        raise RuntimeError("whole-word masking of Chinese needs jieba: pip install jieba") from None
    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    if user_dict:
        path = Path(user_dict)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such user dictionary (one word a line, jieba's format)")
        tokenizer.load_userdict(str(path))
    return tokenizer


def word_starts(tokenizer: TextTokenizer, lines: Sequence[str], *,
                user_dict: str | Path | None = None) -> tuple[list[list[int]], list[list[bool]]]:
    """Token ids of every line (no special tokens) and, per token, whether it starts a word."""
    segmenter = _jieba(user_dict)
    encodings = tokenizer.tokenizer.encode_batch(list(lines), add_special_tokens=False)
    ids, starts = [], []
    for line, enc in zip(lines, encodings, strict=True):
        boundaries = {start for _, start, _ in segmenter.tokenize(line)}
        flags = []
        previous = -1
        for k, (token, (begin, _)) in enumerate(zip(enc.tokens, enc.offsets, strict=True)):
            # Byte-level BPE may split one character into several tokens with the same offsets.
            continuation = token.startswith("##") or (k > 0 and (begin not in boundaries or begin == previous))
            flags.append(not continuation)
            previous = begin
        ids.append(enc.ids)
        starts.append(flags)
    return ids, starts
