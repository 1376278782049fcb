"""Tokenizers: CJK characters split, full-width forms folded, special tokens and pair templates."""

from __future__ import annotations

import threading
from pathlib import Path

from lmcraft.tokenizer import SPECIAL_TOKENS, TextTokenizer, train_tokenizer


def test_wordpiece_splits_cjk_characters(zh_tokenizer: TextTokenizer) -> None:
    tokens = zh_tokenizer.tokenizer.encode("中国人民１９９８年Hello").tokens
    assert tokens[:5] == ["[CLS]", "中", "国", "人", "民"]
    assert "1998" in "".join(t.lstrip("#") for t in tokens), "full-width digits are folded by NFKC"
    assert tokens[-1] == "[SEP]"


def test_special_token_ids_and_pairs(zh_tokenizer: TextTokenizer) -> None:
    assert [zh_tokenizer.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ids, segments = zh_tokenizer.encode(["今天好"], ["明天"], max_len=32)
    assert ids[0][0] == zh_tokenizer.cls_id and ids[0].count(zh_tokenizer.sep_id) == 2
    assert segments[0] == [0, 0, 0, 0, 0, 1, 1, 1]


def test_truncation(zh_tokenizer: TextTokenizer) -> None:
    (ids,) = zh_tokenizer.encode(["一" * 100], max_len=16)
    assert len(ids) == 16 and ids[-1] == zh_tokenizer.sep_id


def test_lengths_are_untruncated_and_unmoved_by_encoding_in_another_thread(zh_tokenizer: TextTokenizer) -> None:
    texts = ["一" * 100, "今天好", "中国人民１９９８年Hello"]
    expected = [len(ids) for ids in zh_tokenizer.encode(texts, max_len=None)]
    assert expected[0] == 102
    stop = threading.Event()

    def truncate_in_a_loop() -> None:  # a server's worker encodes batches with truncation set and cleared
        while not stop.is_set():
            zh_tokenizer.encode(texts, max_len=8)

    worker = threading.Thread(target=truncate_in_a_loop)
    worker.start()
    try:
        seen = [zh_tokenizer.lengths(texts) for _ in range(300)]
    finally:
        stop.set()
        worker.join()
    assert all(lengths == expected for lengths in seen)


def test_byte_level_bpe_round_trip(tmp_path: Path) -> None:
    texts = ["The quick brown fox jumps over the lazy dog.", "机器学习的过程：预训练、微调。"] * 50
    tok = TextTokenizer(train_tokenizer(texts, kind="bpe", vocab_size=400))
    path = tok.save(tmp_path)
    loaded = TextTokenizer.load(path.parent)
    for text in ["unseen wörds ✓", "机器学习"]:
        ids = loaded.tokenizer.encode(text, add_special_tokens=False).ids
        assert loaded.unk_id not in ids, "byte-level BPE has no unknown characters"
        assert loaded.tokenizer.decode(ids) == text
    assert loaded.vocab_size <= 400
