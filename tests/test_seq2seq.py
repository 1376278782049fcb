"""Sequence-to-sequence fine-tuning: the loss falls on target tokens only (and on the assistant's turns in a
chat), beam search with one beam is greedy decoding, and the encoder-decoder saves, loads and decodes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from lmcraft.data.chat import Conversation, Turn
from lmcraft.data.readers import Fields
from lmcraft.data.seq2seq import Pair
from lmcraft.inference.predictor import Predictor
from lmcraft.model.beam import beam_decode
from lmcraft.model.generate import GenerationConfig, generate_ids, left_pad
from lmcraft.model.heads import Model
from lmcraft.model.io import load_model_dir, save_model_dir
from lmcraft.model.transformer import TransformerConfig
from lmcraft.model.vocab import add_special_tokens
from lmcraft.objectives.mlm import IGNORE
from lmcraft.tasks.registry import task_from_spec
from lmcraft.tasks.seq2seq.chat import ROLE_TOKENS, Chat
from lmcraft.tasks.seq2seq.keep_placeholders import KeepPlaceholders, tokens_that_may_start, writes_placeholders
from lmcraft.tasks.seq2seq.layouts import DecoderLayout
from lmcraft.tasks.seq2seq.memory import TranslationMemory
from lmcraft.tasks.seq2seq.options import GenerationOptions
from lmcraft.tasks.seq2seq.task import Seq2Seq
from lmcraft.tokenizer import TextTokenizer, train_tokenizer, without_cjk_spaces

PAIRS = [Pair("Open the file", "打开文件"), Pair("Save %s as", "将 %s 另存为"), Pair("Quit", "退出"),
         Pair("Could not open the file %s", "无法打开文件 %s")]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    texts = [p.source for p in PAIRS] + [p.target for p in PAIRS] + ["hello there", "你好，今天天气很好。"]
    return TextTokenizer(train_tokenizer(texts * 3, vocab_size=300, min_frequency=1, lowercase=False))


def _decoder(vocab: int, **overrides: object) -> Model:
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=vocab, n_layer=2, d_model=32, n_head=2, d_ff=64, max_len=96, causal=True,
                            dropout=0.0, **overrides)  # type: ignore[arg-type]
    return Model(cfg, {"lm": {"kind": "lm"}})


def test_the_loss_falls_on_the_target_tokens_only(tokenizer: TextTokenizer) -> None:
    task = Seq2Seq(tokenizer.pad_id, tokenizer.sep_id, tokenizer.cls_id, label_smoothing=0.0)
    items = task.encode(tokenizer, PAIRS, max_len=64)
    batch = task.collate(items)
    for row, (item, pair) in enumerate(zip(items, PAIRS, strict=True)):
        target = tokenizer.encode([pair.target], max_len=None, special_tokens=False)[0] + [tokenizer.sep_id]
        labels = batch["labels"][row].tolist()
        predicted = [t for t in labels if t != IGNORE]
        assert predicted == target, "exactly the target tokens and the closing [SEP] are predicted"
        n_prompt = len(item.ids) - len(target)
        assert all(t == IGNORE for t in labels[: n_prompt - 1]), "no position predicts a source token"
    model = _decoder(tokenizer.vocab_size)
    hidden = model(batch["input_ids"], batch["padding_mask"])
    logits = model.heads["lm"](hidden, model.backbone.embed.token.weight)  # (B, T, V)
    reference = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE, reduction="sum")
    assert torch.allclose(task.loss_sum(model, batch), reference, atol=1e-4)
    assert task.n_targets(batch) == sum(len(tokenizer.encode([p.target], max_len=None, special_tokens=False)[0]) + 1
                                        for p in PAIRS)


def test_label_smoothing_is_the_smoothed_cross_entropy(tokenizer: TextTokenizer) -> None:
    task = Seq2Seq(tokenizer.pad_id, tokenizer.sep_id, tokenizer.cls_id, label_smoothing=0.1)
    batch = task.collate(task.encode(tokenizer, PAIRS, max_len=64))
    model = _decoder(tokenizer.vocab_size)
    logits, targets = task._logits(model, batch)
    log_p = torch.log_softmax(logits.float(), -1)
    expected = -(0.9 * log_p.gather(1, targets[:, None]).squeeze(1) + 0.1 * log_p.mean(-1)).sum()
    assert torch.allclose(task.loss_sum(model, batch), expected, atol=1e-3)


def test_chat_loss_is_on_the_assistant_turns_only(tokenizer: TextTokenizer) -> None:
    tok = TextTokenizer(Tokenizer.from_str(tokenizer.tokenizer.to_str()))  # a copy: the role tokens are added
    model = _decoder(tok.vocab_size)
    add_special_tokens(model, tok, list(ROLE_TOKENS.values()))
    roles = {r: tok.tokenizer.token_to_id(t) for r, t in ROLE_TOKENS.items()}
    task = Chat(tok.pad_id, tok.sep_id, tok.cls_id, role_ids=roles)
    talk = Conversation([Turn("system", "hello there"), Turn("user", "Open the file"), Turn("assistant", "打开文件"),
                         Turn("user", "Quit"), Turn("assistant", "退出")])
    item = task.encode(tok, [talk], max_len=64)[0]
    predicted = [t for t, flag in zip(item.ids, item.targets or [], strict=True) if flag]
    answers = [tok.encode([a], max_len=None, special_tokens=False)[0] + [tok.sep_id] for a in ("打开文件", "退出")]
    assert predicted == answers[0] + answers[1]
    assert tok.decode(item.ids, skip_special_tokens=False).split()[0] == "<|system|>"
    # A conversation too long for max_len loses its oldest exchange and keeps the system message.
    short = task.encode(tok, [talk], max_len=len(item.ids) - 3)[0]
    assert short.ids[0] == roles["system"] and roles["user"] in short.ids
    assert sum(short.targets or []) == len(answers[1])


def test_beam_search_with_one_beam_is_greedy_decoding() -> None:
    model = _decoder(50).eval()
    prompts = [[5, 17, 42, 8, 9, 3], [9, 23, 4], [6, 7, 30, 33, 2]]
    ids, mask = left_pad(prompts, 0)
    greedy = torch.stack(list(generate_ids(model, ids, mask, GenerationConfig(max_new_tokens=10), eos_id=None)), 1)
    lm, embedding = model.heads["lm"], model.backbone.embed.token.weight
    beamed = beam_decode(model.backbone, lambda h: lm(h, embedding), ids, mask, eos_id=None, num_beams=1,
                         max_new_tokens=10)
    assert beamed == greedy.tolist()
    wider = beam_decode(model.backbone, lambda h: lm(h, embedding), ids, mask, eos_id=None, num_beams=4,
                        max_new_tokens=10)
    assert [len(w) for w in wider] == [10, 10, 10]


def _sequence_log_prob(model: Model, prompt: list[int], new: list[int]) -> float:
    ids = torch.tensor([prompt + new])
    with torch.no_grad():
        log_p = torch.log_softmax(model.heads["lm"](model(ids), model.backbone.embed.token.weight)[0], -1)
    return float(sum(log_p[len(prompt) - 1 + i, t] for i, t in enumerate(new)))


def test_beam_search_scores_beat_greedy_on_a_decoder() -> None:
    """Beam search never returns a sequence less likely than greedy's (with no length penalty and no end)."""
    model = _decoder(30).eval()
    prompt = [4, 9, 13]
    ids, mask = left_pad([prompt], 0)
    lm, embedding = model.heads["lm"], model.backbone.embed.token.weight
    greedy = beam_decode(model.backbone, lambda h: lm(h, embedding), ids, mask, eos_id=None, num_beams=1,
                         max_new_tokens=4)[0]
    beamed = beam_decode(model.backbone, lambda h: lm(h, embedding), ids, mask, eos_id=None, num_beams=6,
                         max_new_tokens=4, length_penalty=0.0)[0]
    assert _sequence_log_prob(model, prompt, beamed) >= _sequence_log_prob(model, prompt, greedy) - 1e-5


def test_encoder_decoder_trains_saves_loads_and_decodes(tokenizer: TextTokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=tokenizer.vocab_size, n_layer=2, d_model=32, n_head=2, d_ff=64, max_len=64,
                            dropout=0.0)
    task = Seq2Seq(tokenizer.pad_id, tokenizer.sep_id, tokenizer.cls_id, layout="encoder-decoder",
                   decoder_layers=1, num_beams=2, max_target_tokens=12)
    model = Model(cfg, {})
    model.add_head(task.head, task.head_spec())
    batch = task.collate(task.encode(tokenizer, PAIRS, max_len=64))
    assert batch["decoder_ids"][0, 0] == tokenizer.cls_id, "the decoder starts from [CLS]"
    inside = (batch["labels"][:, :-1] != IGNORE) & (batch["labels"][:, :-1] != tokenizer.sep_id)
    assert torch.equal(batch["decoder_ids"][:, 1:][inside], batch["labels"][:, :-1][inside]), "teacher forcing"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss = task.loss_sum(model, batch) / task.n_targets(batch)
        first = first if first is not None else float(loss.detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < first / 3, "the encoder-decoder learns the four pairs"
    save_model_dir(tmp_path / "m", model, tokenizer)
    loaded, tok, _ = load_model_dir(tmp_path / "m")
    assert len(loaded.heads["decoder"].decoder.blocks) == 1
    model.eval()
    before = task.generate(model, tokenizer, [p.source for p in PAIRS], max_len=64)
    saved = task_from_spec(loaded.head_specs["decoder"], tok.pad_id, "decoder")
    after = saved.generate(loaded, tok, [p.source for p in PAIRS], max_len=64)
    assert before == after
    # word pieces split "%s" into "%" and "s", and decoding puts a space between them
    assert after == ["打开文件", "将% s另存为", "退出", "无法打开文件% s"], "the four training pairs are learnt"


def test_keep_placeholders_lets_a_hypothesis_write_and_end_with_exactly_its_sources_placeholders() -> None:
    texts = [p.source for p in PAIRS] + [p.target for p in PAIRS]  # byte-level BPE: "%s" decodes as written
    tokenizer = TextTokenizer(train_tokenizer(texts * 3, kind="bpe", vocab_size=300, min_frequency=1))
    assert writes_placeholders(tokenizer)
    marked = tokens_that_may_start(tokenizer)

    def ids(text: str) -> list[int]:
        return tokenizer.encode([text], max_len=None, special_tokens=False)[0]

    assert all(ids(text)[0] in marked for text in ("%s", "{0}", "${HOME}", "%(name)s")), "placeholders start marked"
    assert not any(t in marked for t in ids("将 另存为 Quit")), "words are not"

    keep = KeepPlaceholders(["Save %s as", "Quit"], tokenizer.decode_text, marked)
    assert keep.may_extend(0, ids("将 %s")) and keep.may_end(0, ids("将 %s 另存为"))
    assert keep.may_extend(0, ids("将")) and not keep.may_end(0, ids("将 另存为")), "not before its %s is written"
    assert not keep.may_extend(0, ids("将 %s %s")), "one %s too many"
    assert not keep.may_extend(0, ids("将 %d")), "a %d where the source has a %s"
    assert keep.may_end(1, ids("退出")) and not keep.may_extend(1, ids("退出 %s")), "the source has none"


def test_seq2seq_generation_keeps_placeholders_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    decode = DecoderLayout.decode

    def spy(self, model, head, rows, search, constraint=None):  # type: ignore[no-untyped-def]
        seen.append(constraint)
        return decode(self, model, head, rows, search, constraint)

    monkeypatch.setattr(DecoderLayout, "decode", spy)
    texts = [p.source for p in PAIRS] + [p.target for p in PAIRS]
    tokenizer = TextTokenizer(train_tokenizer(texts * 3, kind="bpe", vocab_size=300, min_frequency=1))
    model = _decoder(tokenizer.vocab_size)
    sources = [p.source for p in PAIRS]
    for keep in (True, False):
        task = Seq2Seq(tokenizer.pad_id, tokenizer.sep_id, tokenizer.cls_id, num_beams=2, max_target_tokens=8,
                       keep_placeholders=keep)
        task.attach(model, {})
        task.generate(model, tokenizer, sources, max_len=64, batch_size=2)
    with_rule, without = seen[:2], seen[2:]
    assert all(isinstance(c, KeepPlaceholders) for c in with_rule) and without == [None, None]
    batches = [c.sources for c in with_rule]  # type: ignore[attr-defined]
    assert sorted(s for batch in batches for s in batch) == sorted(sources) and all(len(b) == 2 for b in batches)
    word_pieces = TextTokenizer(train_tokenizer(texts * 3, vocab_size=300, min_frequency=1, lowercase=False))
    assert not writes_placeholders(word_pieces), "word pieces decode %s as % s"
    seen.clear()
    task = Seq2Seq(word_pieces.pad_id, word_pieces.sep_id, word_pieces.cls_id, num_beams=2, max_target_tokens=8)
    model = _decoder(word_pieces.vocab_size)
    task.attach(model, {})
    task.generate(model, word_pieces, sources, max_len=64, batch_size=4)
    assert seen == [None], "no constraint that no hypothesis could meet"


def test_the_placeholder_rule_is_saved_with_the_model_and_a_predictor_may_override_it(tmp_path: Path) -> None:
    texts = [p.source for p in PAIRS] + [p.target for p in PAIRS]
    tokenizer = TextTokenizer(train_tokenizer(texts * 3, kind="bpe", vocab_size=300, min_frequency=1))
    task = Seq2Seq(tokenizer.pad_id, tokenizer.sep_id, tokenizer.cls_id, num_beams=1, keep_placeholders=False)
    model = _decoder(tokenizer.vocab_size)
    task.attach(model, {})
    save_model_dir(tmp_path / "m", model, tokenizer)
    assert Predictor(tmp_path / "m").task.keep_placeholders is False  # type: ignore[union-attr]
    overridden = Predictor(tmp_path / "m", settings={"keep_placeholders": True}).task
    assert overridden.keep_placeholders is True  # type: ignore[union-attr]


def test_word_piece_spaces_go_in_chinese_only() -> None:
    assert without_cjk_spaces("打 开 文 件 %s 。") == "打开文件%s。"
    assert without_cjk_spaces("open the file %s") == "open the file %s"


def test_no_repeat_ngram_forbids_a_repeated_ngram() -> None:
    model = _decoder(12).eval()  # a tiny vocabulary: 30 tokens must repeat bigrams unless forbidden
    ids, mask = left_pad([[4, 9, 3], [5, 3]], 0)
    lm, embedding = model.heads["lm"], model.backbone.embed.token.weight
    free = beam_decode(model.backbone, lambda h: lm(h, embedding), ids, mask, eos_id=None, num_beams=3,
                       max_new_tokens=30)
    assert any(len(set(itertools.pairwise(row))) < len(row) - 1 for row in free), "loops without the ban"
    banned = beam_decode(model.backbone, lambda h: lm(h, embedding), ids, mask, eos_id=None, num_beams=3,
                         max_new_tokens=30, no_repeat_ngram=3)
    for row in banned:
        trigrams = list(zip(row, row[1:], row[2:], strict=False))
        assert len(trigrams) == len(set(trigrams))


def test_both_layouts_learn_the_same_targets(tokenizer: TextTokenizer) -> None:
    """For the same pairs, the decoder's labels at its target positions are the encoder-decoder's labels (the
    target, cut to max_target_tokens, and [SEP])."""
    for max_len, max_target in ((64, 64), (12, 3)):
        labels = []
        for layout in ("decoder", "encoder-decoder"):
            task = Seq2Seq(tokenizer.pad_id, tokenizer.sep_id, tokenizer.cls_id, layout=layout,
                           max_target_tokens=max_target)
            batch = task.collate(task.encode(tokenizer, PAIRS, max_len))
            labels.append([row[row != IGNORE].tolist() for row in batch["labels"]])
        assert labels[0] == labels[1]
        assert all(row[-1] == tokenizer.sep_id and len(row) <= max_target + 1 for row in labels[0])


SAVED_SPECS = {  # head specs as config.json held them before the layouts were classes
    "lm": {"kind": "lm", "tied": True, "task": "seq2seq", "eos_id": 3, "bos_id": 2, "label_smoothing": 0.1,
           "max_target_tokens": 12, "num_beams": 2, "length_penalty": 1.0, "no_repeat_ngram": 2},
    "decoder": {"kind": "decoder", "task": "seq2seq", "eos_id": 3, "bos_id": 2, "label_smoothing": 0.1,
                "max_target_tokens": 12, "num_beams": 2, "length_penalty": 1.0, "no_repeat_ngram": 2, "n_layer": 1},
    "lm-memory": {"kind": "lm", "tied": True, "task": "seq2seq", "eos_id": 3, "bos_id": 2, "label_smoothing": 0.1,
                  "max_target_tokens": 12, "num_beams": 2, "length_penalty": 1.0, "no_repeat_ngram": 0,
                  "memory": [["Open the file", "打开文件"], ["Quit", "退出"]]},
    "lm-free": {"kind": "lm", "tied": True, "task": "seq2seq", "eos_id": 3, "bos_id": 2, "label_smoothing": 0.1,
                "max_target_tokens": 12, "num_beams": 2, "length_penalty": 1.0, "no_repeat_ngram": 0,
                "keep_placeholders": False},
    "chat": {"kind": "lm", "tied": True, "task": "chat", "eos_id": 3, "bos_id": 2, "label_smoothing": 0.1,
             "max_target_tokens": 12, "num_beams": 2, "length_penalty": 1.0, "no_repeat_ngram": 0,
             "role_ids": {"system": 160, "user": 161, "assistant": 162}},
}


@pytest.mark.parametrize("name", sorted(SAVED_SPECS))
def test_a_saved_head_spec_rebuilds_its_task_and_the_same_spec(name: str) -> None:
    saved = SAVED_SPECS[name]
    head = "lm" if saved["kind"] == "lm" else "decoder"
    task = task_from_spec(saved, 0, head)
    assert task.name == saved["task"] and task.head == head and task.strategy.head_kind == saved["kind"]
    added = {} if name == "chat" or "keep_placeholders" in saved else {"keep_placeholders": True}  # on by default
    assert task.keep_placeholders == saved.get("keep_placeholders", True)  # type: ignore[attr-defined]
    assert task.head_spec().to_json() == {**saved, **added}


def test_a_translation_memory_is_read_with_the_source_and_saved_with_the_model(tokenizer: TextTokenizer,
                                                                               tmp_path: Path) -> None:
    memory = TranslationMemory([(p.source, p.target) for p in PAIRS])
    task = Seq2Seq(tokenizer.pad_id, tokenizer.sep_id, tokenizer.cls_id, num_beams=1, max_target_tokens=12,
                   memory=memory)
    inputs = memory.inputs([p.source for p in PAIRS], [p.target for p in PAIRS])
    assert inputs[3] == "Could not open the file %s ⇒ 打开文件", "a training pair reads its neighbour's target"
    assert all(text.split(" ⇒ ")[1] != p.target for p, text in zip(PAIRS, inputs, strict=True)), "never its own"
    for item, text in zip(task.encode(tokenizer, PAIRS, max_len=64), inputs, strict=True):
        source = tokenizer.encode([text], max_len=None, special_tokens=False)[0]
        assert item.ids[: len(source) + 1] == [*source, tokenizer.sep_id], "source and memory, then [SEP]"
    model = _decoder(tokenizer.vocab_size)
    task.attach(model, {})
    save_model_dir(tmp_path / "m", model, tokenizer)
    loaded, tok, _ = load_model_dir(tmp_path / "m")
    saved = task_from_spec(loaded.head_specs["lm"], tok.pad_id, "lm")
    assert saved.memory is not None and saved.memory.pairs == memory.pairs
    prompt = saved.prompt_ids(tok, ["Open a file"], 64)
    assert prompt == task.prompt_ids(tokenizer, ["Open a file"], 64)
    assert prompt[0] == [*tokenizer.encode(["Open a file ⇒ 打开文件"], max_len=None, special_tokens=False)[0],
                         tokenizer.sep_id], "a new source reads the nearest training target"
    plain = Seq2Seq(tokenizer.pad_id, tokenizer.sep_id, tokenizer.cls_id)
    plain.attach(loaded, {})
    assert "memory" not in loaded.head_specs["lm"], "fine-tuning again without a memory drops the old one"
    with pytest.raises(ValueError, match="a chat model reads conversations"):
        Chat.for_data({}, {}, tokenizer, GenerationOptions(memory=True), metric="", fields=Fields())
