"""Generation: greedy decoding with the KV cache gives transformers' tokens, with and without the cache,
for batched prompts of different lengths (left padding); sampling options behave."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmcraft.model.generate import GenerationConfig, choose, generate_ids, left_pad
from lmcraft.model.io import load_model_dir
from tests.test_convert import save_with_vocab, tiny_hf

PROMPTS = [[5, 17, 42, 8, 99, 3], [9, 23, 4], [61, 7, 70, 33, 2]]


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
def test_greedy_generation_matches_transformers(family: str, tmp_path: Path) -> None:
    hf = tiny_hf(family, "lm")
    save_with_vocab(hf, tmp_path)
    ours, _, _ = load_model_dir(tmp_path)
    ids, mask = left_pad(PROMPTS, pad_id=0)
    new = 20
    theirs = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=0,
                         eos_token_id=None)[:, ids.shape[1] :]
    for use_cache in (True, False):
        cfg = GenerationConfig(max_new_tokens=new, use_cache=use_cache)
        got = torch.stack(list(generate_ids(ours, ids, mask, cfg, eos_id=None)), dim=1)
        assert torch.equal(got, theirs), f"use_cache={use_cache}:\n{got}\n{theirs}"


def test_sampling_filters_and_penalty() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    seen = torch.zeros(2000, 1, dtype=torch.long)
    top2 = choose(logits, seen, GenerationConfig(temperature=1.0, top_k=2), g)
    assert set(top2.tolist()) == {0, 1}
    # softmax of (4, 3, 2, 1, 0): 0.64, 0.24, 0.09, ... → top-p 0.8 keeps tokens 0 and 1
    nucleus = choose(logits, seen, GenerationConfig(temperature=1.0, top_p=0.8), g)
    assert set(nucleus.tolist()) == {0, 1}
    assert 0.65 < (nucleus == 0).float().mean() < 0.80  # 0.64 / (0.64 + 0.24) = 0.73
    penalised = choose(logits[:1], torch.tensor([[0]]), GenerationConfig(repetition_penalty=3.0), g)
    assert penalised.item() == 1  # 4 / 3 < 3


def test_bad_generation_options_are_named() -> None:
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0.0)


def test_generate_command_streams_the_continuation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmcraft.cli import main
    from lmcraft.model.generate import generate
    from lmcraft.tokenizer import TextTokenizer, train_tokenizer

    text = ["the quick brown fox jumps over the lazy dog", "a model writes one token at a time"] * 50
    tokenizer = TextTokenizer(train_tokenizer(text, kind="bpe", vocab_size=300, min_frequency=1))
    hf = tiny_hf("gpt2", "lm")
    hf.resize_token_embeddings(tokenizer.vocab_size)
    hf.save_pretrained(tmp_path)
    tokenizer.save(tmp_path)
    assert main(["generate", str(tmp_path), "the quick", "--max-new-tokens", "12"]) == 0
    printed = capsys.readouterr().out
    model, tok, _ = load_model_dir(tmp_path)
    whole = generate(model, tok, ["the quick"], GenerationConfig(max_new_tokens=12))[0]
    assert printed == "the quick" + whole + "\n" and whole


def _seq2seq(vocab: int = 6):
    """An encoder-decoder as the CLI ships it: the backbone encodes, a ``decoder`` head writes."""
    from lmcraft.model.heads import Model
    from tests.conftest import tiny_config

    torch.manual_seed(3)
    model = Model(tiny_config(vocab_size=vocab), {"decoder": {"kind": "decoder"}}).eval()
    with torch.no_grad():  # sharper distributions than the initial N(0, 0.02) give
        model.heads["decoder"].decoder.embed.token.weight.mul_(40)
    return model


def _beam_search(model, source: torch.Tensor, mask: torch.Tensor | None = None, *, bos_id: int,
                 eos_id: int | None, num_beams: int, max_new_tokens: int, constraint=None) -> list[list[int]]:
    """Beam search with the decoder head over the backbone's states, as ``tasks/seq2seq.py`` decodes."""
    from lmcraft.model.beam import beam_decode

    head = model.heads["decoder"]
    with torch.inference_mode():
        memory = model(source, mask)  # (B, S, D)
    start = torch.full((source.shape[0], 1), bos_id, dtype=torch.long)
    return beam_decode(head.decoder, head.logits, start, torch.ones_like(start), eos_id=eos_id, num_beams=num_beams,
                       max_new_tokens=max_new_tokens, memory=memory, memory_mask=mask, constraint=constraint)


def _sequence_log_prob(model, source: torch.Tensor, target: list[int], bos: int) -> float:
    head = model.heads["decoder"]
    with torch.no_grad():
        inputs = torch.tensor([[bos, *target[:-1]]])
        log_probs = torch.log_softmax(head.logits(head(inputs, None, model(source), None))[0], dim=-1)
    return float(sum(log_probs[i, t] for i, t in enumerate(target)))


def test_beam_search_with_enough_beams_finds_the_best_sequence() -> None:
    """With as many beams as there are 2-token prefixes, beam search over 3 tokens is exhaustive: it must
    return the sequence of highest probability, found here by scoring all 6³ of them."""
    import itertools

    model, vocab, bos = _seq2seq(), 6, 1
    source = torch.tensor([[2, 4, 5, 3]])
    best = max(itertools.product(range(vocab), repeat=3),
               key=lambda t: _sequence_log_prob(model, source, list(t), bos))
    found = _beam_search(model, source, bos_id=bos, eos_id=None, num_beams=vocab**2, max_new_tokens=3)
    assert found == [list(best)]
    greedy: list[int] = []
    for _ in range(3):  # one beam is greedy decoding
        scores = [_sequence_log_prob(model, source, [*greedy, t], bos) for t in range(vocab)]
        greedy.append(max(range(vocab), key=scores.__getitem__))
    assert _beam_search(model, source, bos_id=bos, eos_id=None, num_beams=1, max_new_tokens=3) == [greedy]


class _NoFourEndsWithFive:
    """A constraint: token 4 is never written, and a hypothesis may end only once it has written a 5."""

    def may_extend(self, row: int, tokens: list[int]) -> bool:
        return 4 not in tokens

    def may_end(self, row: int, tokens: list[int]) -> bool:
        return 5 in tokens


def test_constrained_beam_search_with_enough_beams_finds_the_best_allowed_sequence() -> None:
    """With more beams than there are hypotheses, the search is exhaustive over what the constraint lets go
    on, and returns the best-scoring one it lets end: ended by the end token (1) after 0-2 tokens, its score
    divided by its length with the end, or cut at 3 tokens, divided by 3. Left free, this model ends at once,
    which the constraint refuses (no 5 written)."""
    import itertools

    model, bos, eos = _seq2seq(), 1, 1
    source = torch.tensor([[2, 4, 5, 3]])
    words = (0, 2, 3, 5)  # neither the end token nor the banned 4
    scored = [(_sequence_log_prob(model, source, [*t, eos], bos) / (n + 1), list(t))
              for n in range(3) for t in itertools.product(words, repeat=n) if 5 in t]
    scored += [(_sequence_log_prob(model, source, list(t), bos) / 3, list(t))
               for t in itertools.product(words, repeat=3) if 5 in t]
    best = max(scored)[1]
    free = _beam_search(model, source, bos_id=bos, eos_id=eos, num_beams=216, max_new_tokens=3)
    assert free == [[]], "the test needs a model whose best output breaks the constraint"
    found = _beam_search(model, source, bos_id=bos, eos_id=eos, num_beams=216, max_new_tokens=3,
                         constraint=_NoFourEndsWithFive())
    assert found == [best]


def test_constrained_beam_search_keeps_the_rule_in_a_batch_and_falls_back_when_nothing_may_end() -> None:
    model = _seq2seq()
    sources = torch.tensor([[2, 4, 5, 3], [5, 5, 2, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])

    class NoOneEndsWithFive:  # this model, left alone, writes 1s to the limit
        def may_extend(self, row: int, tokens: list[int]) -> bool:
            return 1 not in tokens

        def may_end(self, row: int, tokens: list[int]) -> bool:
            return 5 in tokens

    free = _beam_search(model, sources, mask, bos_id=1, eos_id=3, num_beams=3, max_new_tokens=12)
    assert all(1 in seq for seq in free), "the test needs a model that writes 1s when left alone"
    out = _beam_search(model, sources, mask, bos_id=1, eos_id=3, num_beams=3, max_new_tokens=12,
                       constraint=NoOneEndsWithFive())
    assert all(1 not in seq and 5 in seq for seq in out)

    class OnlyThrees:  # 3 is far down the first step's ranking: one beam must look past its 4 best candidates
        def may_extend(self, row: int, tokens: list[int]) -> bool:
            return set(tokens) == {3}

        def may_end(self, row: int, tokens: list[int]) -> bool:
            return bool(tokens)

    assert _beam_search(model, sources[:1], bos_id=1, eos_id=0, num_beams=1, max_new_tokens=4,
                        constraint=OnlyThrees()) == [[3, 3, 3, 3]]

    class Never:  # nothing may end: the search still answers, with the best it has
        def may_extend(self, row: int, tokens: list[int]) -> bool:
            return True

        def may_end(self, row: int, tokens: list[int]) -> bool:
            return False

    assert _beam_search(model, sources, mask, bos_id=1, eos_id=3, num_beams=3, max_new_tokens=12,
                        constraint=Never()) == free


def test_beam_search_stops_at_the_end_token_and_batches() -> None:
    model = _seq2seq()
    sources = torch.tensor([[2, 4, 5, 3], [5, 5, 2, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    out = _beam_search(model, sources, mask, bos_id=1, eos_id=3, num_beams=3, max_new_tokens=12)
    assert len(out) == 2 and all(3 not in seq and len(seq) <= 12 for seq in out)
    alone = _beam_search(model, sources[1:, :3], None, bos_id=1, eos_id=3, num_beams=3, max_new_tokens=12)
    assert alone[0] == out[1], "padding the source does not change the result"


def test_the_output_table_copy_follows_the_embeddings(tmp_path: Path) -> None:
    """Generation reads a transposed copy of a tied embedding table, kept between calls; once the table
    changes (a training step, a load), the next generation sees the new values, not the old copy."""
    from lmcraft.model.generate import read_order

    hf = tiny_hf("gpt2", "lm")
    save_with_vocab(hf, tmp_path)
    ours, _, _ = load_model_dir(tmp_path)
    table = ours.backbone.embed.token.weight
    first = read_order(table)
    assert torch.equal(first, table) and first.stride() == (1, table.shape[0])
    assert read_order(table) is first  # kept, not copied again
    ids, mask = left_pad(PROMPTS[:1], pad_id=0)
    cfg = GenerationConfig(max_new_tokens=4)
    before = [int(t) for t in generate_ids(ours, ids, mask, cfg, eos_id=None)]
    other = next(t for t in range(5, table.shape[0]) if t not in PROMPTS[0] and t != before[0])
    with torch.no_grad():  # the prompt is unchanged; another token's logit becomes 10x the winner's
        table[other] = 10 * table[before[0]]
    assert torch.equal(read_order(table), table)
    after = [int(t) for t in generate_ids(ours, ids, mask, cfg, eos_id=None)]
    assert after[0] == other
