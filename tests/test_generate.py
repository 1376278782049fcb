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
