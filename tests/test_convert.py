"""Hugging Face interop: checkpoints of every supported family (ELECTRA's discriminator included), built tiny
with random weights by transformers itself, give the same outputs in lmcraft (within 1e-4, fp32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from lmcraft.model.export import export_hf
from lmcraft.model.io import load_model_dir, save_model_dir

IDS = torch.tensor([[5, 17, 42, 8, 99, 3, 61, 7], [9, 23, 4, 77, 12, 0, 0, 0]])  # second row right-padded
MASK = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere (norm gains and biases too), so that a swapped or dropped tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if p.ndim == 1 and "norm" in str(p) else 0.0))


def tiny_hf(family: str, head: str) -> transformers.PreTrainedModel:
    common = {"vocab_size": 128}
    if family in ("bert", "roberta"):
        cls = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig}[family]
        labels = {} if head == "span" else {"id2label": {0: "neg", 1: "pos", 2: "neutral"},
                                            "label2id": {"neg": 0, "pos": 1, "neutral": 2}}
        config = cls(**common, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64, pad_token_id=1 if family == "roberta" else 0, **labels)
        model_cls = {"mlm": transformers.AutoModelForMaskedLM,
                     "classify": transformers.AutoModelForSequenceClassification,
                     "tag": transformers.AutoModelForTokenClassification,
                     "span": transformers.AutoModelForQuestionAnswering}[head]
    elif family == "electra":  # the discriminator, embeddings as wide as its layers
        config = transformers.ElectraConfig(**common, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
        model_cls = transformers.AutoModelForPreTraining
    elif family == "gpt2":
        config = transformers.GPT2Config(**common, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                          bos_token_id=127, eos_token_id=127)
        model_cls = transformers.AutoModelForCausalLM
    else:
        cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[family]
        config = cls(**common, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=64, max_position_embeddings=64, tie_word_embeddings=family == "qwen2",
                     rope_theta=500.0)
        model_cls = transformers.AutoModelForCausalLM
    torch.manual_seed(0)
    model = model_cls.from_config(config)
    randomize(model)
    return model.eval()


def save_with_vocab(model: transformers.PreTrainedModel, path: Path) -> None:
    """The checkpoint plus a 128-entry WordPiece vocabulary: lmcraft loads a model with its tokenizer."""
    model.save_pretrained(path)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(123))]
    (path / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")


def ours_logits(model, head: str, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    hidden = model(ids, mask)
    if head == "mlm":
        everywhere = torch.ones_like(ids, dtype=torch.bool)
        return model.heads["mlm"](hidden, everywhere, model.backbone.embed.token.weight).view(*ids.shape, -1)
    if head == "classify":
        return model.heads["classify"](hidden, mask)
    if head == "tag":
        return model.heads["tag"](hidden)
    if head == "span":
        return torch.stack(model.heads["span"](hidden), dim=-1)
    if head == "rtd":
        return model.heads["rtd"](hidden)
    return model.heads["lm"](hidden, model.backbone.embed.token.weight)


def theirs_logits(hf: transformers.PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = hf(input_ids=ids, attention_mask=mask)
    if hasattr(out, "start_logits"):
        return torch.stack([out.start_logits, out.end_logits], dim=-1)
    return out.logits


CASES = [("bert", "mlm"), ("bert", "classify"), ("bert", "tag"), ("bert", "span"), ("roberta", "mlm"),
         ("roberta", "classify"), ("roberta", "tag"), ("roberta", "span"), ("gpt2", "lm"), ("llama", "lm"),
         ("qwen2", "lm"), ("electra", "rtd")]


@pytest.mark.parametrize(("family", "head"), CASES, ids=["-".join(c) for c in CASES])
def test_converted_checkpoint_gives_the_same_outputs(family: str, head: str, tmp_path: Path) -> None:
    hf = tiny_hf(family, head)
    save_with_vocab(hf, tmp_path)
    ours, _, config = load_model_dir(tmp_path)
    assert head in ours.head_specs and config["source"]["model_type"] == family
    ids = IDS.clone()
    if family == "roberta":
        ids[1, 5:] = 1  # RoBERTa pads with id 1, and numbers positions from pad + 1
    with torch.no_grad():
        theirs = theirs_logits(hf, ids, MASK)
        got = ours_logits(ours, head, ids, MASK)
    if head == "classify":
        torch.testing.assert_close(got, theirs, atol=1e-4, rtol=0)
        assert ours.head_specs["classify"]["labels"] == ["neg", "pos", "neutral"]
    elif head == "tag":
        assert ours.head_specs["tag"]["labels"] == ["neg", "pos", "neutral"]
    else:
        real = MASK.bool()
        torch.testing.assert_close(got[real], theirs[real], atol=1e-4, rtol=0)


@pytest.mark.parametrize(("family", "head"), CASES, ids=["-".join(c) for c in CASES])
def test_export_loads_in_transformers_with_the_same_outputs(family: str, head: str, tmp_path: Path) -> None:
    hf = tiny_hf(family, head)
    save_with_vocab(hf, tmp_path / "in")
    summary = export_hf(tmp_path / "in", tmp_path / "out")
    assert summary["class"] == type(hf).__name__
    auto = {"mlm": transformers.AutoModelForMaskedLM, "classify": transformers.AutoModelForSequenceClassification,
            "tag": transformers.AutoModelForTokenClassification,
            "span": transformers.AutoModelForQuestionAnswering, "lm": transformers.AutoModelForCausalLM,
            "rtd": transformers.AutoModelForPreTraining}[head]
    back = auto.from_pretrained(tmp_path / "out").eval()
    ids = IDS.clone()
    if family == "roberta":
        ids[1, 5:] = 1
    with torch.no_grad():
        before, after = theirs_logits(hf, ids, MASK), theirs_logits(back, ids, MASK)
    real = MASK.bool() if head != "classify" else slice(None)
    torch.testing.assert_close(after[real], before[real], atol=1e-5, rtol=0)


def test_a_translation_model_with_a_memory_refuses_transformers_export(tmp_path: Path) -> None:
    save_with_vocab(tiny_hf("gpt2", "lm"), tmp_path / "in")
    model, tokenizer, _ = load_model_dir(tmp_path / "in")
    model.head_specs["lm"] = {**model.head_specs["lm"], "task": "seq2seq", "memory": [["Open", "打开"]]}
    save_model_dir(tmp_path / "memory", model, tokenizer)
    with pytest.raises(ValueError, match="reads a translation memory's target beside each source"):
        export_hf(tmp_path / "memory", tmp_path / "out")
