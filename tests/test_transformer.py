"""The Transformer of section 4: the formula, the decoder's mask, padding, and every switch."""

from __future__ import annotations

import math

import pytest
import torch

from lmcraft.model.heads import Model
from lmcraft.model.transformer import Transformer, Unpadded
from tests.conftest import tiny_config


def test_attention_equals_the_formula() -> None:
    """softmax(Q Kᵀ / sqrt(d_k) + M) V per head, written out by hand, equals the module's output."""
    cfg = tiny_config(causal=True)
    model = Transformer(cfg).eval()
    attn = model.blocks[0].self_attn
    x = torch.randn(2, 7, cfg.d_model)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    heads = cfg.n_head
    dh = cfg.d_model // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(2, 7, heads, dh).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(dh)  # (B, H, T, T)
    m = torch.full((7, 7), float("-inf")).triu(1)  # M: -inf above the diagonal
    expected = (scores + m).softmax(-1) @ split(v)
    expected = attn.out(expected.transpose(1, 2).reshape(2, 7, -1))
    got = attn(x, None, is_causal=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_never_attends_to_later_positions(norm_first: bool) -> None:
    model = Transformer(tiny_config(causal=True, norm_first=norm_first)).eval()
    ids = torch.randint(5, 97, (3, 12))
    changed = ids.clone()
    changed[:, 6:] = torch.randint(5, 97, (3, 6))  # rewrite the future from position 6 on
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_encoder_attends_both_ways() -> None:
    model = Transformer(tiny_config()).eval()
    ids = torch.randint(5, 97, (1, 10))
    changed = ids.clone()
    changed[0, 9] = (ids[0, 9] + 1 - 5) % 92 + 5
    with torch.no_grad():
        assert not torch.allclose(model(ids)[0, 0], model(changed)[0, 0])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_padding_never_changes_real_positions(causal: bool, position: str) -> None:
    model = Transformer(tiny_config(causal=causal, position=position)).eval()
    short = torch.randint(5, 97, (1, 6))
    padded = torch.cat([short, torch.zeros(1, 4, dtype=torch.long)], dim=1)  # right padding
    mask = torch.tensor([[1] * 6 + [0] * 4])
    with torch.no_grad():
        alone = model(short)
        batched = model(padded, mask)
    torch.testing.assert_close(batched[:, :6], alone, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(batched).all()  # padding rows are finite too


def test_padding_in_a_mixed_batch() -> None:
    model = Transformer(tiny_config()).eval()
    a, b = torch.randint(5, 97, (1, 9)), torch.randint(5, 97, (1, 4))
    batch = torch.zeros(2, 9, dtype=torch.long)
    batch[0], batch[1, :4] = a[0], b[0]
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5])
    with torch.no_grad():
        out = model(batch, mask)
        torch.testing.assert_close(out[1, :4], model(b)[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[0], model(a)[0], atol=1e-5, rtol=1e-5)


def test_encoder_decoder_respects_source_padding_and_causality() -> None:
    """The encoder-decoder is the backbone (the encoder) with a ``decoder`` head: H = Encoder(X); O = Decoder(Y, H)."""
    model = Model(tiny_config(), {"decoder": {"kind": "decoder"}}).eval()
    decoder = model.heads["decoder"]
    assert decoder.decoder.cfg.causal and decoder.decoder.cfg.cross_attention
    assert not model.backbone.cfg.causal

    def run(source: torch.Tensor, target: torch.Tensor, source_mask: torch.Tensor | None = None) -> torch.Tensor:
        return decoder(target, None, model(source, source_mask), source_mask)

    src = torch.randint(5, 97, (1, 5))
    src_padded = torch.cat([src, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    tgt = torch.randint(5, 97, (1, 6))
    with torch.no_grad():
        plain = run(src, tgt)
        padded = run(src_padded, tgt, torch.tensor([[1] * 5 + [0] * 3]))
        torch.testing.assert_close(plain, padded, atol=1e-5, rtol=1e-5)
        future = tgt.clone()
        future[0, 4:] = 7
        torch.testing.assert_close(run(src, future)[:, :4], plain[:, :4])
        other_src = src.clone()
        other_src[0, 0] = (src[0, 0] + 1 - 5) % 92 + 5
        assert not torch.allclose(run(other_src, tgt), plain)  # the decoder reads the encoder


def test_too_long_input_is_a_clear_error() -> None:
    model = Transformer(tiny_config(max_len=8))
    with pytest.raises(ValueError, match="longer than the model's max_len=8"):
        model(torch.ones(1, 9, dtype=torch.long))


def test_config_checks_its_invariants() -> None:
    with pytest.raises(ValueError, match="n_head"):
        tiny_config(n_head=5)
    with pytest.raises(ValueError, match="position"):
        tiny_config(position="rotary-typo")


@pytest.mark.parametrize("options", [{}, {"causal": True}, {"position": "rotary"}, {"n_kv_head": 2},
                                     {"norm_first": True}])
def test_unpadded_execution_equals_the_padded_one(options: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Skipping the padding (linear layers on the real tokens only, attention in groups of similar length)
    gives the real tokens the outputs and the weights the gradients of computing the padding too."""
    torch.manual_seed(0)
    model = Transformer(tiny_config(**options))
    batch, length = 19, 30  # more sequences than one attention group holds
    lengths = torch.randint(1, length + 1, (batch,))
    padding_mask = (torch.arange(length)[None] < lengths[:, None]).long()  # (B, T)
    padding_mask[3] = 0
    padding_mask[3, 10:20] = 1  # padding on both sides of one sequence
    ids = torch.randint(5, 97, (batch, length)) * padding_mask
    real = padding_mask.bool()
    weights = torch.randn(int(real.sum()), 32)  # a loss whose gradient is not ~0 (sums of squares after a norm are)
    assert Unpadded.worth_it(padding_mask)

    def run(unpad: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        monkeypatch.setattr(Unpadded, "WORTH_IT", 0.85 if unpad else 0.0)
        model.zero_grad()
        out = model(ids, padding_mask)  # (B, T, D)
        (out[real] * weights).sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    unpadded, grads = run(True)
    padded, reference = run(False)
    torch.testing.assert_close(unpadded[real], padded[real], rtol=1e-5, atol=1e-5)
    assert (unpadded[~real] == 0).all()
    for got, want in zip(grads, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_linear_weights_lie_transposed_without_changing_the_model(tmp_path) -> None:
    """Every linear weight is stored (in, out); the model computes what the row-major one computes, keeps
    the layout through a safetensors round trip and a dtype change, and still quantizes to int8."""
    import copy

    from safetensors.torch import load_file, save_file

    from lmcraft.model.heads import Model
    from lmcraft.model.io import tensors_for_saving
    from lmcraft.model.quantize import int8_dynamic
    from lmcraft.model.transformer import store_linear_weights

    torch.manual_seed(0)
    model = Model(tiny_config(), {"classify": {"kind": "classify", "n_labels": 3, "pooling": "pooler"}}).eval()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.stride() == (1, m.out_features) for m in linears)
    plain = store_linear_weights(copy.deepcopy(model), transposed=False)
    assert all(m.weight.is_contiguous() for m in plain.modules() if isinstance(m, torch.nn.Linear))
    ids = torch.randint(5, tiny_config().vocab_size, (3, 9))

    def logits(m: torch.nn.Module) -> torch.Tensor:
        return m.heads["classify"](m(ids))

    torch.testing.assert_close(logits(model), logits(plain))
    save_file(tensors_for_saving(model.state_dict()), str(tmp_path / "w.safetensors"))
    torch.manual_seed(1)
    loaded = Model(tiny_config(), model.head_specs).eval()
    loaded.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    assert all(m.weight.stride() == (1, m.out_features) for m in loaded.modules() if isinstance(m, torch.nn.Linear))
    assert torch.equal(logits(loaded), logits(model))
    assert loaded.double().heads["classify"].proj.weight.stride() == (1, 3)
    torch.testing.assert_close(logits(int8_dynamic(copy.deepcopy(model))), logits(model), atol=0.02, rtol=0.1)


@pytest.mark.parametrize("options", [{}, {"causal": True}, {"position": "rotary", "n_kv_head": 2},
                                     {"norm_first": True, "activation": "swiglu"}])
@pytest.mark.parametrize("unpad", [True, False])
def test_first_only_equals_the_first_row_of_the_full_output(
    options: dict, unpad: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Computing the last block at the first position alone gives that position the output, and every
    weight the gradient, of the full computation, with or without padding skipped."""
    torch.manual_seed(0)
    model = Transformer(tiny_config(n_layer=3, **options))
    monkeypatch.setattr(Unpadded, "WORTH_IT", 0.85 if unpad else 0.0)
    batch, length = 11, 24
    lengths = torch.randint(1, length + 1, (batch,))
    padding_mask = (torch.arange(length)[None] < lengths[:, None]).long()  # (B, T), right-padded
    ids = torch.randint(5, 97, (batch, length)) * padding_mask
    weights = torch.randn(batch, 32)

    def run(first_only: bool, mask: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = model(ids, mask, first_only=first_only)
        assert out.shape == ((batch, 1, 32) if first_only else (batch, length, 32))
        real = torch.ones(batch, 1) if mask is None else mask[:, :1]  # a padding position's state means nothing
        (out[:, 0] * weights * real).sum().backward()
        return (out[:, 0] * real).detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    left_padded = padding_mask.clone()
    left_padded[2, :3] = 0  # a sequence whose first position is padding: the others keep their values
    for mask in (padding_mask, left_padded, None):
        got, grads = run(True, mask)
        want, reference = run(False, mask)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for g, r in zip(grads, reference, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def test_first_only_refuses_a_cache() -> None:
    from lmcraft.model.transformer import KVCache

    model = Transformer(tiny_config(causal=True))
    cache = KVCache(model.cfg, batch=1, max_len=8)
    with pytest.raises(ValueError, match="first_only"):
        model(torch.ones(1, 3, dtype=torch.long), cache=cache, first_only=True)


@pytest.mark.parametrize("pooling", ["cls", "pooler", "mean"])
def test_the_classifier_reads_only_what_its_pooling_needs(pooling: str) -> None:
    from lmcraft.model.heads import Model
    from lmcraft.tasks.classify.task import Classify

    model = Model(tiny_config(), {"c": {"kind": "classify", "n_labels": 3, "labels": ["a", "b", "c"],
                                        "pooling": pooling}}).eval()
    task = Classify(["a", "b", "c"], pad_id=0, pooling=pooling, head="c")
    assert model.heads["c"].reads_first_only == (pooling != "mean")
    ids = torch.randint(5, 97, (4, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    full = model.heads["c"](model(ids * mask, mask), mask)  # every position through every block
    torch.testing.assert_close(task.logits(model, {"input_ids": ids * mask, "padding_mask": mask}), full,
                               rtol=1e-5, atol=1e-6)
