"""Whole-word masking: a selected word is masked whole (Chinese words from jieba, WordPiece ## pieces with
their word), the share of masked tokens stays near the target, and packing keeps the flags aligned."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmcraft.config import ModelOptions, PretrainConfig, TrainConfig
from lmcraft.objectives.mlm import IGNORE, MaskedLM, pack_words
from lmcraft.objectives.words import word_starts
from lmcraft.pretrain import run_pretrain
from lmcraft.tokenizer import TextTokenizer, train_tokenizer


def _words_of(ids: list[int], starts: list[bool]) -> list[list[int]]:
    """Positions of every word: a start and the continuation tokens after it."""
    words: list[list[int]] = []
    for i, start in enumerate(starts):
        if start or not words:
            words.append([i])
        else:
            words[-1].append(i)
    return words


def test_chinese_words_come_from_jieba_and_user_dictionaries(zh_tokenizer: TextTokenizer, tmp_path: Path) -> None:
    line = "江泽民在北京会见了美国总统克林顿。"
    ids, starts = word_starts(zh_tokenizer, [line])
    pieces = [zh_tokenizer.decode([i]) for i in ids[0]]
    words = ["".join(pieces[i] for i in w) for w in _words_of(ids[0], starts[0])]
    assert words == ["江泽民", "在", "北京", "会见", "了", "美国", "总统", "克林顿", "。"]
    user = tmp_path / "user.txt"
    user.write_text("美国总统 100 n\n", encoding="utf-8")
    ids, starts = word_starts(zh_tokenizer, [line], user_dict=user)
    words = ["".join(zh_tokenizer.decode([ids[0][i]]) for i in w) for w in _words_of(ids[0], starts[0])]
    assert "美国总统" in words
    with pytest.raises(FileNotFoundError, match="no such user dictionary"):
        word_starts(zh_tokenizer, [line], user_dict=tmp_path / "missing.txt")


def test_wordpiece_continuations_belong_to_their_word() -> None:
    words = ["settle", "settled", "settling", "unsettle", "cat", "cats", "catalog", "sat", "mat"]
    tokenizer = TextTokenizer(train_tokenizer([" ".join(words)] * 5, kind="wordpiece", vocab_size=150))
    ids, starts = word_starts(tokenizer, ["unsettling catalogs"])
    tokens = [tokenizer.tokenizer.id_to_token(i) for i in ids[0]]
    assert len(tokens) > 2 and "[UNK]" not in tokens and sum(starts[0]) == 2  # many pieces, two words
    assert all(start == (not token.startswith("##")) for token, start in zip(tokens, starts[0], strict=True))


def test_selected_words_are_masked_whole_at_the_target_rate(zh_tokenizer: TextTokenizer,
                                                            peoples_daily: Path) -> None:
    lines = peoples_daily.read_text(encoding="utf-8").splitlines()[:400]
    ids, starts = word_starts(zh_tokenizer, lines)
    blocks = pack_words(ids, starts, block=64, cls_id=zh_tokenizer.cls_id, sep_id=zh_tokenizer.sep_id)
    assert all(len(b.ids) == len(b.starts) == 64 for b in blocks)
    objective = MaskedLM(zh_tokenizer.special_ids, zh_tokenizer.mask_id, zh_tokenizer.pad_id, zh_tokenizer.vocab_size)
    batch = objective.collate(blocks, torch.Generator().manual_seed(0))
    selected = batch["labels"] != IGNORE  # (B, T)
    multi_token_words = 0
    for row, block in enumerate(blocks):
        for word in _words_of(block.ids, block.starts)[1:]:  # a word cut by the block's start is not whole
            chosen = selected[row, word].tolist()
            assert all(chosen) or not any(chosen), (block.ids, word, chosen)
            multi_token_words += len(word) > 1 and all(chosen)
    assert multi_token_words > 50  # words of several characters were masked, all characters together
    maskable = ~torch.isin(torch.tensor([b.ids for b in blocks]), torch.tensor(zh_tokenizer.special_ids))
    assert float(selected.sum() / maskable.sum()) == pytest.approx(0.15, abs=0.02)


def test_pretraining_with_whole_word_masking_runs(peoples_daily: Path, zh_tokenizer_dir: Path,
                                                  tmp_path: Path) -> None:
    lines = peoples_daily.read_text(encoding="utf-8").splitlines()[:300]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = PretrainConfig(corpus=[str(corpus)], tokenizer=str(zh_tokenizer_dir), out=str(tmp_path / "pt"),
                         whole_word=True, model=ModelOptions(size="tiny", max_len=64),
                         train=TrainConfig(lr=1e-3, max_steps=4, eval_every=2, batch_size=8, progress=False,
                                           tensorboard=False))
    summary = run_pretrain(cfg)
    assert summary["steps"] == 4 and summary["dev"]["loss"] > 0
