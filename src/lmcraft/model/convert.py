"""Hugging Face checkpoints in and out. This is the only file that knows transformers' config fields and
weight names; everything else uses lmcraft's own.

Families, detected from ``config.json``'s ``model_type``:

- ``bert``, ``roberta``, ``electra``: post-LN encoders with learned positions (RoBERTa counts positions
  from pad + 1 and has one segment; ELECTRA is BERT's layout under ``electra.``, with the discriminator's
  replaced-token head, when its embeddings are as wide as its layers);
- ``gpt2``: a pre-LN decoder with learned positions; its ``Conv1D`` weights are stored transposed;
- ``llama``, ``qwen2``: pre-RMSNorm decoders with rotary positions, SwiGLU, grouped-query attention;
  Qwen2 has biases on the query/key/value projections only.

A conversion is a list of rules ``(ours, theirs, how)``: ``copy`` a tensor, ``t`` transpose it, or ``cat``
several of theirs along dim 0 into one of ours (the fused QKV projection). Import applies the rules,
export applies them backwards, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from lmcraft.model.checks import (
    ModelDirError,
    check_architecture,
    check_weight_shapes,
    load_error,
    read_json_object,
    weight_shapes,
)
from lmcraft.model.heads import Model
from lmcraft.model.transformer import TransformerConfig
from lmcraft.tokenizer import TextTokenizer

FAMILIES = ("bert", "roberta", "electra", "gpt2", "llama", "qwen2")
ENCODERS = ("bert", "roberta", "electra")  # the post-LN encoder families, BERT's names inside
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
BACKBONE_PREFIXES = {"bert": ("bert.", ""), "roberta": ("roberta.", ""), "electra": ("electra.", ""),
                     "gpt2": ("transformer.", ""),
                     "llama": ("model.", ""), "qwen2": ("model.", "")}
FIRST_KEY = {"bert": "embeddings.word_embeddings.weight", "roberta": "embeddings.word_embeddings.weight",
             "electra": "embeddings.word_embeddings.weight",
             "gpt2": "wte.weight", "llama": "embed_tokens.weight", "qwen2": "embed_tokens.weight"}


@dataclass
class Rule:
    ours: str  # lmcraft parameter name
    theirs: tuple[str, ...]  # transformers parameter name(s)
    how: str = "copy"  # copy | t (transpose) | cat (concatenate along dim 0)


# ---------------------------------------------------------------------------------------------------------
# Reading a Hugging Face directory


def is_hf_dir(path: str | Path) -> bool:
    """A directory with a transformers ``config.json`` (one with a ``model_type``)."""
    file = Path(path) / "config.json"
    if not file.exists():
        return False
    config = read_json_object(file)
    return "model_type" in config and "format" not in config


# lmcraft's sizes and their names in each family's config.json (None: optional there)
ENCODER_SIZES = {"vocab_size": "vocab_size", "n_layer": "num_hidden_layers", "d_model": "hidden_size",
                 "n_head": "num_attention_heads", "d_ff": "intermediate_size", "max_len": "max_position_embeddings"}
HF_SIZES = {"bert": ENCODER_SIZES, "roberta": ENCODER_SIZES, "electra": ENCODER_SIZES,
            "gpt2": {"vocab_size": "vocab_size", "n_layer": "n_layer", "d_model": "n_embd", "n_head": "n_head",
                     "max_len": "n_positions", "d_ff": "n_inner"},
            "llama": {**ENCODER_SIZES, "n_kv_head": "num_key_value_heads", "head_dim": "head_dim"}}
HF_SIZES["qwen2"] = HF_SIZES["llama"]
OPTIONAL_SIZES = ("n_inner", "num_key_value_heads", "head_dim")


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """A transformers ``config.json`` whose sizes are checked (present, in range, under the parameter
    limit) before anything is built from it."""
    file = Path(path) / "config.json"
    config = read_json_object(file)
    family = config.get("model_type")
    if family not in FAMILIES:
        raise ModelDirError(file, f"model_type {family!r} is not supported; lmcraft converts {', '.join(FAMILIES)}")
    names = HF_SIZES[family]
    arch: dict[str, Any] = {}
    for ours, theirs in names.items():
        if config.get(theirs) is None:
            if theirs in OPTIONAL_SIZES:
                continue
            raise ModelDirError(file, f"missing field {theirs!r}")
        arch[ours] = config[theirs]
    arch["activation"] = "swiglu" if family in ("llama", "qwen2") else "gelu"
    if family == "gpt2" and "d_ff" not in arch and isinstance(arch.get("d_model"), int):
        arch["d_ff"] = 4 * arch["d_model"]
    check_architecture(file, arch, names)
    return config


def read_hf_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` or of the shards its index lists. Pickled ``.bin`` weights are
    refused: loading them can run arbitrary code."""
    path = Path(path)
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.exists():
        return _load_safetensors(single)
    if index.exists():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ModelDirError(index, "no 'weight_map' from tensor names to shard files")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(_load_safetensors(path / Path(shard).name))
        return state
    if any(path.glob("*.bin")):
        raise ValueError(f"{path}: only pickled .bin weights; lmcraft reads safetensors only (convert them with "
                         "transformers' save_pretrained(safe_serialization=True))")
    raise FileNotFoundError(f"{path}: no model.safetensors")


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    weight_shapes(file)  # a truncated or corrupted file: one line naming it
    try:
        return load_file(str(file))
    except Exception as e:  # SafetensorError
        raise ModelDirError(file, f"unreadable ({e})") from None


def _activation(name: str, field: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"config.json: {field}={name!r} is not supported; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _rope_theta(hf: dict[str, Any]) -> float:
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ValueError(f"config.json: rope type {kind!r} is not supported (only the default rotary positions)")
    return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def to_transformer_config(hf: dict[str, Any]) -> TransformerConfig:
    """lmcraft's architecture for a transformers config."""
    family = hf["model_type"]
    pad = hf.get("pad_token_id")
    if pad is None and family not in ENCODERS:
        pad = hf.get("eos_token_id")  # decoders often have no pad token; the end token pads
    if not isinstance(pad, int) or not 0 <= pad < hf["vocab_size"]:
        pad = 0
    if family in ENCODERS:
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"config.json: position_embedding_type={hf['position_embedding_type']!r} is not supported")
        if hf.get("embedding_size", hf["hidden_size"]) != hf["hidden_size"]:
            raise ValueError(f"config.json: embedding_size={hf['embedding_size']} differs from hidden_size="
                             f"{hf['hidden_size']}; lmcraft's encoders have embeddings as wide as their layers")
        return TransformerConfig(
            vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"], d_model=hf["hidden_size"],
            n_head=hf["num_attention_heads"], d_ff=hf["intermediate_size"], max_len=hf["max_position_embeddings"],
            n_segment=hf.get("type_vocab_size", 2), dropout=hf.get("hidden_dropout_prob", 0.1),
            activation=_activation(hf.get("hidden_act", "gelu"), "hidden_act"),
            norm_eps=hf.get("layer_norm_eps", 1e-12),
            pad_id=pad, position_offset=pad + 1 if family == "roberta" else 0,
        )
    if family == "gpt2":
        d = hf["n_embd"]
        return TransformerConfig(
            vocab_size=hf["vocab_size"], n_layer=hf["n_layer"], d_model=d, n_head=hf["n_head"],
            d_ff=hf.get("n_inner") or 4 * d, max_len=hf["n_positions"], n_segment=0,
            dropout=hf.get("resid_pdrop", 0.1), norm_first=True,
            activation=_activation(hf.get("activation_function", "gelu_new"), "activation_function"),
            norm_eps=hf.get("layer_norm_epsilon", 1e-5), causal=True,
            pad_id=pad,
        )
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json: hidden_act={hf['hidden_act']!r} is not supported for {family} (only silu)")
    llama = family == "llama"
    return TransformerConfig(
        vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"], d_model=hf["hidden_size"],
        n_head=hf["num_attention_heads"], d_ff=hf["intermediate_size"], max_len=hf["max_position_embeddings"],
        n_segment=0, dropout=hf.get("attention_dropout", 0.0), norm_first=True, position="rotary",
        activation="swiglu", norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6), causal=True,
        pad_id=pad, n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_dim=hf.get("head_dim") or 0,
        rope_theta=_rope_theta(hf), qkv_bias=hf.get("attention_bias", False) if llama else True,
        out_bias=hf.get("attention_bias", False) if llama else False,
        ffn_bias=hf.get("mlp_bias", False) if llama else False,
    )


# ---------------------------------------------------------------------------------------------------------
# The rules


def _layer_rules(family: str, i: int, cfg: TransformerConfig) -> Iterator[Rule]:
    o = f"backbone.blocks.{i}."
    biases = {"qkv": cfg.qkv_bias, "out": cfg.out_bias, "ffn": cfg.ffn_bias}
    if family in ENCODERS:
        t = f"encoder.layer.{i}."
        parts = {"self_attn.qkv": [t + f"attention.self.{n}" for n in ("query", "key", "value")],
                 "self_attn.out": [t + "attention.output.dense"], "self_norm": [t + "attention.output.LayerNorm"],
                 "ffn.up": [t + "intermediate.dense"], "ffn.down": [t + "output.dense"],
                 "ffn_norm": [t + "output.LayerNorm"]}
        for ours, theirs in parts.items():
            how = "cat" if len(theirs) > 1 else "copy"
            for p in ("weight", "bias"):
                yield Rule(o + ours + "." + p, tuple(n + "." + p for n in theirs), how)
        return
    if family == "gpt2":
        t = f"h.{i}."
        for ours, theirs in {"self_attn.qkv": "attn.c_attn", "self_attn.out": "attn.c_proj", "ffn.up": "mlp.c_fc",
                             "ffn.down": "mlp.c_proj"}.items():
            yield Rule(o + ours + ".weight", (t + theirs + ".weight",), "t")  # Conv1D stores (in, out)
            yield Rule(o + ours + ".bias", (t + theirs + ".bias",))
        for ours, theirs in {"self_norm": "ln_1", "ffn_norm": "ln_2"}.items():
            for p in ("weight", "bias"):
                yield Rule(o + ours + "." + p, (t + theirs + "." + p,))
        return
    t = f"layers.{i}."
    yield Rule(o + "self_attn.qkv.weight", tuple(t + f"self_attn.{n}_proj.weight" for n in "qkv"), "cat")
    if biases["qkv"]:
        yield Rule(o + "self_attn.qkv.bias", tuple(t + f"self_attn.{n}_proj.bias" for n in "qkv"), "cat")
    yield Rule(o + "self_attn.out.weight", (t + "self_attn.o_proj.weight",))
    if biases["out"]:
        yield Rule(o + "self_attn.out.bias", (t + "self_attn.o_proj.bias",))
    for ours, theirs in {"ffn.gate": "mlp.gate_proj", "ffn.up": "mlp.up_proj", "ffn.down": "mlp.down_proj"}.items():
        yield Rule(o + ours + ".weight", (t + theirs + ".weight",))
        if biases["ffn"]:
            yield Rule(o + ours + ".bias", (t + theirs + ".bias",))
    yield Rule(o + "self_norm.weight", (t + "input_layernorm.weight",))
    yield Rule(o + "ffn_norm.weight", (t + "post_attention_layernorm.weight",))


def backbone_rules(family: str, cfg: TransformerConfig) -> list[Rule]:
    """Rules for the backbone, with transformers names relative to the base model (no ``bert.`` prefix)."""
    e = "backbone.embed."
    if family in ENCODERS:
        rules = [Rule(e + "token.weight", ("embeddings.word_embeddings.weight",)),
                 Rule(e + "position.weight", ("embeddings.position_embeddings.weight",)),
                 Rule(e + "norm.weight", ("embeddings.LayerNorm.weight",)),
                 Rule(e + "norm.bias", ("embeddings.LayerNorm.bias",))]
        if cfg.n_segment:
            rules.append(Rule(e + "segment.weight", ("embeddings.token_type_embeddings.weight",)))
    elif family == "gpt2":
        rules = [Rule(e + "token.weight", ("wte.weight",)), Rule(e + "position.weight", ("wpe.weight",)),
                 Rule("backbone.final_norm.weight", ("ln_f.weight",)), Rule("backbone.final_norm.bias", ("ln_f.bias",))]
    else:
        rules = [Rule(e + "token.weight", ("embed_tokens.weight",)),
                 Rule("backbone.final_norm.weight", ("norm.weight",))]
    for i in range(cfg.n_layer):
        rules.extend(_layer_rules(family, i, cfg))
    return rules


def head_rules(family: str, kind: str, base: str) -> list[Rule]:
    """Rules for a head; transformers names are absolute (``base`` is the backbone's prefix)."""
    if kind == "mlm" and family == "bert":
        t = "cls.predictions."
        return [Rule("heads.mlm.dense.weight", (t + "transform.dense.weight",)),
                Rule("heads.mlm.dense.bias", (t + "transform.dense.bias",)),
                Rule("heads.mlm.norm.weight", (t + "transform.LayerNorm.weight",)),
                Rule("heads.mlm.norm.bias", (t + "transform.LayerNorm.bias",)), Rule("heads.mlm.bias", (t + "bias",))]
    if kind == "mlm" and family == "roberta":
        return [Rule("heads.mlm.dense.weight", ("lm_head.dense.weight",)),
                Rule("heads.mlm.dense.bias", ("lm_head.dense.bias",)),
                Rule("heads.mlm.norm.weight", ("lm_head.layer_norm.weight",)),
                Rule("heads.mlm.norm.bias", ("lm_head.layer_norm.bias",)), Rule("heads.mlm.bias", ("lm_head.bias",))]
    if kind == "classify" and family == "bert":
        return [Rule("heads.classify.pooler.weight", (base + "pooler.dense.weight",)),
                Rule("heads.classify.pooler.bias", (base + "pooler.dense.bias",)),
                Rule("heads.classify.proj.weight", ("classifier.weight",)),
                Rule("heads.classify.proj.bias", ("classifier.bias",))]
    if kind == "classify" and family == "roberta":
        return [Rule("heads.classify.pooler.weight", ("classifier.dense.weight",)),
                Rule("heads.classify.pooler.bias", ("classifier.dense.bias",)),
                Rule("heads.classify.proj.weight", ("classifier.out_proj.weight",)),
                Rule("heads.classify.proj.bias", ("classifier.out_proj.bias",))]
    if kind == "classify_pooled":  # mean or cls pooling: the linear layer alone (modeling_lmcraft.py)
        return [Rule("heads.classify.proj.weight", ("classifier.weight",)),
                Rule("heads.classify.proj.bias", ("classifier.bias",))]
    if kind == "rtd" and family == "electra":
        t = "discriminator_predictions."
        return [Rule("heads.rtd.dense.weight", (t + "dense.weight",)),
                Rule("heads.rtd.dense.bias", (t + "dense.bias",)),
                Rule("heads.rtd.dense_prediction.weight", (t + "dense_prediction.weight",)),
                Rule("heads.rtd.dense_prediction.bias", (t + "dense_prediction.bias",))]
    if kind == "tag":
        return [Rule("heads.tag.proj.weight", ("classifier.weight",)),
                Rule("heads.tag.proj.bias", ("classifier.bias",))]
    if kind == "span":
        return [Rule("heads.span.proj.weight", ("qa_outputs.weight",)),
                Rule("heads.span.proj.bias", ("qa_outputs.bias",))]
    if kind == "lm_untied":
        return [Rule("heads.lm.proj.weight", ("lm_head.weight",))]
    raise ValueError(f"no {kind} head conversion for {family}")


# ---------------------------------------------------------------------------------------------------------
# Applying the rules


def apply_rules(rules: list[Rule], theirs: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Our state from theirs (``prefix`` is put before the relative names of theirs)."""
    ours = {}
    for rule in rules:
        names = [prefix + n for n in rule.theirs]
        missing = [n for n in names if n not in theirs]
        if missing:
            raise ValueError(f"the checkpoint lacks {missing[0]} (needed for {rule.ours})")
        tensors = [theirs[n] for n in names]
        if rule.how == "cat":
            ours[rule.ours] = torch.cat(tensors, dim=0)
        elif rule.how == "t":
            ours[rule.ours] = tensors[0].t().contiguous()
        else:
            ours[rule.ours] = tensors[0]
    return ours


def reverse_rules(rules: list[Rule], ours: dict[str, torch.Tensor], cfg: TransformerConfig,
                  prefix: str = "") -> dict[str, torch.Tensor]:
    """Their state from ours: the same rules, backwards."""
    theirs = {}
    q, kv = cfg.n_head * cfg.dh, cfg.kv_heads * cfg.dh
    for rule in rules:
        tensor = ours[rule.ours].detach().cpu()
        if rule.how == "cat":
            for name, part in zip(rule.theirs, tensor.split([q, kv, kv], dim=0), strict=True):
                theirs[prefix + name] = part.contiguous()
        elif rule.how == "t":
            theirs[prefix + rule.theirs[0]] = tensor.t().contiguous()
        else:
            theirs[prefix + rule.theirs[0]] = tensor.contiguous()
    return theirs


def backbone_prefix(family: str, state: dict[str, torch.Tensor]) -> str:
    for prefix in BACKBONE_PREFIXES[family]:
        if prefix + FIRST_KEY[family] in state:
            return prefix
    raise ValueError(f"the checkpoint has no {FIRST_KEY[family]} (with or without a prefix); is it a {family} model?")


# ---------------------------------------------------------------------------------------------------------
# Whole directories


def _token(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def hf_tokenizer(path: str | Path, hf: dict[str, Any]) -> TextTokenizer:
    """The tokenizer of a transformers directory: ``tokenizer.json``, or BERT's ``vocab.txt``; the roles of
    its special tokens come from ``special_tokens_map.json`` / ``tokenizer_config.json``."""
    path = Path(path)
    settings: dict[str, Any] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (path / name).exists():
            settings.update(read_json_object(path / name))
    if (path / "tokenizer.json").exists():
        try:
            tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ModelDirError(path / "tokenizer.json", f"not a tokenizer lmcraft can read ({detail})") from None
    elif (path / "vocab.txt").exists():
        tok = BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=settings.get("do_lower_case", True))._tokenizer
    else:
        raise FileNotFoundError(f"{path}: no tokenizer.json or vocab.txt")
    named = {k: _token(settings.get(k)) for k in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token",
                                                  "bos_token", "eos_token")}
    if hf["model_type"] in ("bert", "electra"):
        defaults = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                    "mask_token": "[MASK]"}
        named = {k: v or defaults.get(k) for k, v in named.items()}
    for key in ("bos_token", "eos_token", "pad_token"):
        if named[key] is None and isinstance(hf.get(key + "_id"), int):
            named[key] = tok.id_to_token(hf[key + "_id"])
    roles = {"pad": named["pad_token"], "unk": named["unk_token"], "cls": named["cls_token"] or named["bos_token"],
             "sep": named["sep_token"] or named["eos_token"], "mask": named["mask_token"]}
    return TextTokenizer(tok, {k: v if v is not None and tok.token_to_id(v) is not None else None
                               for k, v in roles.items()})


def hf_labels(hf: dict[str, Any]) -> list[str]:
    id2label = hf.get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


ENCODER_HEADS = (("ForMaskedLM", "mlm"), ("ForSequenceClassification", "classify"),
                 ("ForTokenClassification", "tag"), ("ForQuestionAnswering", "span"), ("ForPreTraining", "rtd"))


def encoder_head(hf: dict[str, Any], theirs: dict[str, torch.Tensor], base: str) -> str | None:
    """Which head an encoder checkpoint carries: from its ``architectures``, else from its weights' names."""
    architecture = (hf.get("architectures") or [""])[0]
    for suffix, kind in ENCODER_HEADS:
        if architecture.endswith(suffix):
            return kind
    if "cls.predictions.bias" in theirs or "lm_head.bias" in theirs:
        return "mlm"
    if "qa_outputs.weight" in theirs:
        return "span"
    if "discriminator_predictions.dense.weight" in theirs:
        return "rtd"
    pooled = "classifier.weight" in theirs and base + "pooler.dense.weight" in theirs
    if "classifier.out_proj.weight" in theirs or pooled:
        return "classify"
    return "tag" if "classifier.weight" in theirs else None


def load_hf_dir(path: str | Path, *, heads: bool = True) -> tuple[Model, TextTokenizer, dict[str, Any]]:
    """A transformers checkpoint as an lmcraft model (with the heads its weights hold, when ``heads``)."""
    path = Path(path)
    hf = read_hf_config(path)
    family = hf["model_type"]
    cfg = to_transformer_config(hf)
    theirs = read_hf_weights(path)
    base = backbone_prefix(family, theirs)
    weights = path / "model.safetensors"
    try:
        state = apply_rules(backbone_rules(family, cfg), theirs, base)
    except (ValueError, RuntimeError) as e:  # a tensor missing, or of a size config.json does not give
        raise load_error(weights, e) from None
    check_weight_shapes(weights, {k: tuple(v.shape) for k, v in state.items()}, cfg.to_dict())
    specs: dict[str, dict[str, object]] = {}
    if heads:
        kind = encoder_head(hf, theirs, base) if family in ENCODERS else None
        if kind is not None and family == "electra" and kind != "rtd":
            raise ValueError(f"{path}: of ELECTRA checkpoints lmcraft reads the encoder and the discriminator's "
                             f"head (ElectraModel, ElectraForPreTraining), not a {kind} head")
        if kind is not None:
            labels = hf_labels(hf)
            specs[kind] = {"mlm": {"kind": "mlm"}, "span": {"kind": "span"}, "rtd": {"kind": "rtd"},
                           "classify": {"kind": "classify", "n_labels": len(labels), "labels": labels,
                                        "pooling": "pooler"},
                           "tag": {"kind": "tag", "n_labels": len(labels), "labels": labels}}[kind]
            try:
                state.update(apply_rules(head_rules(family, kind, base), theirs))
            except (ValueError, RuntimeError) as e:
                raise load_error(weights, e) from None
        if family == "gpt2" or (family in ("llama", "qwen2") and hf.get("tie_word_embeddings", False)):
            specs["lm"] = {"kind": "lm", "tied": True}
        elif family in ("llama", "qwen2") and "lm_head.weight" in theirs:
            specs["lm"] = {"kind": "lm", "tied": False}
            state.update(apply_rules(head_rules(family, "lm_untied", base), theirs))
    model = Model(cfg, specs)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise load_error(weights, e) from None
    missing = [k for k in missing if not k.endswith(("position_table", "inv_freq"))]
    if missing or unexpected:
        raise ValueError(f"{path}: conversion left {missing[:5]} unset and {unexpected[:5]} unused")
    model.eval()
    config = {"architecture": cfg.to_dict(), "heads": specs, "source": {"format": "huggingface",
                                                                        "model_type": family, "path": str(path)}}
    return model, hf_tokenizer(path, hf), config


def pretrained_pooler(path: str | Path) -> dict[str, torch.Tensor] | None:
    """BERT's pretrained pooler (dense + tanh over [CLS]) from a transformers directory, if it has one; a
    classifier with ``pooling: pooler`` starts from it."""
    path = Path(path)
    if not is_hf_dir(path):
        return None
    hf = read_hf_config(path)
    if hf["model_type"] != "bert":
        return None
    theirs = read_hf_weights(path)
    base = backbone_prefix("bert", theirs)
    if base + "pooler.dense.weight" not in theirs:
        return None
    return {"weight": theirs[base + "pooler.dense.weight"], "bias": theirs[base + "pooler.dense.bias"]}
