"""Train and load tokenizers with the Hugging Face ``tokenizers`` library.

Two kinds:
- ``wordpiece``: BERT-style. NFKC folds full-width letters and digits (common in Chinese text) to their
  ASCII forms, every CJK character becomes a token of its own, other words split into WordPiece pieces.
- ``bpe``: GPT-2-style byte-level BPE; it never meets an unknown character.

Both use the same special tokens, so every objective and task finds them by the same names. A tokenizer
that comes with a Hugging Face checkpoint names its special tokens otherwise (``<s>``, ``<|endoftext|>``);
``TextTokenizer.roles`` maps the roles (pad, unk, cls, sep, mask) to whatever that tokenizer calls them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from lmcraft.text import CJK_HEAVY, CJK_PUNCTUATION_RANGES, HAN_RANGES, char_class, cjk_share

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]  # ids 0..4 in this order
KINDS = ("wordpiece", "bpe")
ROLES_FILE = "special_tokens.json"  # written next to tokenizer.json when the roles are not the defaults


# Word-piece decoding puts a space between every two words; Chinese text has none between characters.
_CJK = char_class(HAN_RANGES + CJK_PUNCTUATION_RANGES)  # Chinese characters and punctuation
_SPACE_NEAR_CJK = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")


def without_cjk_spaces(text: str) -> str:
    """``text`` without the spaces next to Chinese characters and punctuation."""
    return _SPACE_NEAR_CJK.sub("", text).strip()


def recommended_kind(texts: Iterable[str]) -> str:
    """The tokenizer kind for text like ``texts``: WordPiece (a token per CJK character) for Chinese-heavy
    text, byte-level BPE otherwise."""
    return "wordpiece" if cjk_share(texts) >= CJK_HEAVY else "bpe"


def default_roles() -> dict[str, str | None]:
    return {"pad": PAD, "unk": UNK, "cls": CLS, "sep": SEP, "mask": MASK}


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
        # Every ASCII letter, digit and symbol gets a token even when the corpus never shows it (Chinese news
        # has no '@' or '#'), so that entity markers and user input never turn into [UNK].
        options["initial_alphabet"] = [chr(c) for c in range(33, 127)]
    tok.train_from_iterator(texts, trainer=trainer_cls(**options))
    _attach_pair_template(tok)
    return tok


@dataclass
class TextTokenizer:
    """A trained tokenizer plus the ids of its special tokens.

    ``roles`` names the token that plays each role: pad, unk, cls (start of a sequence), sep (end of a
    segment or sequence) and mask. A role may be None when the tokenizer has no such token (GPT-2 has no
    [MASK]); asking for its id is then an error that says so. Without a pad token the end-of-sequence
    token pads (the padding is masked out anyway).
    """

    tokenizer: Tokenizer
    roles: dict[str, str | None] = field(default_factory=default_roles)

    def __post_init__(self) -> None:
        ids = {}
        for role, token in self.roles.items():
            ids[role] = self.tokenizer.token_to_id(token) if token is not None else None
            if token is not None and ids[role] is None:
                raise ValueError(f"tokenizer has no {token!r} token (its {role} token)")
        self._ids = ids
        self.pad_id = next((i for i in (ids.get("pad"), ids.get("sep"), 0) if i is not None), 0)
        self.special_ids = sorted({i for i in ids.values() if i is not None})

    def _role(self, role: str) -> int:
        found = self._ids.get(role)
        if found is None:
            raise ValueError(f"this tokenizer has no {role} token (its special tokens: {self.roles})")
        return found

    @property
    def unk_id(self) -> int:
        return self._role("unk")

    @property
    def cls_id(self) -> int:
        return self._role("cls")

    @property
    def sep_id(self) -> int:
        return self._role("sep")

    @property
    def mask_id(self) -> int:
        return self._role("mask")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"{file}: no tokenizer.json here (train one with `lmcraft tokenizer train`)")
        roles_file = file.parent / ROLES_FILE
        roles = json.loads(roles_file.read_text(encoding="utf-8")) if roles_file.exists() else default_roles()
        return cls(Tokenizer.from_file(str(file)), roles)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = directory / "tokenizer.json"
        tmp = out.with_suffix(".json.tmp")
        self.tokenizer.save(str(tmp))
        tmp.replace(out)
        if self.roles != default_roles():
            (directory / ROLES_FILE).write_text(json.dumps(self.roles, indent=2) + "\n", encoding="utf-8")
        return out

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def decode_text(self, ids: Sequence[int]) -> str:
        """Generated tokens as text to show: byte-level BPE gives the text back exactly; word-piece decoding
        has put spaces between all words, which are removed next to Chinese characters (spacing around
        English punctuation stays as the word pieces left it)."""
        text = self.decode(ids)
        return without_cjk_spaces(text) if isinstance(self.tokenizer.decoder, decoders.WordPiece) else text

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """The length in tokens of each text, special tokens included, never truncated.

        Safe beside ``encode`` running in another thread (a server counts tokens on its event loop while
        its worker encodes a batch): ``encode`` sets and clears the truncation of the tokenizer it uses, so
        the counting is done by a copy of its own, made again when tokens have been added since."""
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        counter = getattr(self, "_counter", None)
        if counter is None or counter[0] != size:
            clone = Tokenizer.from_str(self.tokenizer.to_str())
            clone.no_truncation()
            clone.no_padding()
            counter = self._counter = (size, clone)
        return [len(counter[1].encode(text).ids) for text in texts]  # no thread pool: a few texts at a time

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
