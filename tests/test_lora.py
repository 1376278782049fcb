"""LoRA: an adapted model starts as the base model, trains only its adapters (and heads), merges back into a
plain model with the original keys, and saves and loads as any other model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmcraft.model.heads import Model
from lmcraft.model.io import load_model_dir, save_model_dir
from lmcraft.model.lora import (
    LoraConfig,
    LoraLinear,
    apply_lora,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
    merged_state_dict,
    trainable_report,
    training_memory_bytes,
)
from lmcraft.model.transformer import Transformer, TransformerConfig
from lmcraft.tokenizer import TextTokenizer, train_tokenizer
from lmcraft.train.optim import build_optimizer

VOCAB = 101


def decoder(*, tied: bool = True, vocab_size: int = VOCAB) -> Model:
    cfg = TransformerConfig(vocab_size=vocab_size, n_layer=2, d_model=64, n_head=4, d_ff=128, max_len=32, dropout=0.0,
                            causal=True)
    return Model(cfg, {"lm": {"kind": "lm", "tied": tied}}).eval()


def logits(model: Model, ids: torch.Tensor) -> torch.Tensor:
    return model.heads["lm"](model(ids), model.backbone.embed.token.weight)  # (B, T, V)


def train_steps(model: Model, steps: int = 4, seed: int = 0) -> None:
    """A few AdamW steps of next-token prediction on random ids, with the toolkit's own optimizer."""
    g = torch.Generator().manual_seed(seed)
    optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.01)
    model.train()
    for _ in range(steps):
        ids = torch.randint(1, VOCAB, (4, 16), generator=g)
        loss = F.cross_entropy(logits(model, ids)[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def ids_batch() -> torch.Tensor:
    return torch.randint(1, VOCAB, (3, 20), generator=torch.Generator().manual_seed(1))


def test_adapted_model_starts_exactly_as_the_base_model() -> None:
    model = decoder()
    base = copy.deepcopy(model)
    names = apply_lora(model, LoraConfig())
    assert names == [f"backbone.blocks.{i}.self_attn.{p}" for i in range(2) for p in ("qkv", "out")]
    assert all(isinstance(model.get_submodule(n), LoraLinear) for n in names)
    with torch.no_grad():
        assert torch.equal(logits(model, ids_batch()), logits(base, ids_batch()))  # B = 0


@pytest.mark.parametrize("tied", [True, False])
def test_training_changes_only_adapters_and_heads(tied: bool) -> None:
    model = decoder(tied=tied)
    apply_lora(model, LoraConfig(rank=4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    adapters = {k for k in before if k.endswith((".lora_a", ".lora_b"))}
    head = set() if tied else {"heads.lm.proj.weight"}
    assert changed == adapters | head  # every A and B moved (B from zero, then A through B); no base weight
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_trainable_share_of_a_mini_decoder() -> None:
    model = Model(TransformerConfig.from_size("mini", vocab_size=21128, causal=True), {"lm": {"kind": "lm"}})
    total = sum(p.numel() for p in model.parameters())
    apply_lora(model, LoraConfig(rank=8, targets=["qkv", "out"]))
    report = trainable_report(model)
    d, r, layers = 256, 8, 4
    adapters = layers * (r * (d + 3 * d) + r * (d + d))  # qkv: (3D × D), out: (D × D); r · (in + out) each
    assert report["trainable"] == adapters == 49_152
    assert report["total"] == total + adapters
    assert report["trainable_percent"] == pytest.approx(100 * 49_152 / (total + 49_152))
    assert report["trainable_percent"] < 0.6  # 0.56%: far under the 5% that would already be a large saving
    # Weights 4 B each; full fine-tuning adds a 4 B gradient and 8 B of AdamW moments per parameter.
    assert training_memory_bytes(model, full=True) == 16 * (total + adapters)
    assert report["train_memory_bytes"] == 4 * (total + adapters) + 12 * adapters
    assert report["memory_ratio"] < 0.26


def test_merged_model_computes_the_same_with_the_original_keys() -> None:
    model = decoder()
    keys = list(model.state_dict())
    apply_lora(model, LoraConfig(rank=4, targets=["qkv", "out", "ffn"]))
    train_steps(model)
    assert all(m.lora_b.abs().sum() > 0 for m in model.modules() if isinstance(m, LoraLinear))
    with torch.no_grad():
        adapted = logits(model, ids_batch())
        state = merged_state_dict(model)
        assert merged_state_dict(model, model.state_dict()).keys() == state.keys()  # FSDP passes the full state
        merge_lora(model)
        torch.testing.assert_close(logits(model, ids_batch()), adapted, atol=1e-5, rtol=0)
    assert list(model.state_dict()) == keys
    assert not any(isinstance(m, LoraLinear) for m in model.modules())
    torch.testing.assert_close(state, model.state_dict(), atol=0, rtol=0)


def test_merged_model_saves_and_loads_as_a_plain_model(tmp_path: Path) -> None:
    tokenizer = TextTokenizer(train_tokenizer(["低秩适配器只训练很少的参数", "合并以后就是普通模型"],
                                              vocab_size=VOCAB, min_frequency=1))
    model = decoder(vocab_size=max(VOCAB, tokenizer.vocab_size))  # a model covers every id its tokenizer makes
    apply_lora(model, LoraConfig(rank=4))
    train_steps(model)
    with torch.no_grad():
        adapted = logits(model, ids_batch())
    save_model_dir(tmp_path / "m", merge_lora(model), tokenizer)
    loaded, _, _ = load_model_dir(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(logits(loaded, ids_batch()), adapted, atol=1e-5, rtol=0)


def test_adapter_state_round_trip() -> None:
    model = decoder(tied=False)
    cfg = LoraConfig(rank=4)
    apply_lora(model, cfg)
    train_steps(model)
    state = lora_state_dict(model)
    assert sorted(state) == sorted([f"backbone.blocks.{i}.self_attn.{p}.{m}" for i in range(2)
                                    for p in ("qkv", "out") for m in ("lora_a", "lora_b")] + ["heads.lm.proj.weight"])
    fresh = decoder(tied=False)
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if k not in state}, strict=False)
    apply_lora(fresh, cfg)
    load_lora_state_dict(fresh, state)
    with torch.no_grad():
        assert torch.equal(logits(fresh, ids_batch()), logits(model, ids_batch()))
    with pytest.raises(ValueError, match="missing"):
        load_lora_state_dict(fresh, {k: v for k, v in state.items() if not k.endswith("lora_b")})


def test_pattern_matching_nothing_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"'q_proj'.*self_attn\.qkv"):
        apply_lora(decoder(), LoraConfig(targets=["qkv", "q_proj"]))
    with pytest.raises(ValueError, match="'self_norm'"):  # matches modules, but no linear layer
        apply_lora(decoder(), LoraConfig(targets=["self_norm"]))
    model = decoder()
    apply_lora(model, LoraConfig())
    with pytest.raises(ValueError, match="already adapted"):  # a second apply_lora finds no plain qkv left
        apply_lora(model, LoraConfig())


def test_globs_and_containers_select_layers() -> None:
    names = apply_lora(decoder(), LoraConfig(targets=["backbone.blocks.1.*", "blocks.0.ffn"]))
    assert names == ["backbone.blocks.0.ffn.up", "backbone.blocks.0.ffn.down", "backbone.blocks.1.self_attn.qkv",
                     "backbone.blocks.1.self_attn.out", "backbone.blocks.1.ffn.up", "backbone.blocks.1.ffn.down"]


def test_heads_trained_in_full_get_no_adapters() -> None:
    model = decoder()
    model.heads["decoder"] = Transformer(model.cfg)  # a head with qkv and out layers of its own (a decoder head)
    names = apply_lora(model, LoraConfig())
    assert names and all(n.startswith("backbone.") for n in names)
    assert all(p.requires_grad for p in model.heads.parameters())
    frozen = decoder()
    frozen.heads["decoder"] = Transformer(frozen.cfg)
    names = apply_lora(frozen, LoraConfig(train_heads=False))
    assert "heads.decoder.blocks.0.self_attn.qkv" in names
    assert not any(p.requires_grad for n, p in frozen.named_parameters() if "lora_" not in n)


def test_lora_linear_against_a_hand_computed_reference() -> None:
    base = torch.nn.Linear(6, 5)
    layer = LoraLinear(base, rank=2, alpha=3.0)
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(4, 7, 6)
    w, b, a, bb = base.weight, base.bias, layer.lora_a, layer.lora_b
    expected = x @ (w + 1.5 * bb @ a).T + b  # s = alpha / rank = 1.5
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(layer.merged()(x), expected, atol=1e-6, rtol=1e-5)
    assert not base.weight.requires_grad and layer.lora_a.requires_grad
    assert layer.weight is base.weight  # the frozen weight is shared, not copied
