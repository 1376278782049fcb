"""Train and load tokenizers with the Hugging Face ``tokenizers`` library.

Two kinds:
- ``wordpiece``: BERT-style. NFKC folds full-width letters and digits (common in Chinese text) to their
  ASCII forms, every CJK character becomes a token of its own, other words split into WordPiece pieces.
- ``bpe``: GPT-2-style byte-level BPE; it never meets an unknown character.

Both use the same special tokens, so every objective and task finds them by the same names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]  # ids 0..4 in this order
KINDS = ("wordpiece", "bpe")


def _attach_pair_template(tok: Tokenizer) -> None:
    cls_id, sep_id = tok.token_to_id(CLS), tok.token_to_id(SEP)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, cls_id), (SEP, sep_id)],
    )


def build_untrained(kind: str, *, lowercase: bool = True) -> tuple[Tokenizer, type]:
    """An empty tokenizer of the given kind and the trainer class that fills it."""
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100))
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                            strip_accents=None, lowercase=lowercase)]
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        return tok, trainers.WordPieceTrainer
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return tok, trainers.BpeTrainer
    raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")


def train_tokenizer(
    texts: Iterable[str], *, kind: str = "wordpiece", vocab_size: int = 8000, min_frequency: int = 2,
    lowercase: bool = True,
) -> Tokenizer:
    """Learn a vocabulary of at most ``vocab_size`` entries (special tokens included) from ``texts``."""
    tok, trainer_cls = build_untrained(kind, lowercase=lowercase)
    options: dict[str, object] = {
        "vocab_size": vocab_size, "min_frequency": min_frequency, "special_tokens": SPECIAL_TOKENS,
        "show_progress": True,
    }
    if kind == "bpe":
        options["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
    else:
        options["continuing_subword_prefix"] = "##"
    tok.train_from_iterator(texts, trainer=trainer_cls(**options))
    _attach_pair_template(tok)
    return tok


@dataclass
class TextTokenizer:
    """A trained tokenizer plus the ids of its special tokens."""

    tokenizer: Tokenizer

    def __post_init__(self) -> None:
        missing = [t for t in SPECIAL_TOKENS if self.tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"tokenizer lacks the special tokens {missing}")
        self.pad_id = self.tokenizer.token_to_id(PAD)
        self.unk_id = self.tokenizer.token_to_id(UNK)
        self.cls_id = self.tokenizer.token_to_id(CLS)
        self.sep_id = self.tokenizer.token_to_id(SEP)
        self.mask_id = self.tokenizer.token_to_id(MASK)
        self.special_ids = sorted({self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id})

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"{file}: no tokenizer.json here (train one with `lmcraft tokenizer train`)")
        return cls(Tokenizer.from_file(str(file)))

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = directory / "tokenizer.json"
        tmp = out.with_suffix(".json.tmp")
        self.tokenizer.save(str(tmp))
        tmp.replace(out)
        return out

    def encode(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, *, max_len: int | None,
        special_tokens: bool = True,
    ) -> list[list[int]] | tuple[list[list[int]], list[list[int]]]:
        """Token ids of each text (with [CLS] ... [SEP]), truncated to ``max_len`` (None: never), in parallel.

        With ``pairs`` it returns (ids, segment_ids) for "[CLS] a [SEP] b [SEP]", the longer text
        truncated first."""
        if max_len is None:
            self.tokenizer.no_truncation()
        else:
            self.tokenizer.enable_truncation(max_len, strategy="longest_first")
        self.tokenizer.no_padding()
        try:
            if pairs is None:
                encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=special_tokens)
                return [e.ids for e in encodings]
            encodings = self.tokenizer.encode_batch(list(zip(texts, pairs, strict=True)),
                                                    add_special_tokens=special_tokens)
            return [e.ids for e in encodings], [e.type_ids for e in encodings]
        finally:
            self.tokenizer.no_truncation()
