"""lmcraft.text: which characters are CJK, normalisation, sentence splitting — golden cases."""

from __future__ import annotations

import re

from lmcraft.text import CJK, HAN, has_han, is_cjk, is_han, normalize, sentence_spans, split_sentences


def test_han_is_the_ideographs_of_every_block() -> None:
    for ch in "中", "㐀", "䶿", "鿿", "豈", "𠀀", "𪜀", "丽", "𰀀":  # unified, ext. A, compatibility, ext. B-G
        assert is_han(ch) and is_cjk(ch), ch
    for ch in "a", "1", "。", "，", "！", "Ａ", "〇", "䷀", "あ", "한", "", "中文":  # punctuation, hexagram, kana...
        assert not is_han(ch), ch
    assert is_cjk("あ") and is_cjk("カ") and is_cjk("한") and not is_cjk("a") and not is_cjk("")
    assert has_han("price: 5元") and not has_han("price: ５ＵＳＤ。")
    assert re.findall(f"[{HAN}]+", "ab中文cd𠀀x") == ["中文", "𠀀"]
    assert re.findall(f"[{CJK}]+", "日本語のテキスト and 한국어") == ["日本語のテキスト", "한국어"]


def test_normalize_folds_full_width_collapses_space_and_drops_controls() -> None:
    assert normalize("１２月３１日，ＡＢＣ！\u3000ｘｙｚ") == "12月31日,ABC! xyz"
    assert normalize("他说：“好。”") == "他说:“好。”"  # 。 and curly quotes are not compatibility forms
    assert normalize("Hello,\u200b  world\t!\r\n\n  Next ") == "Hello, world !\nNext"
    assert normalize("ﬁne café") == "fine café"
    assert normalize("plain ascii") == "plain ascii"


def test_split_sentences_chinese() -> None:
    assert split_sentences("他说：“好。”然后走了！真的吗？是的；好") == [
        "他说：“好。”", "然后走了！", "真的吗？", "是的；", "好"]
    assert split_sentences("今天下雨。他说：“去哪？”去北京！") == ["今天下雨。", "他说：“去哪？”", "去北京！"]
    assert split_sentences("利率为5.5%!今年如此?是的……真的") == ["利率为5.5%!", "今年如此?", "是的……真的"]


def test_split_sentences_english() -> None:
    assert split_sentences("Mr. Li came. He sat down. J. R. R. Tolkien wrote it.") == [
        "Mr. Li came.", "He sat down.", "J. R. R. Tolkien wrote it."]
    assert split_sentences('He said "go." Then 3 left. It is 1.5 m, e.g. here.') == [
        'He said "go."', "Then 3 left.", "It is 1.5 m, e.g. here."]
    assert split_sentences("Not absence of fear.  Except a flea!  It bites.") == [  # raw text: two spaces
        "Not absence of fear.", "Except a flea!", "It bites."]
    # a semicolon, or a full stop before a lower-case word, does not end an English sentence
    assert split_sentences("It rains. We stay; you go! see example.com now") == [
        "It rains.", "We stay; you go! see example.com now"]


def test_split_sentences_mixed_lines_and_spans() -> None:
    text = "  第一句。 Second one.\nthird line  \n\n中文 and English! 完。"
    assert split_sentences(text) == ["第一句。", "Second one.", "third line", "中文 and English!", "完。"]
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == split_sentences(text)
    assert spans[0] == (2, 6)
    assert split_sentences("") == [] and split_sentences(" \n ") == [] and sentence_spans("一句") == [(0, 2)]
